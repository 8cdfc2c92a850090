"""AASIST_Concat: the AASIST utterance embedding h and the emotion input e, concatenated and
classified by an MLP head.

The late-fusion baseline of the emotion-aware countermeasures: the emotion view only enters at
the decision, as the emotion branch of AMSDF (Wu et al., IEEE TIFS 2024) does at its fusion stage.

``"residual": true`` (default): logits = AASIST's own output layer on h, plus the head on [h, e]
whose last layer starts at zero -- so the model starts exactly as AASIST (with ``aasist_path``:
the trained countermeasure) and the head learns a correction, instead of discarding AASIST's
trained output layer for a random one. ``false``: the head alone on [h / |h|, e] (the earlier
design, kept for comparison).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emospoof.core.config import ConfigError, str_to_bool
from models.emotion.conditioned import EMOTION_KEYS, EmotionConditionedModel, validate_emotion_config

CONFIG_KEYS = EMOTION_KEYS | {"head_hidden", "head_dropout", "residual"}


def validate_model_config(model_config: dict) -> None:
    validate_emotion_config(model_config)
    str_to_bool(model_config.get("residual", True), "model_config.residual")
    if not isinstance(model_config.get("head_hidden", 128), int) or model_config.get("head_hidden", 128) < 1:
        raise ConfigError(f"model_config.head_hidden: expected a positive integer, got {model_config['head_hidden']!r}")
    dropout = model_config.get("head_dropout", 0.3)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model_config.head_dropout: expected a number in [0, 1), got {dropout!r}")


class Model(EmotionConditionedModel):
    """``forward`` returns ``(concatenated embedding, logits)``; logit index 1 is bona fide."""

    emotion_parts = ("head",)

    def __init__(self, d_args: dict) -> None:
        validate_model_config(d_args)
        super().__init__(d_args)
        aasist_dim = 5 * d_args["gat_dims"][1]
        hidden = d_args.get("head_hidden", 128)
        self.residual = str_to_bool(d_args.get("residual", True), "model_config.residual")
        self.head = nn.Sequential(
            nn.Linear(aasist_dim + self.emotion_dim, hidden),
            nn.ReLU(),
            nn.Dropout(d_args.get("head_dropout", 0.3)),
            nn.Linear(hidden, 2),
        )
        if self.residual:  # the correction starts at zero: the model starts as AASIST
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, Freq_aug: bool = False,
                emotion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.aasist.graph_embedding(self.aasist.encode(x, Freq_aug))
        e = self.emotion(x, emotion)
        if not self.residual:
            hidden = torch.cat([F.normalize(h, dim=-1), e], dim=-1)
            return hidden, self.head(hidden)
        hidden = torch.cat([h, e], dim=-1)
        return hidden, self.aasist.classify(self.aasist.drop(h)) + self.head(hidden)

"""AASIST_Concat: AASIST utterance embedding and emotion embedding, both L2-normalised,
concatenated and classified by an MLP head.

The late-fusion baseline of the emotion-aware countermeasures: the emotion view only enters at
the decision, as the emotion branch of AMSDF (Wu et al., IEEE TIFS 2024) does at its fusion stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emospoof.core.config import ConfigError
from models.emotion.conditioned import EMOTION_KEYS, EmotionConditionedModel, validate_emotion_config

CONFIG_KEYS = EMOTION_KEYS | {"head_hidden", "head_dropout"}


def validate_model_config(model_config: dict) -> None:
    validate_emotion_config(model_config)
    if not isinstance(model_config.get("head_hidden", 128), int) or model_config.get("head_hidden", 128) < 1:
        raise ConfigError(f"model_config.head_hidden: expected a positive integer, got {model_config['head_hidden']!r}")
    dropout = model_config.get("head_dropout", 0.3)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model_config.head_dropout: expected a number in [0, 1), got {dropout!r}")


class Model(EmotionConditionedModel):
    """``forward`` returns ``(concatenated embedding, logits)``; logit index 1 is bona fide."""

    def __init__(self, d_args: dict) -> None:
        validate_model_config(d_args)
        super().__init__(d_args)
        aasist_dim = 5 * d_args["gat_dims"][1]
        hidden = d_args.get("head_hidden", 128)
        self.head = nn.Sequential(
            nn.Linear(aasist_dim + self.ser.embedding_dim, hidden),
            nn.ReLU(),
            nn.Dropout(d_args.get("head_dropout", 0.3)),
            nn.Linear(hidden, 2),
        )

    def forward(self, x: torch.Tensor, Freq_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        spoof_view = F.normalize(self.aasist.graph_embedding(self.aasist.encode(x, Freq_aug)), dim=-1)
        hidden = torch.cat([spoof_view, self.emotion(x)], dim=-1)
        return hidden, self.head(hidden)

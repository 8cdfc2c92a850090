"""AASIST_EmoMoE: emotion-gated experts. K expert heads read the AASIST utterance embedding and are
mixed by the SER's emotion posterior, a soft gate: logits = sum_k p_k(x) * head_k(h(x)).

After the gated ensemble of the EmoSpoof-TTS paper (Interspeech 2025, arXiv 2505.23962), which
picks among per-emotion detectors with an emotion recogniser; here the detectors share AASIST and
differ in their heads, and the recogniser's probabilities weight them instead of choosing one, so
an utterance the SER is unsure of is judged by a blend. ``experts``: ``"head"`` (K linear heads) or
``"film"`` (K FiLM parameter sets on the embedding, Perez et al., AAAI 2018, mixed the same way,
before AASIST's own output layer). Every expert starts as AASIST's output layer (or as the
identity modulation), so at initialisation the model equals AASIST whatever the gate says; the
experts grow apart only as training sends each one the utterances its emotion weights.

The SER must have an emotion classifier (``SERBranch.posterior``): an HF audio-classification
checkpoint with ``"layer": "penultimate"``, an ACRNN trained by ``train_ser.py``, or the eGeMAPS
statistics with their linear probe. K is its number of classes. ``emotion_ablation`` applies to
the gate: ``zero`` mixes the experts uniformly, ``mean`` by the training-mean posterior, ``shuffle``
by the mean posterior of another emotion class (``models/emotion/conditioned.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from emospoof.core.config import ConfigError
from models.emotion.conditioned import EMOTION_KEYS, EmotionConditionedModel, validate_emotion_config

CONFIG_KEYS = EMOTION_KEYS | {"experts"}
EXPERT_KINDS = ("head", "film")


def validate_model_config(model_config: dict) -> None:
    validate_emotion_config(model_config)
    if model_config.get("emotion_features", "posterior") != "posterior":
        raise ConfigError("model_config.emotion_features: AASIST_EmoMoE gates its experts by the emotion posterior; "
                          "leave it out or set it to 'posterior'")
    if "emotion_norm" in model_config:
        raise ConfigError("model_config.emotion_norm: AASIST_EmoMoE's gate is the emotion posterior itself, never "
                          "normalised; leave the key out")
    if model_config.get("experts", "head") not in EXPERT_KINDS:
        raise ConfigError(f"model_config.experts: expected one of {', '.join(EXPERT_KINDS)}, "
                          f"got {model_config['experts']!r}")


class Model(EmotionConditionedModel):
    """``forward`` returns ``(embedding, logits)``; logit index 1 is bona fide."""

    def __init__(self, d_args: dict) -> None:
        validate_model_config(d_args)
        super().__init__({**d_args, "emotion_features": "posterior"})
        self.kind = d_args.get("experts", "head")
        n_experts, dim = len(self.ser.labels), self.aasist.out_layer.in_features
        if self.kind == "head":
            self.heads = nn.Parameter(self.aasist.out_layer.weight.detach().repeat(n_experts, 1, 1))
            self.head_bias = nn.Parameter(self.aasist.out_layer.bias.detach().repeat(n_experts, 1))
            self.emotion_parts = ("heads", "head_bias")
        else:
            self.scale = nn.Parameter(torch.zeros(n_experts, dim))  # gamma - 1 of each expert
            self.shift = nn.Parameter(torch.zeros(n_experts, dim))
            self.emotion_parts = ("scale", "shift")

    def mix(self, hidden: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Logits of embeddings ``hidden`` (batch, dim) under ``gate`` (batch, K), rows summing to 1."""
        if self.kind == "head":
            per_expert = torch.einsum("bd,kcd->bkc", hidden, self.heads) + self.head_bias
            return torch.einsum("bk,bkc->bc", gate, per_expert)
        modulated = (1 + gate @ self.scale) * hidden + gate @ self.shift
        return self.aasist.classify(modulated)

    def forward(self, x: torch.Tensor, Freq_aug: bool = False,
                emotion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        gate = self.emotion_posterior(x, emotion).to(x.dtype)
        hidden = self.aasist.drop(self.aasist.graph_embedding(self.aasist.encode(x, Freq_aug)))
        return hidden, self.mix(hidden, gate)

"""AASIST_FiLM: the emotion embedding modulates AASIST features by FiLM.

FiLM (Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018): a
per-channel scale and shift, gamma(e) * h + beta(e), predicted from the conditioning input e.
``film_at`` chooses the sites: ``"embedding"`` (the AASIST utterance embedding before the output
layer, the published design), ``"block0"``..``"block5"`` (after that residual-encoder block, per
channel of the feature map) and ``"graph"`` (the pooled temporal and spectral graph nodes before
the HS-GAL branches, per node feature). The generators start at zero, so at initialisation every
site is the identity and the model equals AASIST (with ``aasist_path``: the given weights).
"""
from __future__ import annotations

import torch
from torch import nn

from emospoof.core.config import ConfigError
from models.emotion.conditioned import EMOTION_KEYS, EmotionConditionedModel, validate_emotion_config

CONFIG_KEYS = EMOTION_KEYS | {"film_at"}
N_BLOCKS = 6
SITES = ("embedding", "graph", *(f"block{i}" for i in range(N_BLOCKS)))


def validate_model_config(model_config: dict) -> None:
    validate_emotion_config(model_config)
    sites = model_config.get("film_at", ["embedding"])
    valid = isinstance(sites, list) and sites and all(site in SITES for site in sites)
    if not valid or len(set(sites)) != len(sites):
        raise ConfigError(f"model_config.film_at: expected a non-empty list of distinct sites from "
                          f"{', '.join(SITES)}, got {sites!r}")


class FiLM(nn.Module):
    """gamma(e) * h + beta(e) along ``channel_dim`` of h, with gamma = 1 + a linear map of e and
    beta a linear map of e; both maps start at zero (identity modulation)."""

    def __init__(self, condition_dim: int, channels: int, channel_dim: int) -> None:
        super().__init__()
        self.generator = nn.Linear(condition_dim, 2 * channels)
        nn.init.zeros_(self.generator.weight)
        nn.init.zeros_(self.generator.bias)
        self.channel_dim = channel_dim

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        delta_gamma, beta = self.generator(e).chunk(2, dim=-1)
        shape = [h.size(0)] + [1] * (h.dim() - 1)
        shape[self.channel_dim] = h.size(self.channel_dim)
        return (1 + delta_gamma.view(shape)) * h + beta.view(shape)


class Model(EmotionConditionedModel):
    """``forward`` returns ``(modulated embedding, logits)``; logit index 1 is bona fide, from
    AASIST's own output layer."""

    emotion_parts = ("film",)

    def __init__(self, d_args: dict) -> None:
        validate_model_config(d_args)
        super().__init__(d_args)
        filts, gat_dims = d_args["filts"], d_args["gat_dims"]
        block_channels = [filts[1][1], filts[2][1], filts[3][1], filts[4][1], filts[4][1], filts[4][1]]
        e_dim = self.emotion_dim
        self.film = nn.ModuleDict()
        for site in d_args.get("film_at", ["embedding"]):
            if site == "embedding":
                self.film[site] = FiLM(e_dim, 5 * gat_dims[1], channel_dim=1)
            elif site == "graph":
                self.film["graph_t"] = FiLM(e_dim, gat_dims[0], channel_dim=2)
                self.film["graph_s"] = FiLM(e_dim, gat_dims[0], channel_dim=2)
            else:
                self.film[site] = FiLM(e_dim, block_channels[int(site[len("block"):])], channel_dim=1)

    def modulated_embedding(self, x: torch.Tensor, e: torch.Tensor, freq_aug: bool) -> torch.Tensor:
        """AASIST's utterance embedding (before dropout) with FiLM applied at every chosen site."""
        def after_block(index: int, features: torch.Tensor) -> torch.Tensor:
            site = f"block{index}"
            return self.film[site](features, e) if site in self.film else features

        def on_nodes(nodes_t: torch.Tensor, nodes_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.film["graph_t"](nodes_t, e), self.film["graph_s"](nodes_s, e)

        has_blocks = any(site.startswith("block") for site in self.film)
        encoded = self.aasist.encode(x, freq_aug, after_block if has_blocks else None)
        h = self.aasist.graph_embedding(encoded, on_nodes if "graph_t" in self.film else None)
        return self.film["embedding"](h, e) if "embedding" in self.film else h

    def forward(self, x: torch.Tensor, Freq_aug: bool = False,
                emotion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.aasist.drop(self.modulated_embedding(x, self.emotion(x, emotion), Freq_aug))
        return hidden, self.aasist.classify(hidden)

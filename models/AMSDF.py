"""AMSDF: Wu et al., "Audio Multi-View Spoofing Detection Framework Based on Audio-Text-Emotion
Correlations", IEEE TIFS 2024 (doi:10.1109/TIFS.2024.3431888).

One waveform is seen three ways, each view becoming a set of graph nodes:

* audio: AASIST's sinc front end and residual encoder, trained from scratch; the maximum of |x|
  over frequency gives one node per encoder frame (AASIST's temporal nodes);
* text: frame features of a self-supervised speech model (:class:`models.ssl.SSLEncoder`; XLS-R
  in the paper), projected linearly and max-pooled over windows of frames and feature pairs;
* emotion: frame-level output of the SER branch (:meth:`models.ser.SERBranch.frames`: the
  attention-weighted BiLSTM steps of AMSDF's ACRNN, or a Hugging Face model's hidden states),
  max-pooled the same way.

Each view gets graph attention and graph pooling of its own (intra-view graph attention module);
the view pairs audio-emotion, audio-text and emotion-text are fused by two heterogeneous graph
attention layers around a learned stack node, and the audio-emotion and emotion-text fusions are
fused again (the three-way fusion); the readout pools view nodes, fused nodes and stack nodes as
three groups; a two-layer head gives the two logits (index 1 = bona fide).

Where the paper leaves the computation open, this follows the authors' public code; where that
code is tied to 4-second inputs it is generalised (README, "AMSDF"):

* the two node sets of a fusion are summed node by node, so every view keeps the same number of
  nodes after its pooling: ``view_nodes`` (25, the public code's count at 4 s: 29 audio nodes with
  ratio 0.88, 50 text and 50 emotion nodes with ratio 0.5), fewer if a view has fewer nodes;
* the text and emotion nodes are batch-normalised per feature, not per frame position as the
  public code does (which fixes the number of frames to 50);
* the three-way fusion combines the audio-emotion and emotion-text fusions, as the public code does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from config import ConfigError
from models.blocks import (
    GraphAttentionLayer,
    GraphPool,
    HtrgGraphAttentionLayer,
    SincConv,
    build_encoder,
    hs_gal_branch,
    sinc_front_end,
)
from models.ser import SERBranch, validate_ser_config
from models.ssl import SSL_CONFIG_KEYS, ssl_encoder_from_config, validate_ssl_config

CONFIG_KEYS = {
    "architecture", "nb_samp", "first_conv", "filts", "gat_dim", "temperatures", "view_nodes",
    "readout_pool_ratios", "text_dim", "text_pool", "emotion_pool", "ser_config",
} | SSL_CONFIG_KEYS
DEFAULTS = {
    "gat_dim": 64, "temperatures": [2.0, 100.0], "view_nodes": 25, "readout_pool_ratios": [0.5, 0.5],
    "text_dim": 128, "text_pool": [4, 2], "emotion_pool": [3, 4],
}
FREEZE_SSL_DEFAULT = True
VIEW_DROPOUT = 0.2  # on fused and stack nodes (AASIST's drop_way)
HEAD_DROPOUT = 0.5
POOL_DROPOUT = 0.3


def _setting(model_config: dict, key: str):
    return model_config.get(key, DEFAULTS[key])


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_ints(value: object, count: int, key: str) -> None:
    if not (isinstance(value, (list, tuple)) and len(value) == count and all(map(_is_positive_int, value))):
        raise ConfigError(f"model_config.{key}: expected {count} positive integers, got {value!r}")


def validate_model_config(model_config: dict) -> None:
    """Checks run by ``utils.validate_config`` before anything is loaded."""
    validate_ssl_config(model_config, FREEZE_SSL_DEFAULT)
    if "ser_config" not in model_config:
        raise ConfigError("config is missing the required key 'model_config.ser_config'")
    validate_ser_config(model_config["ser_config"])
    if model_config["ser_config"].get("layer") == "penultimate":
        raise ConfigError("model_config.ser_config.layer: AMSDF needs frame-level SER features; "
                          "'penultimate' is one vector per utterance (use a hidden-state index)")
    for key in ("text_pool", "emotion_pool"):
        _positive_ints(_setting(model_config, key), 2, key)
    for key in ("gat_dim", "view_nodes", "text_dim"):
        if not _is_positive_int(_setting(model_config, key)):
            raise ConfigError(f"model_config.{key}: expected a positive integer, got {model_config[key]!r}")
    temperatures = _setting(model_config, "temperatures")
    if not (isinstance(temperatures, list) and len(temperatures) == 2
            and all(isinstance(t, (int, float)) and t > 0 for t in temperatures)):
        raise ConfigError(f"model_config.temperatures: expected [intra-view, fusion] positive numbers, "
                          f"got {temperatures!r}")
    ratios = _setting(model_config, "readout_pool_ratios")
    if not (isinstance(ratios, list) and len(ratios) == 2 and all(isinstance(r, (int, float)) and 0 < r <= 1 for r in ratios)):
        raise ConfigError(f"model_config.readout_pool_ratios: expected two numbers in (0, 1], got {ratios!r}")


class AudioView(nn.Module):
    """Waveform -> audio-view nodes (batch, frames, channels): AASIST's sinc front end and residual
    encoder, then the maximum of |x| over frequency."""

    def __init__(self, first_conv: int, filts: list) -> None:
        super().__init__()
        self.conv_time = SincConv(filts[0], first_conv)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = build_encoder(filts)
        self.out_dim = filts[-1][-1]

    def forward(self, x: torch.Tensor, freq_aug: bool = False) -> torch.Tensor:
        e = self.encoder(sinc_front_end(self.conv_time, self.first_bn, x, freq_aug))
        return e.abs().max(dim=2).values.transpose(1, 2)


class FrameNodes(nn.Module):
    """Frame features (batch, frames, dim) -> nodes: optional linear projection, max-pooling over
    windows of ``pool`` = (frames, features), BatchNorm per feature, SELU (AMSDF's text and
    emotion view heads)."""

    def __init__(self, in_dim: int, pool: list[int], projected_dim: int | None = None, key: str = "") -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, projected_dim) if projected_dim else nn.Identity()
        self.pool = tuple(pool)
        self.out_dim = (projected_dim or in_dim) // self.pool[1]
        if self.out_dim < 1:
            raise ConfigError(f"model_config.{key}: a feature pool of {self.pool[1]} leaves none of the "
                              f"{projected_dim or in_dim} features")
        self.bn = nn.BatchNorm1d(self.out_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.proj(frames).unsqueeze(1), self.pool).squeeze(1)
        if x.size(1) == 0:
            raise ValueError(f"{frames.size(1)} frames are fewer than the frame pool of {self.pool[0]}")
        return F.selu(self.bn(x.transpose(1, 2)).transpose(1, 2))


class ViewFusion(nn.Module):
    """Heterogeneous graph fusion of two node sets of equal size: two HS-GAL layers (the second's
    output added back) around a learned stack node; returns the node-wise sum of the two updated
    sets and the stack node."""

    def __init__(self, dim: int, temperature: float) -> None:
        super().__init__()
        self.first = HtrgGraphAttentionLayer(dim, dim, temperature=temperature)
        self.second = HtrgGraphAttentionLayer(dim, dim, temperature=temperature)
        self.stack_node = nn.Parameter(torch.randn(1, 1, dim))
        self.drop = nn.Dropout(VIEW_DROPOUT)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stack = self.stack_node.expand(x1.size(0), -1, -1)
        x1, x2, stack = hs_gal_branch(self.first, self.second, nn.Identity(), nn.Identity(), x1, x2, stack)
        return self.drop(x1) + self.drop(x2), self.drop(stack)


class GroupReadout(nn.Module):
    """Group-based readout: every node set of the group goes through the same two graph pools; the
    pooled sets are joined and summarised by max |x| and mean (2 * dim values)."""

    def __init__(self, dim: int, ratios: list[float]) -> None:
        super().__init__()
        self.pool1 = GraphPool(ratios[0], dim, POOL_DROPOUT)
        self.pool2 = GraphPool(ratios[1], dim, POOL_DROPOUT)

    def forward(self, node_sets: list[torch.Tensor]) -> torch.Tensor:
        nodes = torch.cat([self.pool2(self.pool1(n)) for n in node_sets], dim=1)
        return torch.cat([nodes.abs().max(dim=1).values, nodes.mean(dim=1)], dim=1)


class Model(nn.Module):
    """AMSDF; ``forward`` returns ``(readout, logits)``, logit index 1 = bona fide."""

    def __init__(self, d_args: dict) -> None:
        super().__init__()
        validate_model_config(d_args)
        dim = _setting(d_args, "gat_dim")
        intra_temperature, fusion_temperature = _setting(d_args, "temperatures")
        self.view_nodes = _setting(d_args, "view_nodes")

        self.audio_view = AudioView(d_args["first_conv"], d_args["filts"])
        self.ssl = ssl_encoder_from_config(d_args, FREEZE_SSL_DEFAULT)
        self.text_nodes = FrameNodes(self.ssl.output_dim, _setting(d_args, "text_pool"), _setting(d_args, "text_dim"),
                                     key="text_pool")
        self.ser = SERBranch(d_args["ser_config"])
        self.emotion_nodes = FrameNodes(self.ser.embedding_dim, _setting(d_args, "emotion_pool"), key="emotion_pool")

        view_dims = {"audio": self.audio_view.out_dim, "text": self.text_nodes.out_dim,
                     "emotion": self.emotion_nodes.out_dim}
        self.view_gat = nn.ModuleDict({
            view: GraphAttentionLayer(in_dim, dim, temperature=intra_temperature) for view, in_dim in view_dims.items()
        })
        self.view_pool = nn.ModuleDict({view: GraphPool(1.0, dim, POOL_DROPOUT) for view in view_dims})
        self.fusion = nn.ModuleDict({
            pair: ViewFusion(dim, fusion_temperature) for pair in ("audio_emotion", "audio_text", "emotion_text", "all")
        })
        ratios = _setting(d_args, "readout_pool_ratios")
        self.readout = nn.ModuleDict({group: GroupReadout(dim, ratios) for group in ("views", "fused", "stack")})
        self.drop = nn.Dropout(HEAD_DROPOUT)
        self.out_layer = nn.Linear(6 * dim, dim)
        self.out_layer2 = nn.Linear(dim, 2)

    def views(self, x: torch.Tensor, freq_aug: bool = False) -> dict[str, torch.Tensor]:
        """The three views' node sets after intra-view graph attention and pooling, each pooled to
        the same number of nodes (``view_nodes``, or fewer if a view has fewer)."""
        nodes = {"audio": self.audio_view(x, freq_aug), "text": self.text_nodes(self.ssl(x)),
                 "emotion": self.emotion_nodes(self.ser.frames(x))}
        keep = min(self.view_nodes, *(n.size(1) for n in nodes.values()))
        return {view: self.view_pool[view](self.view_gat[view](n), keep=keep) for view, n in nodes.items()}

    def forward(self, x: torch.Tensor, Freq_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.views(x, Freq_aug)
        audio_emotion, stack_ae = self.fusion["audio_emotion"](v["audio"], v["emotion"])
        audio_text, stack_at = self.fusion["audio_text"](v["audio"], v["text"])
        emotion_text, stack_et = self.fusion["emotion_text"](v["emotion"], v["text"])
        all_views, stack_all = self.fusion["all"](audio_emotion, emotion_text)
        hidden = torch.cat([
            self.readout["views"]([v["audio"], v["emotion"], v["text"]]),
            self.readout["fused"]([audio_emotion, audio_text, emotion_text, all_views]),
            self.readout["stack"]([stack_ae, stack_at, stack_et, stack_all]),
        ], dim=1)
        hidden = self.drop(hidden)
        return hidden, self.out_layer2(self.out_layer(hidden))

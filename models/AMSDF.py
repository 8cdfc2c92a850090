"""AMSDF: Wu et al., "Audio Multi-View Spoofing Detection Framework Based on Audio-Text-Emotion
Correlations", IEEE TIFS 2024 (doi:10.1109/TIFS.2024.3431888), computed as the authors' public code
(``ItzJuny/AMSDF``: ``models/AMSDF.py``, ``models/ACRNN.py``, ``models/AASIST.py``, ``data_io.py``;
read, not copied) computes it, with its module names, so its M1-M3 checkpoints load strictly after
:meth:`Model.convert_state_dict`.

One waveform (4 s: 64 600 samples, shorter inputs tiled) is seen three ways, each view a node set:

* audio (``audio_view_extract``): AASIST's sinc front end (70 filters) and its six residual blocks,
  trained from scratch; the maximum of |x| over frequency gives one node per encoder frame (29 x 64);
* text (``text_view_extract``): XLS-R frame features (:class:`models.encoders.ssl.SSLEncoder`; the raw waveform
  in, the encoder output out), linear 1024 -> 128, max-pool (4 frames, 2 features), BatchNorm, SELU
  (50 x 64);
* emotion (``emo_view_extract``): the ACRNN's 150 attention-weighted BiLSTM steps
  (:meth:`models.emotion.branch.SERBranch.frames`; its log-Mel input, which the authors' loader computes, is
  computed here from the same tiled 64 600 samples), max-pool (3, 4), BatchNorm, SELU (50 x 64).

Each view gets graph attention (temperature 2) and graph pooling (ratios 0.88 audio, 0.5 text,
0.5 emotion: 25 nodes each); HGFM fuses audio-emotion, audio-text and emotion-text (two
heterogeneous layers around a stack node, the second added back, dropout 0.2, the two node sets
summed node by node) and fuses the audio-emotion and emotion-text results again; the group
readout (``GRS``) pools view, fused and stack nodes group by group (two graph pools of ratio 0.5),
max |x| and mean: 384 values -> dropout 0.5 -> linear 64 -> linear 2 (logit 1 = bona fide here;
the authors' checkpoints use 0 = real, and the conversion swaps their output rows).

``view_norm`` chooses the text/emotion BatchNorm. ``"position"`` (default) is the authors': one
statistic per node position, which ties the model to one input length (``nb_samp`` fixes the
number of positions) and to the ACRNN emotion view. ``"feature"`` is emospoof's earlier variant
for any length: BatchNorm per feature, and every view pooled to the same ``view_nodes`` (or to the
smallest view's count), so short devkit crops work; it cannot load the authors' weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emospoof.core.config import ConfigError
from models.emotion.acrnn import ACRNN_FRAMES
from models.emotion.branch import SERBranch, validate_ser_config
from models.encoders.ssl import (SSL_CONFIG_KEYS, fairseq_state_to_transformers, ssl_encoder_from_config,
                                 validate_ssl_config)
from models.layers.blocks import (GraphAttentionLayer, GraphPool, HtrgGraphAttentionLayer, SincConv, build_encoder,
                                  hs_gal_branch, sinc_front_end)

CONFIG_KEYS = {
    "architecture", "nb_samp", "first_conv", "filts", "gat_dim", "temperatures", "view_norm", "view_nodes",
    "view_pool_ratios", "readout_pool_ratios", "text_dim", "text_pool", "emotion_pool", "ser_config",
} | SSL_CONFIG_KEYS
DEFAULTS = {
    "gat_dim": 64, "temperatures": [2.0, 100.0], "view_norm": "position", "view_nodes": 25,
    "view_pool_ratios": [0.88, 0.5, 0.5], "readout_pool_ratios": [0.5, 0.5], "text_dim": 128,
    "text_pool": [4, 2], "emotion_pool": [3, 4],
}
VIEW_NORMS = ("position", "feature")
FREEZE_SSL_DEFAULT = True
VIEW_DROPOUT = 0.2  # on fused and stack nodes (AASIST's drop_way)
HEAD_DROPOUT = 0.5
POOL_DROPOUT = 0.3
# Where the authors' checkpoints keep the XLS-R (fairseq names) and the ACRNN.
AUTHORS_TEXT = "text_view_extract.model."
AUTHORS_EMOTION = "emo_view_extract.model."
OWN_TEXT = "text_view_extract.model.model."
OWN_EMOTION = "emo_view_extract.model.encoder.net."


def _setting(model_config: dict, key: str):
    return model_config.get(key, DEFAULTS[key])


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _ratios(value: object, count: int, key: str) -> None:
    if not (isinstance(value, list) and len(value) == count
            and all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 1 for r in value)):
        raise ConfigError(f"model_config.{key}: expected {count} numbers in (0, 1], got {value!r}")


def validate_model_config(model_config: dict) -> None:
    """Checks run by ``emospoof.cm.config.validate_config`` before anything is loaded."""
    validate_ssl_config(model_config, FREEZE_SSL_DEFAULT)
    if "ser_config" not in model_config:
        raise ConfigError("config is missing the required key 'model_config.ser_config'")
    validate_ser_config(model_config["ser_config"])
    if model_config["ser_config"].get("backend") == "egemaps":
        raise ConfigError("model_config.ser_config.backend: AMSDF needs frame-level SER features; 'egemaps' gives "
                          "one vector per utterance (use 'acrnn' or 'hf')")
    if model_config["ser_config"].get("layer") == "penultimate":
        raise ConfigError("model_config.ser_config.layer: AMSDF needs frame-level SER features; "
                          "'penultimate' is one vector per utterance (use a hidden-state index)")
    norm = _setting(model_config, "view_norm")
    if norm not in VIEW_NORMS:
        raise ConfigError(f"model_config.view_norm: expected one of {', '.join(VIEW_NORMS)}, got {norm!r}")
    if norm == "position" and "view_nodes" in model_config:
        raise ConfigError("model_config.view_nodes: only for view_norm 'feature' (the authors' model pools "
                          "each view by its own ratio, view_pool_ratios)")
    if norm == "feature" and "view_pool_ratios" in model_config:
        raise ConfigError("model_config.view_pool_ratios: only for view_norm 'position' "
                          "(view_norm 'feature' pools every view to view_nodes)")
    if norm == "position" and model_config["ser_config"]["backend"] != "acrnn":
        raise ConfigError("model_config.view_norm: 'position' needs the ACRNN emotion view (ser_config.backend "
                          "'acrnn'), whose step count is fixed; use 'feature' with a Hugging Face SER model")
    for key in ("text_pool", "emotion_pool"):
        value = _setting(model_config, key)
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_positive_int, value))):
            raise ConfigError(f"model_config.{key}: expected 2 positive integers, got {value!r}")
    for key in ("gat_dim", "view_nodes", "text_dim"):
        if not _is_positive_int(_setting(model_config, key)):
            raise ConfigError(f"model_config.{key}: expected a positive integer, got {model_config[key]!r}")
    temperatures = _setting(model_config, "temperatures")
    if not (isinstance(temperatures, list) and len(temperatures) == 2
            and all(isinstance(t, (int, float)) and t > 0 for t in temperatures)):
        raise ConfigError(f"model_config.temperatures: expected [intra-view, fusion] positive numbers, "
                          f"got {temperatures!r}")
    _ratios(_setting(model_config, "readout_pool_ratios"), 2, "readout_pool_ratios")
    _ratios(_setting(model_config, "view_pool_ratios"), 3, "view_pool_ratios")


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
    """A view of frame features (the text view's SSL model or the emotion view's SER branch,
    ``model``) -> nodes: optional linear projection, max-pooling over windows of ``pool`` =
    (frames, features), BatchNorm, SELU. BatchNorm runs over ``positions`` node positions (the
    authors') or, when that is None, over the features."""

    def __init__(self, model: nn.Module, in_dim: int, pool: list[int], projected_dim: int | None,
                 positions: int | None, key: str) -> None:
        super().__init__()
        self.model = model
        self.linear = nn.Linear(in_dim, projected_dim) if projected_dim else nn.Identity()
        self.pool = tuple(pool)
        self.out_dim = (projected_dim or in_dim) // self.pool[1]
        if self.out_dim < 1:
            raise ConfigError(f"model_config.{key}: a feature pool of {self.pool[1]} leaves none of the "
                              f"{projected_dim or in_dim} features")
        if positions is not None and positions < 1:
            raise ConfigError(f"model_config.{key}: a frame pool of {self.pool[0]} leaves no node at nb_samp")
        self.per_position = positions is not None
        self.bn = nn.BatchNorm1d(positions if self.per_position else self.out_dim)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.frames(x) if isinstance(self.model, SERBranch) else self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.frames(x)
        nodes = F.max_pool2d(self.linear(frames).unsqueeze(1), self.pool).squeeze(1)
        if nodes.size(1) == 0:
            raise ValueError(f"{frames.size(1)} frames are fewer than the frame pool of {self.pool[0]}")
        if self.per_position:
            if nodes.size(1) != self.bn.num_features:
                raise ValueError(f"AMSDF (view_norm 'position') expects {self.bn.num_features} node positions, "
                                 f"got {nodes.size(1)}: the input must be nb_samp samples long")
            return F.selu(self.bn(nodes))
        return F.selu(self.bn(nodes.transpose(1, 2)).transpose(1, 2))


class HGFM(nn.Module):
    """Heterogeneous graph fusion of two node sets of equal size: two HS-GAL layers (the second's
    output added back) around a learned stack node; returns the node-wise sum of the two updated
    sets and the stack node."""

    def __init__(self, dim: int, temperature: float) -> None:
        super().__init__()
        self.HtrgGAT_layer1 = HtrgGraphAttentionLayer(dim, dim, temperature=temperature)
        self.HtrgGAT_layer2 = HtrgGraphAttentionLayer(dim, dim, temperature=temperature)
        self.stack_node = nn.Parameter(torch.randn(1, 1, dim))
        self.drop_way = nn.Dropout(VIEW_DROPOUT)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stack = self.stack_node.expand(x1.size(0), -1, -1)
        x1, x2, stack = hs_gal_branch(self.HtrgGAT_layer1, self.HtrgGAT_layer2, nn.Identity(), nn.Identity(),
                                      x1, x2, stack)
        return self.drop_way(x1) + self.drop_way(x2), self.drop_way(stack)


class GRS(nn.Module):
    """Group-based readout: every node set of the group goes through the same two graph pools; the
    pooled sets are joined and summarised by max |x| and mean (2 * dim values)."""

    def __init__(self, dim: int, ratios: list[float]) -> None:
        super().__init__()
        self.pool1 = GraphPool(ratios[0], dim, POOL_DROPOUT)
        self.pool2 = GraphPool(ratios[1], dim, POOL_DROPOUT)

    def forward(self, node_sets: list[torch.Tensor]) -> torch.Tensor:
        nodes = torch.cat([self.pool2(self.pool1(n)) for n in node_sets], dim=1)
        return torch.cat([nodes.abs().max(dim=1).values, nodes.mean(dim=1)], dim=1)


VIEWS = ("audio", "text", "emo")


class Model(nn.Module):
    """AMSDF; ``forward`` returns ``(readout, logits)``, logit index 1 = bona fide."""

    def __init__(self, d_args: dict) -> None:
        super().__init__()
        validate_model_config(d_args)
        dim = _setting(d_args, "gat_dim")
        intra_temperature, fusion_temperature = _setting(d_args, "temperatures")
        per_position = _setting(d_args, "view_norm") == "position"
        self.view_nodes = None if per_position else _setting(d_args, "view_nodes")

        self.audio_view_extract = AudioView(d_args["first_conv"], d_args["filts"])
        ssl = ssl_encoder_from_config(d_args, FREEZE_SSL_DEFAULT)
        text_pool, emotion_pool = _setting(d_args, "text_pool"), _setting(d_args, "emotion_pool")
        self.text_view_extract = FrameNodes(
            ssl, ssl.output_dim, text_pool, _setting(d_args, "text_dim"),
            ssl.frame_count(d_args["nb_samp"]) // text_pool[0] if per_position else None, "text_pool")
        ser = SERBranch(d_args["ser_config"])
        self.emo_view_extract = FrameNodes(
            ser, ser.embedding_dim, emotion_pool, None,
            ACRNN_FRAMES // 2 // emotion_pool[0] if per_position else None, "emotion_pool")

        in_dims = {"audio": self.audio_view_extract.out_dim, "text": self.text_view_extract.out_dim,
                   "emo": self.emo_view_extract.out_dim}
        ratios = dict(zip(VIEWS, _setting(d_args, "view_pool_ratios") if per_position else [1.0] * 3))
        for view in VIEWS:
            setattr(self, f"GAT_{view}", GraphAttentionLayer(in_dims[view], dim, temperature=intra_temperature))
            setattr(self, f"pool_{view}", GraphPool(ratios[view], dim, POOL_DROPOUT))
        for pair in ("AE", "AT", "ET", "AET"):
            setattr(self, f"Core_{pair}", HGFM(dim, fusion_temperature))
        readout_ratios = _setting(d_args, "readout_pool_ratios")
        self.GRS_group1, self.GRS_group2, self.GRS_group3 = (GRS(dim, readout_ratios) for _ in range(3))
        self.drop = nn.Dropout(HEAD_DROPOUT)
        self.out_layer = nn.Linear(6 * dim, dim)
        self.out_layer2 = nn.Linear(dim, 2)

    def views(self, x: torch.Tensor, freq_aug: bool = False) -> dict[str, torch.Tensor]:
        """The three views' node sets after intra-view graph attention and pooling."""
        nodes = {"audio": self.audio_view_extract(x, freq_aug), "text": self.text_view_extract(x),
                 "emo": self.emo_view_extract(x)}
        keep = None if self.view_nodes is None else min(self.view_nodes, *(n.size(1) for n in nodes.values()))
        return {view: getattr(self, f"pool_{view}")(getattr(self, f"GAT_{view}")(n), keep=keep)
                for view, n in nodes.items()}

    def forward(self, x: torch.Tensor, Freq_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.views(x, Freq_aug)
        audio_emotion, stack_ae = self.Core_AE(v["audio"], v["emo"])
        audio_text, stack_at = self.Core_AT(v["audio"], v["text"])
        emotion_text, stack_et = self.Core_ET(v["emo"], v["text"])
        all_views, stack_all = self.Core_AET(audio_emotion, emotion_text)
        hidden = torch.cat([
            self.GRS_group1([v["audio"], v["emo"], v["text"]]),
            self.GRS_group2([audio_emotion, audio_text, emotion_text, all_views]),
            self.GRS_group3([stack_ae, stack_at, stack_et, stack_all]),
        ], dim=1)
        hidden = self.drop(hidden)
        return hidden, self.out_layer2(self.out_layer(hidden))

    def convert_state_dict(self, state: dict) -> dict:
        """A checkpoint of the authors' code (M1-M3) -> this model's names; emospoof's own pass unchanged.

        * ``module.`` (nn.DataParallel) is removed;
        * ``text_view_extract.model.<fairseq XLS-R name>`` -> ``text_view_extract.model.model.<transformers
          name>`` (``models.ssl``'s fairseq mapping; pre-training heads dropped);
        * ``emo_view_extract.model.<ACRNN name>`` -> ``emo_view_extract.model.encoder.net.<same>``, its
          emotion classifier (``fc1``, ``fc2``), unused by AMSDF, dropped;
        * ``out_layer2`` rows swapped: the authors trained with 0 = real, emospoof's logit 1 is bona fide.
        """
        state = {key.removeprefix("module."): value for key, value in state.items()}
        if AUTHORS_EMOTION + "conv1.weight" not in state:
            return state
        text = {key[len(AUTHORS_TEXT):]: value for key, value in state.items() if key.startswith(AUTHORS_TEXT)}
        text = fairseq_state_to_transformers(text, self.text_view_extract.model.output_dim)
        emotion = {key[len(AUTHORS_EMOTION):]: value for key, value in state.items()
                   if key.startswith(AUTHORS_EMOTION) and not key.startswith((AUTHORS_EMOTION + "fc1.",
                                                                               AUTHORS_EMOTION + "fc2."))}
        rest = {key: value for key, value in state.items() if not key.startswith((AUTHORS_TEXT, AUTHORS_EMOTION))}
        for key in ("out_layer2.weight", "out_layer2.bias"):
            if key in rest:
                rest[key] = rest[key].flip(0)
        return (rest | {OWN_TEXT + key: value for key, value in text.items()}
                | {OWN_EMOTION + key: value for key, value in emotion.items()})

"""Structurally pruned wav2vec 2.0 / HuBERT encoders in torchaudio's component layout, as DPHuBERT
publishes them (Peng et al., "DPHuBERT: Joint Distillation and Pruning of Self-Supervised Speech
Models", Interspeech 2023; code and ``DPHuBERT-sp0.75.pth``: github.com/pyf98/DPHuBERT).

Pruning leaves every layer its own size: the convolutional feature extractor keeps some channels
per layer, each transformer layer some attention heads (or none: no attention at all) and some
feed-forward units (or none). A stock transformers HuBERT has one size for all layers and cannot
hold such weights, and torchaudio is not a dependency here, so this module builds each part at the
size the checkpoint's own ``config`` gives (torchaudio's ``wav2vec2_model`` arguments) with
torchaudio's parameter names, and the checkpoint's ``state_dict`` loads strictly. Read, not copied:
torchaudio's ``models/wav2vec2/components.py`` in the form DPHuBERT's repository carries it.

The checkpoint file is ``{"state_dict": ..., "config": {...}}`` (DPHuBERT also stores its
distillation projections, which the encoder does not use). It is read with
``torch.load(weights_only=True)``. The model mimics what :class:`models.encoders.ssl.SSLEncoder` uses of a
transformers model: ``config.hidden_size``, ``config.num_hidden_layers``, ``config.layerdrop``,
``forward(input_values, output_hidden_states)`` returning ``last_hidden_state`` and
``hidden_states``, and ``gradient_checkpointing_enable()``. Hidden state 0 is torchaudio's first
``extract_features`` output (the feature projection, before the positional convolution); hidden
state i the output of transformer layer i.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from emospoof.core.checkpoint import load_state_strictly
from emospoof.core.config import ConfigError

# torchaudio wav2vec2_model arguments that must be in the checkpoint's config.
REQUIRED_CONFIG = (
    "extractor_mode", "extractor_conv_layer_config", "extractor_conv_bias", "encoder_embed_dim",
    "encoder_pos_conv_kernel", "encoder_pos_conv_groups", "encoder_num_layers", "encoder_use_attention",
    "encoder_use_feed_forward", "encoder_num_heads", "encoder_head_dim", "encoder_ff_interm_features",
    "encoder_layer_norm_first",
)
# Pruning-time switches: a finished (pruned) checkpoint has them all false.
PRUNING_SWITCHES = ("extractor_prune_conv_channels", "encoder_prune_attention_heads", "encoder_prune_attention_layer",
                    "encoder_prune_feed_forward_intermediate", "encoder_prune_feed_forward_layer")


class ConvLayer(nn.Module):
    """Convolution, optional normalisation (GroupNorm with one group per channel, or LayerNorm over
    channels), GELU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, bias: bool, norm: str | None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, bias=bias)
        if norm == "group":
            self.layer_norm = nn.GroupNorm(out_ch, out_ch, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_ch)
        else:
            self.layer_norm = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if isinstance(self.layer_norm, nn.LayerNorm):
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.layer_norm is not None:
            x = self.layer_norm(x)
        return F.gelu(x)


class FeatureExtractor(nn.Module):
    """Waveform (batch, samples) -> frames (batch, frames, channels of the last convolution)."""

    def __init__(self, layers: list, mode: str, bias: bool) -> None:
        super().__init__()
        if mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"extractor_mode {mode!r} (expected group_norm or layer_norm)")
        convs, in_ch = [], 1
        for i, (out_ch, kernel, stride) in enumerate(layers):
            norm = "layer" if mode == "layer_norm" else ("group" if i == 0 else None)
            convs.append(ConvLayer(in_ch, out_ch, kernel, stride, bias, norm))
            in_ch = out_ch
        self.conv_layers = nn.ModuleList(convs)
        # DPHuBERT keeps the last convolution's channel mask here; it scales the frames.
        self.dummy_weight = nn.Parameter(torch.ones(in_ch), requires_grad=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x.transpose(1, 2) * self.dummy_weight


class WeightNormConv(nn.Module):
    """Grouped convolution with weight normalisation over the kernel axis (torchaudio's
    ``weight_norm(conv, dim=2)``: parameters ``weight_g``, ``weight_v``, ``bias``)."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.randn(dim, dim // groups, kernel) * 0.02)
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.groups = groups
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class PositionalConv(nn.Module):
    """Convolutional position embedding: (batch, frames, dim) -> the same shape."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv = WeightNormConv(dim, kernel, groups)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.transpose(1, 2))
        if self.trim:
            x = x[..., :-self.trim]
        return F.gelu(x).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``heads`` heads of ``head_dim`` (fewer than the model width
    divided by the head size after pruning)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.k_proj = nn.Linear(dim, heads * head_dim)
        self.v_proj = nn.Linear(dim, heads * head_dim)
        self.q_proj = nn.Linear(dim, heads * head_dim)
        self.out_proj = nn.Linear(heads * head_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape
        shape = (batch, frames, self.heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2) * self.head_dim ** -0.5
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        weights = self.dropout(torch.softmax(q @ k.transpose(2, 3), dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, frames, self.heads * self.head_dim)
        return self.out_proj(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, hidden_dropout: float, dropout: float) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.intermediate_dropout = nn.Dropout(hidden_dropout)
        self.output_dense = nn.Linear(hidden, dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class EncoderLayer(nn.Module):
    """Transformer layer whose attention and feed-forward parts may each be pruned away (None).
    Post-norm (HuBERT Base): the two LayerNorms still apply when their part is gone."""

    def __init__(self, dim: int, attention: SelfAttention | None, feed_forward: FeedForward | None,
                 dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.attention = attention
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim)
        self.feed_forward = feed_forward
        self.final_layer_norm = nn.LayerNorm(dim)
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            attended = self.attention(self.layer_norm(x) if self.norm_first else x)
            x = x + self.dropout(attended)
        if self.norm_first:
            return x if self.feed_forward is None else x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class PrunedWav2Vec2(nn.Module):
    """The encoder that a torchaudio-layout ``config`` describes, each layer at its own size."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        dim, layers = config["encoder_embed_dim"], config["encoder_num_layers"]
        for key in ("encoder_use_attention", "encoder_use_feed_forward", "encoder_num_heads",
                    "encoder_ff_interm_features"):
            if len(config[key]) != layers:
                raise ValueError(f"{key} has {len(config[key])} entries for {layers} layers")
        dropout = config.get("encoder_dropout", 0.0)
        self.feature_extractor = FeatureExtractor(config["extractor_conv_layer_config"], config["extractor_mode"],
                                                  bool(config["extractor_conv_bias"]))
        conv_dim = config["extractor_conv_layer_config"][-1][0]
        self.encoder = nn.Module()
        self.encoder.feature_projection = nn.Module()
        self.encoder.feature_projection.layer_norm = nn.LayerNorm(conv_dim)
        self.encoder.feature_projection.projection = nn.Linear(conv_dim, dim)
        self.projection_dropout = nn.Dropout(config.get("encoder_projection_dropout", 0.0))
        transformer = self.encoder.transformer = nn.Module()
        transformer.pos_conv_embed = PositionalConv(dim, config["encoder_pos_conv_kernel"],
                                                    config["encoder_pos_conv_groups"])
        transformer.layer_norm = nn.LayerNorm(dim)
        norm_first = bool(config["encoder_layer_norm_first"])
        transformer.layers = nn.ModuleList()
        for i in range(layers):
            heads, hidden = config["encoder_num_heads"][i], config["encoder_ff_interm_features"][i]
            attention = (SelfAttention(dim, heads, config["encoder_head_dim"], config.get("encoder_attention_dropout", 0.0))
                         if config["encoder_use_attention"][i] and heads > 0 else None)
            feed_forward = (FeedForward(dim, hidden, config.get("encoder_ff_interm_dropout", 0.0), dropout)
                            if config["encoder_use_feed_forward"][i] and hidden > 0 else None)
            transformer.layers.append(EncoderLayer(dim, attention, feed_forward, dropout, norm_first))
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.normalize_waveform = bool(config.get("normalize_waveform", False))
        self.config = SimpleNamespace(hidden_size=dim, num_hidden_layers=layers,
                                      layerdrop=config.get("encoder_layer_drop", 0.0), apply_spec_augment=False)
        self.checkpointing = False

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each transformer layer in the backward pass instead of keeping its activations."""
        self.checkpointing = True

    def _layer(self, layer: EncoderLayer, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, x, use_reentrant=False)
        return layer(x)

    def forward(self, input_values: torch.Tensor, output_hidden_states: bool = False) -> SimpleNamespace:
        """``last_hidden_state``: the transformer output (post-norm models: the last layer's output;
        pre-norm: after the final LayerNorm); ``hidden_states`` (if asked): projection and every layer."""
        wave = F.layer_norm(input_values, input_values.shape[-1:]) if self.normalize_waveform else input_values
        frames = self.feature_extractor(wave)
        projection = self.encoder.feature_projection
        x = self.projection_dropout(projection.projection(projection.layer_norm(frames)))
        hidden_states = [x]
        transformer = self.encoder.transformer
        x = x + transformer.pos_conv_embed(x)
        if not self.norm_first:
            x = transformer.layer_norm(x)
        x = self.dropout(x)
        for layer in transformer.layers:
            if not output_hidden_states and self.training and torch.rand(()).item() < self.config.layerdrop:
                continue
            x = self._layer(layer, x)
            hidden_states.append(x)
        last = transformer.layer_norm(x) if self.norm_first else x
        return SimpleNamespace(last_hidden_state=last,
                               hidden_states=tuple(hidden_states) if output_hidden_states else None)


def is_torchaudio_layout(checkpoint: object) -> bool:
    """Whether a loaded checkpoint is ``{"state_dict", "config"}`` in torchaudio's wav2vec 2.0 layout."""
    return (isinstance(checkpoint, dict) and isinstance(checkpoint.get("config"), dict)
            and isinstance(checkpoint.get("state_dict"), dict) and "encoder_num_layers" in checkpoint["config"])


def load_pruned_wav2vec2(checkpoint: dict, path: Path) -> PrunedWav2Vec2:
    """The model of a DPHuBERT-style checkpoint, weights loaded strictly (one-line errors)."""
    config = checkpoint["config"]
    missing = [key for key in REQUIRED_CONFIG if key not in config]
    if missing:
        raise ConfigError(f"{path}: torchaudio-layout config lacks {', '.join(missing)}")
    if any(config.get(key) for key in PRUNING_SWITCHES):
        raise ConfigError(f"{path}: a checkpoint taken during pruning (hard-concrete masks); "
                          f"use the final pruned checkpoint")
    if "encoder_remaining_heads" in config:
        raise ConfigError(f"{path}: pruned WavLM checkpoints (encoder_remaining_heads) are not supported")
    try:
        model = PrunedWav2Vec2(config)
    except (ValueError, TypeError, IndexError) as err:
        raise ConfigError(f"{path}: unreadable torchaudio-layout config ({err})") from None
    state = {key: value for key, value in checkpoint["state_dict"].items() if not key.startswith("aux.")}
    load_state_strictly(model, state, f"{path}: weights do not fit the checkpoint's own config")
    return model

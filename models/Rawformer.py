"""Rawformer: Liu et al., "Leveraging Positional-Related Local-Global Dependency for Synthetic Speech
Detection", ICASSP 2023 (doi:10.1109/ICASSP49357.2023.10096278).

A convolutional front end finds local patterns, a small transformer relates them globally:

* pre-emphasis (``pre_emphasis``, 0.97; the first sample's predecessor is the second sample, a
  reflection), AASIST's fixed sinc filterbank (70 filters), |x| max-pooled by (3, 3), BatchNorm,
  SELU: the low-level feature map;
* ``blocks`` 2-D residual blocks (BatchNorm-SELU before all but the first, two convolutions of
  kernel ``block_kernel`` then (2, 3), a (1, 3) convolution on the shortcut when the channel count
  changes, max-pooling (1, ``block_pool``) over time): the high-level feature map (C, 23, t);
* every (frequency, time) cell becomes a token of C values in frequency-major order, plus a fixed
  sinusoidal 1-D position code (positions 1 .. n-2 coded, the first and last token get none);
* ``encoders`` post-norm transformer encoder layers (``heads`` heads, feed-forward width
  ``ffn_dim`` with ReLU, dropout 0.1, LayerNorm epsilon 1e-12), sequence pooling (a learned
  softmax weighting of the tokens, Li et al., IEEE SPL 2022) and one linear output.

The paper's code is not public; this follows the public re-implementation in the AntiSpoof
hackathon solution (``Alphonsce/AntiSpoof-Hackathon``, ``rawformer_asv_spoof/models``), read to
fix the choices, with its parameter names, so its state dicts load strictly. Its single output is
the spoof logit of a sigmoid (labels 0 = bona fide there); the two logits here are (z / 2, -z / 2),
so that softmax gives the same probabilities and logit 1 is bona fide as in every emospoof model.

``config/Rawformer.conf`` (six blocks of kernel (2, 3) pooled by 3, three encoder layers, feed-forward
80: the re-implementation's ``Rawformer_L`` defaults) has 293 044 parameters; the four-block
``Rawformer_S`` setting (kernel (2, 5), pool 6, two encoder layers, feed-forward 64) has 191 364.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from emospoof.core.config import ConfigError
from models.layers.blocks import SincConv

CONFIG_KEYS = {"architecture", "nb_samp", "first_conv", "sinc_filters", "blocks", "block_kernel", "block_pool",
               "encoders", "heads", "ffn_dim", "dropout", "pre_emphasis"}
DEFAULTS = {"first_conv": 128, "sinc_filters": 70, "block_kernel": [2, 3], "block_pool": 3, "heads": 8,
            "dropout": 0.1, "pre_emphasis": 0.97}


def _setting(d_args: dict, key: str):
    return d_args.get(key, DEFAULTS.get(key))


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate_model_config(model_config: dict) -> None:
    """Config-time checks of the Rawformer sizes (one line naming the key)."""
    for key in ("blocks", "encoders", "ffn_dim"):
        if key not in model_config:
            raise ConfigError(f"config is missing the required key 'model_config.{key}'")
    blocks = model_config["blocks"]
    if not (isinstance(blocks, list) and blocks and all(
            isinstance(b, list) and len(b) == 2 and all(map(_is_positive_int, b)) for b in blocks)
            and blocks[0][0] == 1 and all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))):
        raise ConfigError(f"model_config.blocks: expected [[1, c1], [c1, c2], ...] channel pairs, got {blocks!r}")
    for key in ("nb_samp", "first_conv", "sinc_filters", "block_pool", "encoders", "heads", "ffn_dim"):
        if not _is_positive_int(_setting(model_config, key)):
            raise ConfigError(f"model_config.{key}: expected a positive integer, got {model_config.get(key)!r}")
    kernel = _setting(model_config, "block_kernel")
    if not (isinstance(kernel, list) and len(kernel) == 2 and all(map(_is_positive_int, kernel)) and kernel[1] % 2):
        raise ConfigError(f"model_config.block_kernel: expected [height, odd width], got {kernel!r}")
    if blocks[-1][1] % _setting(model_config, "heads"):
        raise ConfigError(f"model_config.heads: {model_config['heads']} does not divide the token width "
                          f"{blocks[-1][1]} (the last block's channels)")
    for key in ("dropout", "pre_emphasis"):
        value = _setting(model_config, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(f"model_config.{key}: expected a number in [0, 1), got {value!r}")


class ConvBlock(nn.Module):
    """Rawformer's 2-D residual block (``Conv2DBlock_S`` / ``_L`` of the re-implementation); unlike
    AASIST's, its first convolution reads the normalised input."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], pool: int, first: bool) -> None:
        super().__init__()
        self.normalizer = None if first else nn.Sequential(nn.BatchNorm2d(in_ch), nn.SELU(inplace=True))
        self.layers = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=kernel, padding=(1, kernel[1] // 2)),
            nn.BatchNorm2d(out_ch), nn.SELU(inplace=True),
            nn.Conv2d(out_ch, out_ch, kernel_size=(2, 3), padding=(0, 1)))
        self.downsampler = (nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=(1, 3), padding=(0, 1)))
                            if in_ch != out_ch else None)
        self.pooling = nn.MaxPool2d((1, pool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsampler is None else self.downsampler(x)
        out = x if self.normalizer is None else self.normalizer(x)
        return self.pooling(self.layers(out) + identity)


class FrontEnd(nn.Module):
    """Waveform (batch, samples) -> high-level feature map (batch, C, filters / 3, frames)."""

    def __init__(self, d_args: dict) -> None:
        super().__init__()
        self.sinc_layer = SincConv(_setting(d_args, "sinc_filters"), _setting(d_args, "first_conv"))
        self.bn = nn.BatchNorm2d(1)
        kernel, pool = tuple(_setting(d_args, "block_kernel")), _setting(d_args, "block_pool")
        self.conv_blocks = nn.Sequential(*[
            ConvBlock(a, b, kernel, pool, first=(i == 0)) for i, (a, b) in enumerate(d_args["blocks"])])

    def forward(self, x: torch.Tensor, freq_aug: bool = False) -> torch.Tensor:
        x = F.max_pool2d(self.sinc_layer(x.unsqueeze(1), mask_band=freq_aug).unsqueeze(1).abs(), (3, 3))
        return self.conv_blocks(F.selu(self.bn(x)))


def position_code(tokens: int, width: int) -> torch.Tensor:
    """(tokens, width) sinusoidal code of positions 1 .. tokens - 2 (sine on even features, cosine on
    odd ones, wavelengths 10000^(2i / width)); the first and last rows stay zero, as in the
    re-implementation."""
    code = torch.zeros(tokens, width)
    position = torch.arange(1, tokens - 1, dtype=torch.float32).unsqueeze(1)
    scale = 10000 ** (torch.arange(0, width, 2, dtype=torch.float32) / width)
    code[1:-1, 0::2] = torch.sin(position / scale)
    code[1:-1, 1::2] = torch.cos(position / scale[: width // 2])
    return code


class LayerNorm(nn.Module):
    """LayerNorm with the re-implementation's parameter names (``gamma``, ``beta``) and epsilon."""

    def __init__(self, width: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))
        self.beta = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, self.eps)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product self-attention over ``heads`` heads."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.W_Q = nn.Linear(width, width)
        self.W_K = nn.Linear(width, width)
        self.W_V = nn.Linear(width, width)
        self.W_after_attention = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        return x.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.W_Q(x)), self._split(self.W_K(x)), self._split(self.W_V(x))
        weights = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(k.size(-1)), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(x.shape)
        return self.W_after_attention(out)


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer."""

    def __init__(self, width: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(width, heads)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = LayerNorm(width)
        self.ffn = nn.Module()
        self.ffn.network = nn.Sequential(nn.Linear(width, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
                                         nn.Linear(ffn_dim, width))
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.attention(x)))
        return self.norm2(x + self.dropout2(self.ffn.network(x)))


class Classifier(nn.Module):
    """Transformer encoders, sequence pooling and the output layer (one spoof logit)."""

    def __init__(self, width: int, d_args: dict) -> None:
        super().__init__()
        heads, ffn_dim, dropout = _setting(d_args, "heads"), d_args["ffn_dim"], _setting(d_args, "dropout")
        # The re-implementation's names: encoders.encoder0, encoders.encoder1, ...
        self.encoders = nn.Sequential(OrderedDict(
            (f"encoder{i}", EncoderLayer(width, heads, ffn_dim, dropout)) for i in range(d_args["encoders"])))
        self.seq_pooling = nn.Module()
        self.seq_pooling.linear = nn.Linear(width, 1)
        self.linear = nn.Linear(width, 1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, width) -> (batch, width): the encoded tokens, softmax-weighted."""
        x = self.encoders(tokens)
        weights = torch.softmax(self.seq_pooling.linear(x).transpose(1, 2), dim=-1)
        return (weights @ x).squeeze(1)


class Model(nn.Module):
    """Rawformer; ``forward`` returns ``(pooled tokens, logits)``, logit index 1 = bona fide."""

    def __init__(self, d_args: dict) -> None:
        super().__init__()
        validate_model_config(d_args)
        self.front_end = FrontEnd(d_args)
        width = d_args["blocks"][-1][1]
        self.classifier = Classifier(width, d_args)
        self.pre_emphasis = float(_setting(d_args, "pre_emphasis"))
        frames = (d_args["nb_samp"] - self.front_end.sinc_layer.kernel_size + 1) // 3
        for _ in d_args["blocks"]:
            frames //= _setting(d_args, "block_pool")
        tokens = (_setting(d_args, "sinc_filters") // 3) * frames
        if frames < 1:
            raise ConfigError(f"model_config.nb_samp: {d_args['nb_samp']} samples leave no frame after "
                              f"{len(d_args['blocks'])} blocks pooled by {_setting(d_args, 'block_pool')}")
        self.register_buffer("position", position_code(tokens, width), persistent=False)

    def emphasise(self, x: torch.Tensor) -> torch.Tensor:
        """y[n] = x[n] - a * x[n - 1], with x[-1] = x[1] (reflection)."""
        if self.pre_emphasis == 0:
            return x
        previous = torch.cat([x[:, 1:2], x[:, :-1]], dim=1)
        return x - self.pre_emphasis * previous

    def forward(self, x: torch.Tensor, Freq_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        hfm = self.front_end(self.emphasise(x), Freq_aug)
        tokens = hfm.flatten(2).transpose(1, 2)
        if tokens.size(1) > self.position.size(0):
            raise ValueError(f"Rawformer got {x.size(1)} samples; inputs longer than nb_samp "
                             f"({self.position.size(0)} tokens) have no position code")
        hidden = self.classifier.pool(tokens + self.position[: tokens.size(1)])
        spoof_logit = self.classifier.linear(hidden)
        return hidden, torch.cat([spoof_logit / 2, -spoof_logit / 2], dim=1)


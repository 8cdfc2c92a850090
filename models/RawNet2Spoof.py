"""RawNet2 anti-spoofing baseline (Tak et al., "End-to-end anti-spoofing with RawNet2", ICASSP 2021).

Follows the ``RawNet2Spoof`` model of the public AASIST reference code: a fixed sinc filterbank,
six 1-D residual blocks each followed by filter-wise feature map scaling (FMS), a GRU over the
frame sequence and two fully connected layers. Parameter names match the reference so that
checkpoints trained with it load with ``strict=True``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emospoof.core.config import ConfigError
from models.layers.blocks import SincConv

CONFIG_KEYS = {
    "architecture",
    "nb_samp",
    "first_conv",
    "in_channels",
    "filts",
    "blocks",
    "nb_fc_node",
    "gru_node",
    "nb_gru_layer",
    "nb_classes",
}


def validate_model_config(model_config: dict) -> None:
    """The sinc front end filters one channel; logit index 1 = bona fide needs exactly 2 classes."""
    if model_config.get("in_channels", 1) != 1:
        raise ConfigError(f"model_config.in_channels: RawNet2 reads mono audio, got {model_config['in_channels']!r}")
    if model_config.get("nb_classes", 2) != 2:
        raise ConfigError(f"model_config.nb_classes: expected 2 (spoof, bona fide), got {model_config['nb_classes']!r}")


class ResidualBlock1d(nn.Module):
    """1-D residual block of RawNet2 (named ``Residual_block`` in the reference).

    Same quirk as the 2-D AASIST block: ``conv1`` reads the block input, so ``bn1`` has
    parameters (kept for the parameter count and checkpoint layout) but never affects the output
    and is not evaluated.
    """

    def __init__(self, in_channels: int, out_channels: int, first: bool = False) -> None:
        super().__init__()
        if not first:
            self.bn1 = nn.BatchNorm1d(in_channels)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.3)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels != out_channels:
            self.conv_downsample = nn.Conv1d(in_channels, out_channels, kernel_size=1)
        self.mp = nn.MaxPool1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.lrelu(self.bn2(self.conv1(x))))
        identity = self.conv_downsample(x) if hasattr(self, "conv_downsample") else x
        return self.mp(out + identity)


class Model(nn.Module):
    """RawNet2: sinc front end, residual blocks with FMS, GRU, FC layers.

    ``forward`` returns ``(last_hidden, logits)``; logit index 1 is bona fide. As in the reference,
    ``logits`` are log-softmax outputs. They are valid logits for ``CrossEntropyLoss`` (log-softmax
    is idempotent, so the loss equals NLL on them) and their index 1 is the reference's CM score.
    """

    def __init__(self, d_args: dict) -> None:
        validate_model_config(d_args)
        super().__init__()
        filts = d_args["filts"]
        sinc_channels, stage1, stage2 = filts[0], filts[1][-1], filts[2][-1]
        # Each block reads the previous block's output. The reference instead rewrites
        # filts[2][0] in place after block2, which is why its dumped configs show [128, 128] where
        # its config file says [20, 128]; both spellings build the same network here.
        channels = [sinc_channels, stage1, stage1, stage2, stage2, stage2, stage2]

        self.Sinc_conv = SincConv(sinc_channels, d_args["first_conv"])
        self.first_bn = nn.BatchNorm1d(sinc_channels)
        self.selu = nn.SELU(inplace=True)
        # Reference names: block{i} (a one-element Sequential) and fc_attention{i} (Sequential(Linear)).
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            self.add_module(f"block{i}", nn.Sequential(ResidualBlock1d(c_in, c_out, first=(i == 0))))
            self.add_module(f"fc_attention{i}", nn.Sequential(nn.Linear(c_out, c_out)))
        self.num_blocks = len(channels) - 1

        self.bn_before_gru = nn.BatchNorm1d(stage2)
        self.gru = nn.GRU(stage2, d_args["gru_node"], num_layers=d_args["nb_gru_layer"], batch_first=True)
        self.fc1_gru = nn.Linear(d_args["gru_node"], d_args["nb_fc_node"])
        self.fc2_gru = nn.Linear(d_args["nb_fc_node"], d_args["nb_classes"])

    @staticmethod
    def _feature_map_scaling(x: torch.Tensor, attention: nn.Module) -> torch.Tensor:
        """FMS: a sigmoid gate per filter from its time-averaged output, applied as x * s + s."""
        scale = torch.sigmoid(attention(x.mean(dim=-1))).unsqueeze(-1)
        return x * scale + scale

    def forward(self, x: torch.Tensor, Freq_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``Freq_aug`` is accepted for a uniform interface and ignored, as in the reference:
        the RawNet2 baseline was trained without sinc-band masking."""
        x = self.Sinc_conv(x.unsqueeze(1))
        x = self.selu(self.first_bn(F.max_pool1d(x.abs(), 3)))
        for i in range(self.num_blocks):
            x = self._feature_map_scaling(getattr(self, f"block{i}")(x), getattr(self, f"fc_attention{i}"))
        x = self.selu(self.bn_before_gru(x)).transpose(1, 2)
        # Re-compact the GRU weights (they can become non-contiguous under DataParallel on GPU).
        self.gru.flatten_parameters()
        x, _ = self.gru(x)
        hidden = self.fc1_gru(x[:, -1])
        return hidden, F.log_softmax(self.fc2_gru(hidden), dim=1)

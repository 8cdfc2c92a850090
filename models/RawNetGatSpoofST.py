"""RawGAT-ST (Tak et al., "End-to-end spectro-temporal graph attention networks for speaker
verification anti-spoofing and speech deepfake detection", ASVspoof 2021 workshop).

Follows the ``RawNetGatSpoofST`` model of the public AASIST reference code: the AASIST front end
and residual encoder (used twice, once per graph), a spectral and a temporal graph attention
layer with graph pooling, node-axis projections to a common node count, fusion by element-wise
multiplication, and a spectro-temporal graph attention layer. Parameter names match the reference.

Reference naming quirk, kept for checkpoint compatibility: the ``*_T`` modules take the maximum
over *time* and so model the spectral nodes; the ``*_S`` modules model the temporal nodes.

The node-axis projections have fixed sizes, so the model only accepts inputs whose length gives
the same number of temporal nodes as ``nb_samp``. The reference hard-codes the sizes for 64 600
samples and 70 sinc filters; here they are derived from the config and equal the reference's for
that config.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emospoof.core.config import ConfigError
from models.layers.blocks import GraphAttentionLayer, GraphPool, SincConv, build_encoder

CONFIG_KEYS = {"architecture", "nb_samp", "first_conv", "filts"}

# Graph sizes fixed in the reference (not configurable there).
GAT_DIM = 32
GAT_ST_DIM = 16
FUSED_NODES = 12
POOL_RATIO_SPECTRAL = 0.64
POOL_RATIO_TEMPORAL = 0.81
POOL_RATIO_ST = 0.64
ENCODER_BLOCKS = 6
MIN_NODES = 4


def _pooled_nodes(nodes: int, ratio: float) -> int:
    """Node count left by ``GraphPool``. The reference keeps at least 2 nodes, the shared pool
    at least 1; the two agree on graphs of ``MIN_NODES`` or more, which the config check enforces."""
    return max(int(nodes * ratio), 1)


def _temporal_nodes(num_samples: int, sinc_kernel: int) -> int:
    """Frames left after the sinc conv (valid), the (3, 3) front-end pool and six (1, 3) pools."""
    frames = (num_samples - sinc_kernel + 1) // 3
    for _ in range(ENCODER_BLOCKS):
        frames //= 3
    return frames


def validate_model_config(model_config: dict) -> None:
    """Both graphs need enough nodes to pool (see ``_pooled_nodes``)."""
    try:
        sinc_filters, kernel, nb_samp = model_config["filts"][0], model_config["first_conv"], model_config["nb_samp"]
    except KeyError:
        return  # a missing key is reported when the model is built
    if sinc_filters // 3 < MIN_NODES:
        raise ConfigError(f"model_config.filts[0]: {sinc_filters} sinc filters give fewer than {MIN_NODES} spectral nodes")
    if _temporal_nodes(nb_samp, kernel | 1) < MIN_NODES:  # SincConv makes the kernel odd
        raise ConfigError(f"model_config.nb_samp: {nb_samp} samples give fewer than {MIN_NODES} temporal nodes")


class Model(nn.Module):
    """RawGAT-ST: spectral and temporal graph attention fused into a spectro-temporal graph.

    ``forward`` returns ``(last_hidden, logits)``; logit index 1 is bona fide. ``last_hidden`` is
    the projected spectro-temporal node vector the reference also returns.
    """

    def __init__(self, d_args: dict) -> None:
        validate_model_config(d_args)
        super().__init__()
        filts = d_args["filts"]
        encoder_dim = filts[-1][-1]

        self.conv_time = SincConv(filts[0], d_args["first_conv"])
        self.temporal_nodes = _temporal_nodes(d_args["nb_samp"], self.conv_time.kernel_size)
        spectral_nodes = filts[0] // 3
        self.first_bn = nn.BatchNorm2d(1)
        self.selu = nn.SELU(inplace=True)
        self.encoder_T = build_encoder(filts)
        self.encoder_S = build_encoder(filts)

        self.GAT_layer_T = GraphAttentionLayer(encoder_dim, GAT_DIM)
        self.GAT_layer_S = GraphAttentionLayer(encoder_dim, GAT_DIM)
        self.GAT_layer_ST = GraphAttentionLayer(GAT_DIM, GAT_ST_DIM)
        self.pool_T = GraphPool(POOL_RATIO_SPECTRAL, GAT_DIM, 0.3)
        self.pool_S = GraphPool(POOL_RATIO_TEMPORAL, GAT_DIM, 0.3)
        self.pool_ST = GraphPool(POOL_RATIO_ST, GAT_ST_DIM, 0.3)

        self.proj_T = nn.Linear(_pooled_nodes(spectral_nodes, POOL_RATIO_SPECTRAL), FUSED_NODES)
        self.proj_S = nn.Linear(_pooled_nodes(self.temporal_nodes, POOL_RATIO_TEMPORAL), FUSED_NODES)
        self.proj_ST = nn.Linear(GAT_ST_DIM, 1)
        self.out_layer = nn.Linear(_pooled_nodes(FUSED_NODES, POOL_RATIO_ST), 2)

    def _graph(self, e: torch.Tensor, gat: nn.Module, pool: nn.Module, proj: nn.Module) -> torch.Tensor:
        """(batch, channels, nodes) -> graph attention, pooling, projection to (batch, dim, FUSED_NODES)."""
        return proj(pool(gat(e.transpose(1, 2))).transpose(1, 2))

    def forward(self, x: torch.Tensor, Freq_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if _temporal_nodes(x.size(1), self.conv_time.kernel_size) != self.temporal_nodes:
            raise ValueError(
                f"RawGAT-ST was built for inputs of about nb_samp samples ({self.temporal_nodes} "
                f"temporal nodes); got {x.size(1)} samples"
            )
        x = self.conv_time(x.unsqueeze(1), mask_band=Freq_aug).unsqueeze(1)
        x = self.selu(self.first_bn(F.max_pool2d(x.abs(), (3, 3))))

        spectral = self._graph(self.encoder_T(x).abs().max(dim=3).values, self.GAT_layer_T, self.pool_T, self.proj_T)
        temporal = self._graph(self.encoder_S(x).abs().max(dim=2).values, self.GAT_layer_S, self.pool_S, self.proj_S)
        fused = self.pool_ST(self.GAT_layer_ST((spectral * temporal).transpose(1, 2)))
        hidden = self.proj_ST(fused).flatten(1)
        return hidden, self.out_layer(hidden)

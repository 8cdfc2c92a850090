"""AASIST and AASIST-L (Jung et al., ICASSP 2022); the config's sizes decide which.

The forward pass is split into stages (``encode``, ``graph_embedding``, ``classify``) so that the
emotion-conditioned models can modulate features between them without copying the network: ``encode``
takes an optional hook called after each residual block, ``graph_embedding`` one called on the pooled
graph nodes. Without hooks the computation is exactly the reference one.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from models.layers.blocks import (GraphAttentionLayer, GraphPool, HtrgGraphAttentionLayer, SincConv, build_encoder,
                                  graph_readout, hs_gal_branch, sinc_front_end)

BlockHook = Callable[[int, torch.Tensor], torch.Tensor]
NodeHook = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

CONFIG_KEYS = {"architecture", "nb_samp", "first_conv", "filts", "gat_dims", "pool_ratios", "temperatures"}


class Model(nn.Module):
    """AASIST: sinc front end, residual encoder, spectral and temporal graphs, two HS-GAL branches.

    ``forward`` returns ``(last_hidden, logits)``; logit index 1 is bona fide.
    """

    # Graph-node features per encoder channel (SEMAA's nodes carry a mean and a standard deviation).
    NODE_WIDTH = 1
    # Width of the readout in units of gat_dims[1] (AASIST: max and mean of two node sets, master).
    READOUT_UNITS = 5

    def __init__(self, d_args: dict) -> None:
        super().__init__()
        filts = d_args["filts"]
        gat_dims = d_args["gat_dims"]
        pool_ratios = d_args["pool_ratios"]
        temperatures = d_args["temperatures"]
        node_dim = self.NODE_WIDTH * filts[-1][-1]

        self.build_front_end(d_args)
        self.first_bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout(0.5)
        self.drop_way = nn.Dropout(0.2)

        # 23 spectral nodes: the sinc filters after the (3, 3) max-pool of the front end.
        self.pos_S = nn.Parameter(torch.randn(1, (filts[0] - 3) // 3 + 1, node_dim))
        self.master1 = nn.Parameter(torch.randn(1, 1, gat_dims[0]))
        self.master2 = nn.Parameter(torch.randn(1, 1, gat_dims[0]))

        self.GAT_layer_S = GraphAttentionLayer(node_dim, gat_dims[0], temperature=temperatures[0])
        self.GAT_layer_T = GraphAttentionLayer(node_dim, gat_dims[0], temperature=temperatures[1])
        self.HtrgGAT_layer_ST11 = HtrgGraphAttentionLayer(gat_dims[0], gat_dims[1], temperature=temperatures[2])
        self.HtrgGAT_layer_ST12 = HtrgGraphAttentionLayer(gat_dims[1], gat_dims[1], temperature=temperatures[2])
        self.HtrgGAT_layer_ST21 = HtrgGraphAttentionLayer(gat_dims[0], gat_dims[1], temperature=temperatures[2])
        self.HtrgGAT_layer_ST22 = HtrgGraphAttentionLayer(gat_dims[1], gat_dims[1], temperature=temperatures[2])

        self.pool_S = GraphPool(pool_ratios[0], gat_dims[0], 0.3)
        self.pool_T = GraphPool(pool_ratios[1], gat_dims[0], 0.3)
        # Reference quirk: all four second-stage pools use pool_ratios[2] (pool_ratios[3] is unused).
        self.pool_hS1 = GraphPool(pool_ratios[2], gat_dims[1], 0.3)
        self.pool_hT1 = GraphPool(pool_ratios[2], gat_dims[1], 0.3)
        self.pool_hS2 = GraphPool(pool_ratios[2], gat_dims[1], 0.3)
        self.pool_hT2 = GraphPool(pool_ratios[2], gat_dims[1], 0.3)

        self.out_layer = nn.Linear(self.READOUT_UNITS * gat_dims[1], 2)

    def build_front_end(self, d_args: dict) -> None:
        """The sinc layer and the residual encoder; models with another front end override this."""
        self.conv_time = SincConv(d_args["filts"][0], d_args["first_conv"])
        self.encoder = build_encoder(d_args["filts"])

    def front_end(self, x: torch.Tensor, freq_aug: bool = False) -> torch.Tensor:
        """Waveform (batch, samples) -> spectro-temporal map (batch, 1, filters/3, frames/3)."""
        return sinc_front_end(self.conv_time, self.first_bn, x, freq_aug)

    def encode(self, x: torch.Tensor, freq_aug: bool = False,
               after_block: BlockHook | None = None) -> torch.Tensor:
        """Waveform -> encoder output (batch, channels, spectral, temporal).

        ``after_block(index, features)`` (if given) replaces the output of residual block ``index``.
        """
        e = self.front_end(x, freq_aug)
        for index, block in enumerate(self.encoder):
            e = block(e)
            if after_block is not None:
                e = after_block(index, e)
        return e

    def graph_embedding(self, e: torch.Tensor, on_nodes: NodeHook | None = None) -> torch.Tensor:
        """Encoder output -> the utterance embedding (``last_hidden``) before dropout.

        ``on_nodes(nodes_t, nodes_s)`` (if given) replaces the pooled temporal and spectral graph
        nodes before the HS-GAL branches.
        """
        nodes_s = e.abs().max(dim=3).values.transpose(1, 2) + self.pos_S
        nodes_s = self.pool_S(self.GAT_layer_S(nodes_s))
        nodes_t = e.abs().max(dim=2).values.transpose(1, 2)
        nodes_t = self.pool_T(self.GAT_layer_T(nodes_t))
        if on_nodes is not None:
            nodes_t, nodes_s = on_nodes(nodes_t, nodes_s)
        return self.graph_readout_from_nodes(nodes_t, nodes_s)

    def hs_gal_branches(self, nodes_t: torch.Tensor, nodes_s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The two HS-GAL branches after dropout: (t1, t2, s1, s2, master1, master2)."""
        t1, s1, m1 = hs_gal_branch(self.HtrgGAT_layer_ST11, self.HtrgGAT_layer_ST12,
                                   self.pool_hS1, self.pool_hT1, nodes_t, nodes_s, self.master1)
        t2, s2, m2 = hs_gal_branch(self.HtrgGAT_layer_ST21, self.HtrgGAT_layer_ST22,
                                   self.pool_hS2, self.pool_hT2, nodes_t, nodes_s, self.master2)
        return tuple(self.drop_way(n) for n in (t1, t2, s1, s2, m1, m2))

    def graph_readout_from_nodes(self, nodes_t: torch.Tensor, nodes_s: torch.Tensor) -> torch.Tensor:
        """Pooled temporal/spectral graph nodes -> utterance embedding via the two HS-GAL branches."""
        t1, t2, s1, s2, m1, m2 = self.hs_gal_branches(nodes_t, nodes_s)
        return graph_readout(torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2))

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out_layer(hidden)

    def forward(self, x: torch.Tensor, Freq_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.drop(self.graph_embedding(self.encode(x, Freq_aug)))
        return hidden, self.classify(hidden)

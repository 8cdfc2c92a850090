"""SEMAA: AASIST with attentive statistics pooling into the graphs and a self-attentive readout.

Presented by Weijiang Xia (BUPT) at the ASVspoof 5 workshop (2024) as an improvement of AASIST
(Jung et al., ICASSP 2022); public code: the ``spoof5/Baseline-AASIST`` folder (``SEMAAmodel.py``)
of the AntiSpoof hackathon solution ``Alphonsce/AntiSpoof-Hackathon``, read to fix every choice.
What differs from AASIST (everything else -- sinc front end, residual encoder, graph attention,
HS-GAL branches, graph pools, quirks included -- is ``models/AASIST.py``'s, so its names match):

* the encoder output is pooled into graph nodes by **attentive statistics** instead of the maximum
  of |x|: a 1x1-convolution attention map (``attention_asp``) weights the output over time (one
  spectral node per frequency bin) and over frequency (one temporal node per frame); each node is
  the weighted mean and standard deviation of the encoder channels, so nodes are twice as wide
  (128 values for 64 channels) and ``pos_S`` is too;
* the readout passes each branch's temporal and spectral nodes through a learned self-attention
  (``attention``: a weighted sum and a weighted standard deviation, 2 * gat_dims[1] values), takes
  the element-wise maximum of the two branches, and joins |T|, T, |S|, S and the master node:
  9 * gat_dims[1] values (AASIST: 5).

The published configuration (``config/SEMAA.conf``, the reference's) has 341 034 parameters (the hackathon README rounds it to 341 k).
"""
from __future__ import annotations

import torch

from models import AASIST
from models.layers.blocks import SelfAttentionPooling, attention_map_layers, attentive_statistics_nodes

CONFIG_KEYS = AASIST.CONFIG_KEYS


class Model(AASIST.Model):
    """SEMAA; ``forward`` returns ``(last_hidden, logits)``, logit index 1 = bona fide."""

    NODE_WIDTH = 2
    READOUT_UNITS = 9

    def __init__(self, d_args: dict) -> None:
        super().__init__(d_args)
        self.attention = SelfAttentionPooling(d_args["gat_dims"][1])
        self.attention_asp = attention_map_layers(d_args["filts"][-1][-1])

    def graph_embedding(self, e: torch.Tensor, on_nodes: AASIST.NodeHook | None = None) -> torch.Tensor:
        """Encoder output -> utterance embedding, nodes pooled by attentive statistics."""
        nodes_s, nodes_t = attentive_statistics_nodes(e, self.attention_asp(e))
        nodes_s = self.pool_S(self.GAT_layer_S(nodes_s + self.pos_S))
        nodes_t = self.pool_T(self.GAT_layer_T(nodes_t))
        if on_nodes is not None:
            nodes_t, nodes_s = on_nodes(nodes_t, nodes_s)
        return self.graph_readout_from_nodes(nodes_t, nodes_s)

    def graph_readout_from_nodes(self, nodes_t: torch.Tensor, nodes_s: torch.Tensor) -> torch.Tensor:
        """Self-attentive readout of the two HS-GAL branches: [|T|, T, |S|, S, master]."""
        t1, t2, s1, s2, m1, m2 = self.hs_gal_branches(nodes_t, nodes_s)
        nodes_t = torch.maximum(self.attention(t1), self.attention(t2))
        nodes_s = torch.maximum(self.attention(s1), self.attention(s2))
        master = torch.maximum(m1, m2).squeeze(1)
        return torch.cat([nodes_t.abs(), nodes_t, nodes_s.abs(), nodes_s, master], dim=1)

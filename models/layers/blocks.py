"""Building blocks shared by every AASIST-family model.

AASIST: Jung et al., "AASIST: Audio Anti-Spoofing using Integrated Spectro-Temporal Graph
Attention Networks", ICASSP 2022. Parameter names follow the public reference implementation so
that its published weights load with ``strict=True``; the computation follows it too, quirks
included (documented where they occur), because the published weights were trained that way.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


class SincConv(nn.Module):
    """Fixed band-pass sinc filterbank on the raw waveform (Ravanelli & Bengio, 2018).

    Cut-off frequencies are spaced evenly on the mel scale between 0 Hz and Nyquist and stay
    fixed, as in RawNet2 and AASIST. The filters are a non-persistent buffer so state dicts keep
    the reference layout (which stores no filters). ``mask_band`` implements AASIST's frequency
    augmentation: a random run of up to 20 consecutive filters is zeroed during training.
    """

    def __init__(self, out_channels: int, kernel_size: int, sample_rate: int = 16000) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            kernel_size += 1
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        nyquist_grid = (sample_rate // 2) * np.linspace(0, 1, 257)
        mel = _hz_to_mel(nyquist_grid)
        edges = _mel_to_hz(np.linspace(mel.min(), mel.max(), out_channels + 1))
        support = np.arange(-(kernel_size - 1) / 2, (kernel_size - 1) / 2 + 1)
        window = np.hamming(kernel_size)
        filters = np.empty((out_channels, kernel_size))
        for i, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
            high_pass = 2 * high / sample_rate * np.sinc(2 * high * support / sample_rate)
            low_pass = 2 * low / sample_rate * np.sinc(2 * low * support / sample_rate)
            filters[i] = window * (high_pass - low_pass)
        self.register_buffer(
            "filters", torch.tensor(filters, dtype=torch.float32).unsqueeze(1), persistent=False
        )

    def forward(self, x: torch.Tensor, mask_band: bool = False) -> torch.Tensor:
        filters = self.filters
        if mask_band:
            width = int(np.random.uniform(0, 20))
            start = int(np.random.randint(0, self.out_channels - width))
            filters = filters.clone()
            filters[start:start + width] = 0
        return F.conv1d(x, filters)


def sinc_front_end(conv_time: SincConv, first_bn: nn.BatchNorm2d, x: torch.Tensor,
                   freq_aug: bool = False) -> torch.Tensor:
    """AASIST front end: waveform (batch, samples) -> |sinc filterbank| max-pooled by (3, 3),
    BatchNorm, SELU: a (batch, 1, filters/3, frames/3) spectro-temporal map."""
    x = conv_time(x.unsqueeze(1), mask_band=freq_aug).unsqueeze(1)
    x = F.max_pool2d(x.abs(), (3, 3))
    return F.selu(first_bn(x))


class ResidualBlock(nn.Module):
    """2-D residual block of the AASIST encoder (named ``Residual_block`` in the reference).

    Reference quirk kept on purpose: ``conv1`` reads the block input, not the BN-SELU-activated
    one, so ``bn1`` has parameters (it must, for the published weights to load) but never
    influences the output. It is therefore not evaluated at all.
    """

    def __init__(self, nb_filts: list[int], first: bool = False, pool: tuple[int, int] | None = (1, 3)) -> None:
        super().__init__()
        in_ch, out_ch = nb_filts
        if not first:
            self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=(2, 3), padding=(1, 1))
        self.selu = nn.SELU(inplace=True)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=(2, 3), padding=(0, 1))
        if in_ch != out_ch:
            self.conv_downsample = nn.Conv2d(in_ch, out_ch, kernel_size=(1, 3), padding=(0, 1))
        self.pool = nn.MaxPool2d(pool) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.selu(self.bn2(self.conv1(x))))
        identity = self.conv_downsample(x) if hasattr(self, "conv_downsample") else x
        return self.pool(out + identity)


def build_encoder(filts: list, pool: tuple[int, int] | None = (1, 3)) -> nn.Sequential:
    """The six-block residual encoder; ``filts`` is the config list ``[sinc, b1, b2, b3, b4]``.

    Each block sits in a one-element Sequential to keep the reference names ``encoder.N.0.*``.
    """
    specs = [filts[1], filts[2], filts[3], filts[4], filts[4], filts[4]]
    return nn.Sequential(*[
        nn.Sequential(ResidualBlock(spec, first=(i == 0), pool=pool)) for i, spec in enumerate(specs)
    ])


def _xavier_parameter(*size: int) -> nn.Parameter:
    param = nn.Parameter(torch.empty(*size))
    nn.init.xavier_normal_(param)
    return param


def _batch_norm_nodes(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the feature axis of a (batch, nodes, dim) tensor."""
    return bn(x.reshape(-1, x.size(-1))).view(x.shape)


def _pairwise_products(x: torch.Tensor) -> torch.Tensor:
    """(batch, n, d) -> (batch, n, n, d) with entry [i, j] = x_i * x_j."""
    return x.unsqueeze(2) * x.unsqueeze(1)


class GraphAttentionLayer(nn.Module):
    """Graph attention over a fully connected node set (AASIST's GAT layer)."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = _xavier_parameter(out_dim, 1)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(p=0.2)
        self.act = nn.SELU(inplace=True)
        self.temp = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_drop(x)
        scores = torch.tanh(self.att_proj(_pairwise_products(x))) @ self.att_weight
        attention = F.softmax(scores.squeeze(-1) / self.temp, dim=-1)
        x = self.proj_with_att(attention @ x) + self.proj_without_att(x)
        return self.act(_batch_norm_nodes(self.bn, x))


class HtrgGraphAttentionLayer(nn.Module):
    """Heterogeneous stacking graph attention layer (HS-GAL) with a stack ("master") node.

    Two node types share one graph; type-1/type-1, type-2/type-2 and cross-type edges each have
    their own attention weight, and the stack node attends to every node.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = _xavier_parameter(out_dim, 1)
        self.att_weight22 = _xavier_parameter(out_dim, 1)
        self.att_weight12 = _xavier_parameter(out_dim, 1)
        self.att_weightM = _xavier_parameter(out_dim, 1)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(p=0.2)
        self.act = nn.SELU(inplace=True)
        self.temp = temperature

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n1 = x1.size(1)
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        if master is None:
            master = x.mean(dim=1, keepdim=True)
        x = self.input_drop(x)
        master = self._update_master(x, master)
        x = self.proj_with_att(self._node_attention(x, n1) @ x) + self.proj_without_att(x)
        x = self.act(_batch_norm_nodes(self.bn, x))
        return x[:, :n1], x[:, n1:], master

    def _node_attention(self, x: torch.Tensor, n1: int) -> torch.Tensor:
        hidden = torch.tanh(self.att_proj(_pairwise_products(x)))
        is_type2 = torch.arange(x.size(1), device=x.device) >= n1
        same_type2 = is_type2.unsqueeze(0) & is_type2.unsqueeze(1)
        same_type1 = ~is_type2.unsqueeze(0) & ~is_type2.unsqueeze(1)
        weights = torch.cat([self.att_weight11, self.att_weight22, self.att_weight12], dim=1)
        per_edge_type = hidden @ weights
        scores = torch.where(
            same_type1, per_edge_type[..., 0], torch.where(same_type2, per_edge_type[..., 1], per_edge_type[..., 2])
        )
        return F.softmax(scores / self.temp, dim=-1)

    def _update_master(self, x: torch.Tensor, master: torch.Tensor) -> torch.Tensor:
        scores = torch.tanh(self.att_projM(x * master)) @ self.att_weightM
        attention = F.softmax(scores / self.temp, dim=-2)
        pooled = attention.transpose(1, 2) @ x
        return self.proj_with_attM(pooled) + self.proj_without_attM(master)


class GraphPool(nn.Module):
    """Graph pooling (Gao & Ji, 2019): keep the top ``ratio`` of nodes by a learned gate score,
    scaled by that score."""

    def __init__(self, ratio: float, in_dim: int, dropout: float) -> None:
        super().__init__()
        self.k = ratio
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """``keep`` (if given) is the number of nodes to keep instead of ``ratio`` of them."""
        scores = torch.sigmoid(self.proj(self.drop(h)))
        keep = max(int(h.size(1) * self.k), 1) if keep is None else keep
        _, idx = torch.topk(scores, keep, dim=1)
        return torch.gather(h * scores, 1, idx.expand(-1, -1, h.size(-1)))


def hs_gal_branch(
    first: HtrgGraphAttentionLayer,
    second: HtrgGraphAttentionLayer,
    pool_s: nn.Module,
    pool_t: nn.Module,
    nodes_t: torch.Tensor,
    nodes_s: torch.Tensor,
    master: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One of AASIST's two parallel HS-GAL branches: HS-GAL, graph pooling, a second HS-GAL
    whose output is added back (residual). With ``nn.Identity`` pools it is AMSDF's
    heterogeneous graph fusion of two views."""
    out_t, out_s, master = first(nodes_t, nodes_s, master=master)
    out_s, out_t = pool_s(out_s), pool_t(out_t)
    aug_t, aug_s, aug_master = second(out_t, out_s, master=master)
    return out_t + aug_t, out_s + aug_s, master + aug_master


def graph_readout(nodes_t: torch.Tensor, nodes_s: torch.Tensor, master: torch.Tensor) -> torch.Tensor:
    """AASIST readout: max of |x| and mean over temporal and spectral nodes, plus the stack node."""
    return torch.cat([
        nodes_t.abs().max(dim=1).values,
        nodes_t.mean(dim=1),
        nodes_s.abs().max(dim=1).values,
        nodes_s.mean(dim=1),
        master.squeeze(1),
    ], dim=1)


def attention_map_layers(channels: int) -> nn.Sequential:
    """The 1x1-convolution attention map over an encoder output (conv, SELU, BatchNorm, conv) that
    SSL + AASIST (Tak et al., Odyssey 2022) and SEMAA use to pool it into graph nodes."""
    return nn.Sequential(
        nn.Conv2d(channels, 2 * channels, kernel_size=1), nn.SELU(inplace=True),
        nn.BatchNorm2d(2 * channels), nn.Conv2d(2 * channels, channels, kernel_size=1))


def _attentive_statistics(e: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """|weighted mean, weighted standard deviation| of ``e`` along ``dim``, joined on the channels:
    (batch, channels, a, b) -> (batch, remaining axis, 2 * channels)."""
    weights = torch.softmax(weights, dim=dim)
    mean = (e * weights).sum(dim=dim)
    std = ((e * e * weights).sum(dim=dim) - mean * mean).clamp(min=1e-4).sqrt()
    return torch.cat([mean, std], dim=1).abs().transpose(1, 2)


def attentive_statistics_nodes(e: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SEMAA's attentive statistics pooling of an encoder output (batch, C, spectral, temporal)
    with attention logits of the same shape: (spectral nodes (batch, spectral, 2C), temporal nodes
    (batch, temporal, 2C)), each node the attention-weighted mean and standard deviation over the
    other axis."""
    return _attentive_statistics(e, weights, 3), _attentive_statistics(e, weights, 2)


class SelfAttentionPooling(nn.Module):
    """SEMAA's readout of a node set: a learned vector scores each node (tanh, softmax over nodes);
    the output is the sum and the standard deviation of the weighted nodes (2 * dim values).

    The reference adds noise of standard deviation 1e-5 to the weighted nodes before the standard
    deviation, at every call; here only in training, so that scores are deterministic.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.att_weights = nn.Parameter(torch.empty(1, dim))
        nn.init.kaiming_uniform_(self.att_weights)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(torch.tanh(nodes @ self.att_weights.t()), dim=1)
        weighted = nodes * attention
        noisy = weighted + 1e-5 * torch.randn_like(weighted) if self.training else weighted
        return torch.cat([weighted.sum(dim=1), noisy.std(dim=1)], dim=1)

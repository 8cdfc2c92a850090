"""SSL + AASIST: a self-supervised speech model in front of the AASIST graph back end.

Tak et al., "Automatic speaker verification spoofing and deepfake detection using wav2vec 2.0 and
data augmentation", Odyssey 2022 (public code: github.com/TakHemlata/SSL_Anti-spoofing). The sinc
layer of AASIST is replaced by an SSL encoder (XLS-R 300M in the paper, fine-tuned with the rest):

* SSL features (batch, frames, D) -> linear projection to ``filts[0]`` (128) -> as a one-channel
  map (batch, 1, 128, frames), max-pooled by (3, 3), BatchNorm, SELU;
* the six-block residual encoder of AASIST without its max-pooling, then BatchNorm and SELU;
* spectral and temporal attention pooling: a 1x1-conv attention map (conv, SELU, BatchNorm,
  conv) softmax-normalised over time gives one node per spectral bin, over frequency one node
  per frame (AASIST takes the maximum of |x| instead);
* AASIST's graph back end unchanged: graph attention and pooling per domain, the two HS-GAL
  branches with master nodes, readout, output layer.

Everything but the front end and the attention pooling is inherited from ``models/AASIST.py``;
module names follow the reference code (``LL``, ``first_bn1``, ``attention``). AASIST's frequency
augmentation masks sinc bands, which this model does not have, so ``freq_aug`` has no effect here.

``back_end`` selects what follows the SSL front end: ``"AASIST"`` (above, the default) or
``"SEMAA"`` (``models/SEMAA.py``: attentive statistics pooling and the self-attentive readout,
straight on the encoder output, as the AntiSpoof hackathon's ``ModelWithSEMAA`` does; names
``attention_asp`` and ``attention`` as there). The SSL model may be any :class:`models.encoders.ssl.SSLEncoder`
source, DPHuBERT's pruned HuBERT included (``config/AASIST_DPHuBERT.conf``).

The published fine-tuned checkpoints of the reference code (e.g. ``LA_model.pth``) load strictly
through :meth:`Model.convert_state_dict`: their back end already has this model's names, their SSL
part is a fairseq ``Wav2Vec2Model`` (renamed with ``models.encoders.ssl``'s fairseq mapping), and keys may
carry ``nn.DataParallel``'s ``module.`` prefix. The reference feeds fairseq the raw waveform and
takes the encoder output (``features_only=True``: after the final LayerNorm of pre-LN XLS-R), i.e.
``ssl_layers`` ``"last"`` with ``ssl_normalize`` false.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from emospoof.core.config import ConfigError
from models import AASIST, SEMAA
from models.encoders.ssl import (FAIRSEQ_RENAMES, SSL_CONFIG_KEYS, fairseq_state_to_transformers,
                                 ssl_encoder_from_config, validate_ssl_config)
from models.layers.blocks import attention_map_layers, build_encoder

CONFIG_KEYS = (AASIST.CONFIG_KEYS - {"first_conv"}) | SSL_CONFIG_KEYS | {"back_end"}
BACK_ENDS = ("AASIST", "SEMAA")
# Where the SSL model's weights sit in the state dict, here and in the reference code alike.
SSL_PREFIX = "ssl_model.model."


def validate_model_config(model_config: dict) -> None:
    """Config-time checks of the SSL keys (nothing is loaded); the paper fine-tunes the SSL model."""
    validate_ssl_config(model_config, freeze_default=False)
    if model_config.get("back_end", "AASIST") not in BACK_ENDS:
        raise ConfigError(f"model_config.back_end: expected one of {', '.join(BACK_ENDS)}, "
                          f"got {model_config['back_end']!r}")


class SSLFrontEnd:
    """The SSL front end in place of the sinc layer (mixed into an AASIST-family back end)."""

    def build_front_end(self, d_args: dict) -> None:
        """The SSL model and its projection in place of the sinc layer; the encoder without max-pooling."""
        self.ssl_model = ssl_encoder_from_config(d_args, freeze_default=False)
        self.LL = nn.Linear(self.ssl_model.output_dim, d_args["filts"][0])
        self.encoder = build_encoder(d_args["filts"], pool=None)

    def front_end(self, x: torch.Tensor, freq_aug: bool = False) -> torch.Tensor:
        """Waveform (batch, samples) -> map (batch, 1, filts[0] / 3, SSL frames / 3)."""
        features = self.LL(self.ssl_model(x)).transpose(1, 2).unsqueeze(1)
        return F.selu(self.first_bn(F.max_pool2d(features, (3, 3))))

    def convert_state_dict(self, state: dict) -> dict:
        """A checkpoint of the reference code (fairseq SSL names, perhaps ``module.``-prefixed) ->
        this model's names; this model's own checkpoints come back unchanged. The SSL architecture
        comes from ``model_config.ssl_path`` (the checkpoint holds no SSL config), so a checkpoint
        whose SSL part has other shapes is a one-line ConfigError."""
        state = {key.removeprefix("module."): value for key, value in state.items()}
        ssl_state = {key[len(SSL_PREFIX):]: value for key, value in state.items() if key.startswith(SSL_PREFIX)}
        fairseq_names = [pattern for pattern, _ in FAIRSEQ_RENAMES]
        if not any(re.search(pattern, key) for key in ssl_state for pattern in fairseq_names):
            return state
        ssl_state = fairseq_state_to_transformers(ssl_state, self.ssl_model.output_dim)
        expected = self.ssl_model.model.state_dict()
        conflict = next((key for key in sorted(expected.keys() | ssl_state.keys()) if key not in expected
                         or key not in ssl_state or expected[key].shape != ssl_state[key].shape), None)
        if conflict is not None:
            found = tuple(ssl_state[conflict].shape) if conflict in ssl_state else "absent"
            wanted = tuple(expected[conflict].shape) if conflict in expected else "absent"
            raise ConfigError(f"the checkpoint's fairseq SSL model does not fit model_config.ssl_path "
                              f"(first difference: {SSL_PREFIX}{conflict}, checkpoint {found}, model {wanted}); "
                              f"ssl_path must give the architecture it was fine-tuned from, e.g. "
                              f"facebook/wav2vec2-xls-r-300m for Tak et al.'s XLS-R checkpoints")
        back_end = {key: value for key, value in state.items() if not key.startswith(SSL_PREFIX)}
        return back_end | {SSL_PREFIX + key: value for key, value in ssl_state.items()}


class AASISTBackEnd(SSLFrontEnd, AASIST.Model):
    """SSL front end + AASIST back end with attention pooling (Tak et al.)."""

    def __init__(self, d_args: dict) -> None:
        super().__init__(d_args)
        channels = d_args["filts"][-1][-1]
        self.first_bn1 = nn.BatchNorm2d(channels)
        self.attention = attention_map_layers(channels)

    def graph_embedding(self, e: torch.Tensor, on_nodes: AASIST.NodeHook | None = None) -> torch.Tensor:
        """Encoder output -> utterance embedding, with attention pooling in place of AASIST's max."""
        e = F.selu(self.first_bn1(e))
        weights = self.attention(e)
        nodes_s = (e * torch.softmax(weights, dim=-1)).sum(dim=-1).transpose(1, 2) + self.pos_S
        nodes_s = self.pool_S(self.GAT_layer_S(nodes_s))
        nodes_t = (e * torch.softmax(weights, dim=-2)).sum(dim=-2).transpose(1, 2)
        nodes_t = self.pool_T(self.GAT_layer_T(nodes_t))
        if on_nodes is not None:
            nodes_t, nodes_s = on_nodes(nodes_t, nodes_s)
        return self.graph_readout_from_nodes(nodes_t, nodes_s)


class SEMAABackEnd(SSLFrontEnd, SEMAA.Model):
    """SSL front end + SEMAA back end: attentive statistics on the encoder output, self-attentive readout."""


def Model(d_args: dict) -> AASIST.Model:
    """The model ``back_end`` names; ``forward`` returns ``(last_hidden, logits)``, logit 1 = bona
    fide. ``freeze_ssl`` defaults to false: the paper fine-tunes the SSL model."""
    return (SEMAABackEnd if d_args.get("back_end", "AASIST") == "SEMAA" else AASISTBackEnd)(d_args)

"""Self-supervised speech (SSL) front end: frame-level features of wav2vec 2.0 / XLS-R, HuBERT or
WavLM, shared by AASIST_WAV2VEC (Tak et al., "Automatic speaker verification spoofing and deepfake
detection using wav2vec 2.0 and data augmentation", Odyssey 2022) and AMSDF's "text" view.

``ssl_path`` is a Hugging Face hub id or local directory (loaded with transformers), a
fairseq wav2vec 2.0 pre-training checkpoint file (``*.pt``, e.g. the public ``xlsr2_300m.pt``),
or a torchaudio-layout pruned encoder (``*.pth``, e.g. ``DPHuBERT-sp0.75.pth``; ``models/encoders/dphubert.py``).
The fairseq file is read with ``torch.load(weights_only=True)`` -- fairseq itself is never
imported -- and its config and state dict are mapped onto a transformers ``Wav2Vec2Model``.

Frozen (the default) follows the policy of ``models/layers/frozen.py``: no gradients,
eval mode whatever ``train()`` says, forward under ``torch.no_grad``. The learned layer weights of
``layers="weighted"`` (or a list) stay trainable either way.
"""
from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_utils import SAMPLE_RATE
from emospoof.core.checkpoint import load_state_strictly
from emospoof.core.config import ConfigError, str_to_bool
from models.encoders.dphubert import is_torchaudio_layout, load_pruned_wav2vec2
from models.encoders.hf_audio import load_hf_audio_model, prepare_waveform, waveform_settings
from models.layers.frozen import KeepsFrozen, no_grad_if

# fairseq wav2vec 2.0 parameter names -> transformers Wav2Vec2Model names; the first matching rule
# applies. Conv block i of fairseq is Sequential(conv, dropout, norm, GELU); in "layer_norm" mode the
# norm is Sequential(TransposeLast, LayerNorm, TransposeLast), hence ".2.1.".
FAIRSEQ_RENAMES = (
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.", r"feature_extractor.conv_layers.\1.layer_norm."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.", r"feature_extractor.conv_layers.\1.layer_norm."),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^mask_emb$", "masked_spec_embed"),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.pos_conv\.0\.", "encoder.pos_conv_embed.conv."),
    (r"\.self_attn_layer_norm\.", ".layer_norm."),
    (r"\.self_attn\.", ".attention."),
    (r"\.fc1\.", ".feed_forward.intermediate_dense."),
    (r"\.fc2\.", ".feed_forward.output_dense."),
)
# Pre-training-only parts (quantiser, contrastive heads) that the encoder does not use.
FAIRSEQ_DROPPED = ("quantizer.", "project_q.", "final_proj.", "target_glu.", "project_inp.")
# Pickled objects found in fairseq checkpoints besides tensors and containers: the argparse
# Namespace of older checkpoints ("args") and numpy scalars in their training statistics.
# numpy 2 renamed numpy.core to numpy._core; checkpoints written under numpy 1 use the old name.
_NUMPY_SCALAR = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
FAIRSEQ_SAFE_GLOBALS = [argparse.Namespace, np.dtype, (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),
                        (_NUMPY_SCALAR, "numpy._core.multiarray.scalar")] + [
    type(np.dtype(kind)) for kind in (np.float64, np.float32, np.int64, np.int32, np.bool_)]


def validate_ssl_layers(layers: object, key: str) -> None:
    """``"last"``, ``"weighted"`` or a non-empty list of distinct non-negative hidden-state indices."""
    if layers in ("last", "weighted"):
        return
    if not (isinstance(layers, (list, tuple)) and layers and len(set(layers)) == len(layers)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)):
        raise ConfigError(f"{key}: expected 'last', 'weighted' or a list of distinct hidden-state indices "
                          f"(0 = transformer input), got {layers!r}")


# model_config keys of every model with an SSL encoder (AASIST_WAV2VEC, AMSDF).
SSL_CONFIG_KEYS = {"ssl_path", "ssl_layers", "freeze_ssl", "ssl_gradient_checkpointing", "ssl_normalize"}


def _ssl_switches(model_config: dict, freeze_default: bool) -> dict:
    """The boolean SSL keys of ``model_config`` as :class:`SSLEncoder` arguments (``ssl_normalize``
    absent or null: as the feature extractor says)."""
    normalize = model_config.get("ssl_normalize")
    return {
        "freeze": str_to_bool(model_config.get("freeze_ssl", freeze_default), "model_config.freeze_ssl"),
        "gradient_checkpointing": str_to_bool(model_config.get("ssl_gradient_checkpointing", False),
                                              "model_config.ssl_gradient_checkpointing"),
        "normalize": None if normalize is None else str_to_bool(normalize, "model_config.ssl_normalize"),
    }


def validate_ssl_config(model_config: dict, freeze_default: bool) -> None:
    """Config-time checks of the SSL keys (nothing is loaded)."""
    if not model_config.get("ssl_path"):
        raise ConfigError("config is missing the required key 'model_config.ssl_path' "
                          "(hub id, local directory or fairseq .pt file)")
    validate_ssl_layers(model_config.get("ssl_layers", "last"), "model_config.ssl_layers")
    _ssl_switches(model_config, freeze_default)


def ssl_encoder_from_config(model_config: dict, freeze_default: bool) -> SSLEncoder:
    """The :class:`SSLEncoder` that the SSL keys of ``model_config`` describe."""
    return SSLEncoder(model_config["ssl_path"], model_config.get("ssl_layers", "last"),
                      **_ssl_switches(model_config, freeze_default))


def _read_checkpoint(path: Path) -> dict:
    """The checkpoint dict, unpickled with ``weights_only`` and a small allow-list; anything else
    (e.g. omegaconf objects) is refused with a ConfigError rather than unpickled."""
    try:
        with torch.serialization.safe_globals(FAIRSEQ_SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file or pickled objects outside the allow-list
        raise ConfigError(f"{path}: not a loadable SSL checkpoint ({str(err).strip().splitlines()[0]})") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{path}: not an SSL checkpoint (expected a dict)")
    return checkpoint


def _fairseq_sections(checkpoint: dict, path: Path) -> tuple[dict, dict]:
    """(model config, task config) of a hydra-era checkpoint ("cfg") or an older one ("args")."""
    if isinstance(checkpoint.get("cfg"), dict):
        model_cfg, task_cfg = checkpoint["cfg"].get("model"), checkpoint["cfg"].get("task") or {}
    elif isinstance(checkpoint.get("args"), argparse.Namespace):
        model_cfg = task_cfg = vars(checkpoint["args"])
    else:
        raise ConfigError(f"{path}: fairseq checkpoint without a 'cfg' or 'args' section")
    if not isinstance(model_cfg, dict):
        raise ConfigError(f"{path}: fairseq checkpoint without a model config")
    name = model_cfg.get("_name", model_cfg.get("arch", "wav2vec2"))
    if name != "wav2vec2" or any(key.startswith("w2v_encoder.") for key in checkpoint["model"]):
        raise ConfigError(f"{path}: only fairseq wav2vec 2.0 / XLS-R pre-training checkpoints can be mapped "
                          f"(found model {name!r}); use a transformers hub id or directory for others")
    if model_cfg.get("pos_conv_depth", 1) != 1:
        raise ConfigError(f"{path}: pos_conv_depth {model_cfg['pos_conv_depth']} is not supported")
    return model_cfg, task_cfg


def _conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4", parsed
    without ``eval``: only list and tuple literals of integers joined by ``+`` and ``*``."""
    def value(node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported expression {ast.dump(node)}")

    layers = value(ast.parse(spec, mode="eval").body)
    if not all(isinstance(layer, tuple) and len(layer) == 3 for layer in layers):
        raise ValueError("expected (channels, kernel, stride) triples")
    return layers


def fairseq_to_transformers_config(model_cfg: dict):
    """A ``Wav2Vec2Config`` equivalent to fairseq's wav2vec 2.0 model config."""
    from transformers import Wav2Vec2Config

    conv = _conv_layers(model_cfg.get("conv_feature_layers", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"))
    layer_norm_first = bool(model_cfg.get("layer_norm_first", False))
    return Wav2Vec2Config(
        hidden_size=model_cfg.get("encoder_embed_dim", 768),
        num_hidden_layers=model_cfg.get("encoder_layers", 12),
        num_attention_heads=model_cfg.get("encoder_attention_heads", 12),
        intermediate_size=model_cfg.get("encoder_ffn_embed_dim", 3072),
        hidden_act=model_cfg.get("activation_fn", "gelu"),
        conv_dim=[c for c, _, _ in conv], conv_kernel=[k for _, k, _ in conv], conv_stride=[s for _, _, s in conv],
        conv_bias=bool(model_cfg.get("conv_bias", False)),
        feat_extract_norm="layer" if model_cfg.get("extractor_mode", "default") == "layer_norm" else "group",
        do_stable_layer_norm=layer_norm_first,
        num_conv_pos_embeddings=model_cfg.get("conv_pos", 128),
        num_conv_pos_embedding_groups=model_cfg.get("conv_pos_groups", 16),
        hidden_dropout=model_cfg.get("dropout", 0.1), activation_dropout=model_cfg.get("activation_dropout", 0.0),
        attention_dropout=model_cfg.get("attention_dropout", 0.1),
        feat_proj_dropout=model_cfg.get("dropout_input", 0.0), layerdrop=model_cfg.get("encoder_layerdrop", 0.0),
        layer_norm_eps=1e-5, apply_spec_augment=False,
    )


def fairseq_state_to_transformers(state: dict, hidden_size: int) -> dict:
    """Rename a fairseq wav2vec 2.0 state dict to ``Wav2Vec2Model`` names (pre-training heads dropped).
    fairseq has no feature projection when the convolution and transformer sizes agree; transformers
    always has one, which then becomes the identity."""
    renamed = {}
    for name, tensor in state.items():
        if name.startswith(FAIRSEQ_DROPPED):
            continue
        for pattern, replacement in FAIRSEQ_RENAMES:
            name, count = re.subn(pattern, replacement, name)
            if count:
                break
        renamed[name] = tensor
    if "feature_projection.projection.weight" not in renamed:
        renamed["feature_projection.projection.weight"] = torch.eye(hidden_size)
        renamed["feature_projection.projection.bias"] = torch.zeros(hidden_size)
    return renamed


def load_ssl_file(path: Path) -> tuple[nn.Module, int, bool]:
    """(model, sampling rate, normalise input) from a checkpoint file: a fairseq wav2vec 2.0
    pre-training checkpoint (``{"model", "cfg" | "args"}``) or a torchaudio-layout one such as
    DPHuBERT's (``{"state_dict", "config"}``, :mod:`models.encoders.dphubert`; the model normalises the
    waveform itself if its config says so)."""
    checkpoint = _read_checkpoint(path)
    if is_torchaudio_layout(checkpoint):
        return load_pruned_wav2vec2(checkpoint, path), SAMPLE_RATE, False
    if not isinstance(checkpoint.get("model"), dict):
        raise ConfigError(f"{path}: neither a fairseq checkpoint (a 'model' state dict) nor a torchaudio-layout "
                          f"one ('state_dict' and 'config', as DPHuBERT's)")
    return load_fairseq_wav2vec2(checkpoint, path)


def load_fairseq_wav2vec2(checkpoint: dict, path: Path) -> tuple[nn.Module, int, bool]:
    """(transformers ``Wav2Vec2Model``, sampling rate, normalise input) from a fairseq checkpoint."""
    from transformers import Wav2Vec2Model

    model_cfg, task_cfg = _fairseq_sections(checkpoint, path)
    try:
        config = fairseq_to_transformers_config(model_cfg)
    except (ValueError, SyntaxError, TypeError) as err:
        raise ConfigError(f"{path}: unreadable fairseq model config ({err})") from None
    model = Wav2Vec2Model(config)
    state = fairseq_state_to_transformers(checkpoint["model"], config.hidden_size)
    load_state_strictly(model, state, f"{path}: fairseq weights do not fit the mapped model")
    return model, int(task_cfg.get("sample_rate", SAMPLE_RATE)), bool(task_cfg.get("normalize", False))


class SSLEncoder(KeepsFrozen):
    """16 kHz waveforms (batch, samples) -> SSL features (batch, frames, ``output_dim``).

    ``layers``: ``"last"`` (the model's output), ``"weighted"`` (a learned softmax-weighted sum of
    all hidden states, as in SUPERB: 0 = transformer input, i = output of layer i, the last one
    being the model's output) or a list of hidden-state indices combined the same way (a
    one-element list selects that layer). The input is resampled and normalised as the
    checkpoint's feature extractor (or fairseq task config) says, unless ``normalize`` (zero mean,
    unit variance per utterance or not) overrides it: Tak et al.'s code feeds fairseq the raw
    waveform, so weights fine-tuned there need ``normalize=False`` to see the input they were trained on.
    ``gradient_checkpointing`` trades compute for memory when the SSL model is fine-tuned.
    """

    def __init__(self, ssl_path: str, layers: str | list[int] = "last", freeze: bool = True,
                 gradient_checkpointing: bool = False, key: str = "model_config.ssl_path",
                 normalize: bool | None = None) -> None:
        super().__init__()
        from transformers import AutoModel

        validate_ssl_layers(layers, key.rsplit(".", 1)[0] + ".ssl_layers")
        if not isinstance(ssl_path, str) or not ssl_path:
            raise ConfigError(f"{key}: a hub id, local directory or fairseq .pt file is required")
        if ssl_path.endswith((".pt", ".pth")):
            if not Path(ssl_path).is_file():
                raise ConfigError(f"{key}: SSL checkpoint not found: {ssl_path}")
            self.model, self.sample_rate, self.normalize = load_ssl_file(Path(ssl_path))
        else:
            self.model, extractor = load_hf_audio_model(ssl_path, AutoModel, key)
            self.sample_rate, self.normalize = waveform_settings(extractor)
        if normalize is not None:
            self.normalize = normalize
        # Time masking is a pre-training device; the countermeasure sees unmasked features
        # (Tak et al. call the SSL model with mask=False).
        self.model.config.apply_spec_augment = False
        self.output_dim = self.model.config.hidden_size
        self.num_hidden_states = self.model.config.num_hidden_layers + 1
        self.layers = layers
        if isinstance(layers, (list, tuple)) and max(layers) >= self.num_hidden_states:
            raise ConfigError(f"{key.rsplit('.', 1)[0]}.ssl_layers: {ssl_path!r} has hidden states "
                              f"0..{self.num_hidden_states - 1}, got {list(layers)}")
        if layers != "last":
            # LayerDrop (random layers skipped in training) would change which hidden states exist.
            self.model.config.layerdrop = 0.0
            count = self.num_hidden_states if layers == "weighted" else len(layers)
            self.layer_weights = nn.Parameter(torch.zeros(count))  # softmax of zeros: the plain mean
        self.frozen = freeze
        if freeze:
            self.freeze_part("model")
        if gradient_checkpointing:  # renamed activation checkpointing in transformers 5
            getattr(self.model, "activation_checkpointing_enable", self.model.gradient_checkpointing_enable)()

    def frame_count(self, samples: int) -> int:
        """Frames the encoder gives for ``samples`` 16 kHz samples (its convolutions, no padding)."""
        frames = round(samples * self.sample_rate / SAMPLE_RATE)
        for layer in self.model.feature_extractor.conv_layers:
            frames = (frames - layer.conv.kernel_size[0]) // layer.conv.stride[0] + 1
        return frames

    def _hidden(self, values: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.layers == "last":
            return self.model(input_values=values).last_hidden_state
        output = self.model(input_values=values, output_hidden_states=True)
        # The last entry is the model's output itself: recent transformers versions list the last
        # layer's output before the final LayerNorm of pre-LN models (XLS-R) there instead.
        return output.hidden_states[:-1] + (output.last_hidden_state,)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        values = prepare_waveform(wave, self.sample_rate, self.normalize)
        with no_grad_if(self.frozen):
            hidden = self._hidden(values)
        if self.layers == "last":
            return hidden.float()
        chosen = hidden if self.layers == "weighted" else [hidden[i] for i in self.layers]
        weights = torch.softmax(self.layer_weights, dim=0)
        return torch.einsum("l,lbtd->btd", weights, torch.stack(chosen).float())

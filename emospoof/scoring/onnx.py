"""ONNX export of a countermeasure and scoring with onnxruntime.

The exported graph takes ``waveform`` (batch, nb_samp) and returns ``logits`` (batch, 2), logit 1
bona fide; the window length is fixed at export (the graph pools keep a constant node count).
Exported with the TorchScript-based exporter (``dynamo=False``), which needs no onnxscript.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emospoof.core.checkpoint import write_atomically
from emospoof.core.config import ConfigError
from emospoof.scoring.windows import Forward


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(waveform)[1]


def export_onnx(model: nn.Module, path: Path, nb_samp: int) -> float | None:
    """Write ``model`` as ONNX (input ``waveform`` (batch, nb_samp), output ``logits``) and return
    the largest logit difference to PyTorch on a random window, or None without onnxruntime."""
    if importlib.util.find_spec("onnx") is None:  # torch's exporter serialises through it
        raise ConfigError("ONNX export needs the onnx package: pip install onnx onnxruntime")
    # Export must trace eval mode: in training mode dropout and batch statistics would be baked in.
    wrapper = _LogitsOnly(model).eval()
    example = torch.randn(2, nb_samp, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # Node counts of the graph pools become constants: right, as the window length is fixed.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            write_atomically(path, lambda tmp: torch.onnx.export(
                wrapper, (example,), str(tmp), input_names=["waveform"], output_names=["logits"], opset_version=17,
                dynamo=False, dynamic_axes={"waveform": {0: "batch"}, "logits": {0: "batch"}}))
    except Exception as err:  # the exporter raises many types; any of them means "cannot export"
        raise ConfigError(f"this model cannot be exported to ONNX ({str(err).splitlines()[0]})") from None
    try:
        forward, _ = onnx_forward(path, threads=None)
    except ConfigError:
        return None
    check = example[:1]  # another batch size than traced: the batch axis must really be dynamic
    with torch.inference_mode():
        expected = wrapper(check).numpy()
    return float(np.abs(forward(check) - expected).max())


def onnx_forward(path: Path, threads: int | None) -> tuple[Forward, int]:
    """An onnxruntime CPU session as a forward function, and the window length it expects."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("--onnx needs onnxruntime: pip install onnxruntime") from None
    if not path.is_file():
        raise ConfigError(f"ONNX model not found: {path}")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise ConfigError(f"{path}: not a loadable ONNX model ({str(err).splitlines()[0]})") from None
    waveform = session.get_inputs()[0]
    if len(waveform.shape) != 2 or not isinstance(waveform.shape[1], int):
        raise ConfigError(f"{path}: expected an input of shape (batch, samples), found {waveform.shape}")

    def forward(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {waveform.name: x.numpy()})[0]
    return forward, waveform.shape[1]

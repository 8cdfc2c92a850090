"""Speed settings shared by training, evaluation and scoring: numeric precision (autocast,
gradient scaling, TF32), ``torch.compile`` and cuDNN autotuning.

``precision`` is ``bf16`` (bfloat16 autocast: float32's range, so no gradient scaling; the default
on GPUs that compute in bfloat16 natively), ``fp16`` (float16 autocast with gradient scaling, for
older GPUs) or ``fp32`` (everything in float32 with TF32 off, the setting for parity checks against
reference outputs). ``auto`` picks bf16 on GPUs of compute capability 8.0 (Ampere) or newer, fp16
on older CUDA GPUs (a V100 or T4 runs bfloat16 only emulated, slowly, although
``torch.cuda.is_bf16_supported()`` says True there), and fp32 on CPUs, where reduced precision is
rarely faster.
"""
from __future__ import annotations

import time
import weakref
from contextlib import AbstractContextManager
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from emospoof.core.config import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The first compute capability whose tensor cores compute in bfloat16 (Ampere: A100, RTX 30xx).
NATIVE_BF16_CAPABILITY = (8, 0)
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_warned_emulated: set[str] = set()


def check_precision(value: object, key: str = "precision") -> str:
    if value not in PRECISIONS:
        raise ConfigError(f"config key '{key}': expected one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes in bfloat16 natively (compute capability 8.0 or newer).
    ``torch.cuda.is_bf16_supported()`` is no guide: it is True on a V100 (7.0), which emulates it."""
    return tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16_CAPABILITY


def resolve_precision(requested: str | None, device: torch.device) -> str:
    """``bf16``, ``fp16`` or ``fp32`` for ``requested`` (``auto`` or None: the device's best:
    bf16 on GPUs with native bfloat16, fp16 on older GPUs, fp32 on CPUs). An explicit ``bf16`` on
    an older GPU runs, emulated and slowly, after a one-line warning (once per process)."""
    if requested not in (None, "auto"):
        precision = check_precision(requested)
        if precision == "bf16" and device.type == "cuda" and not native_bf16(device):
            _warn_emulated_bf16(device)
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if native_bf16(device) else "fp16"


def _warn_emulated_bf16(device: torch.device) -> None:
    name = torch.cuda.get_device_name(device)
    if name not in _warned_emulated:
        _warned_emulated.add(name)
        major, minor = torch.cuda.get_device_capability(device)
        tqdm.write(f"warning: precision bf16 on {name} (compute capability {major}.{minor}) is emulated and "
                   f"slow; fp16 (precision auto) uses its tensor cores")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast to the precision's dtype (nothing for fp32)."""
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision, torch.float32),
                          enabled=precision in AUTOCAST_DTYPES)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling keeps float16 gradients from underflowing; bf16 and fp32 need none."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def set_tf32(precision: str) -> None:
    """TF32 tensor cores for the float32 parts of a reduced-precision run; off in fp32, whose
    results must match float32 references (with TF32, official AASIST logits on an H200 moved
    by up to 1.9e-3, against 5e-5 on CPU)."""
    allowed = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


def first_call_timed(fn: Callable, message: str) -> Callable:
    """``fn`` whose first call (where torch.compile compiles) prints how long it took."""
    done = False

    def call(*args, **kwargs):
        nonlocal done
        if done:
            return fn(*args, **kwargs)
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        done = True
        tqdm.write(f"warm-up: {message} took {time.perf_counter() - started:.1f} s (torch.compile)")
        return result
    return call


def compiled(model: nn.Module) -> Callable:
    """``torch.compile(model)``, compiled once per model object and reused (dev scoring after
    every epoch does not compile again); the first call reports the compile time."""
    if model not in _compiled:
        _compiled[model] = first_call_timed(torch.compile(model), f"compiling {type(model).__name__} for scoring")
    return _compiled[model]

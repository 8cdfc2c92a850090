"""Reading and writing weights and training checkpoints safely.

Everything is read with ``torch.load(weights_only=True)``, so a checkpoint can hold tensors and
plain containers but never run code. Weights load strictly: a mismatch is one ConfigError naming
the missing and unexpected keys. Training checkpoints are written atomically, and the previous
one is kept beside the new one (``checkpoint.prev.pth``), so a file torn by a crash or a full disk
never costs more than one epoch.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from emospoof.core.config import ConfigError

CHECKPOINT = "checkpoint.pth"
PREVIOUS = "checkpoint.prev.pth"


def load_state_strictly(model: nn.Module, state: dict, problem: str) -> None:
    """``model.load_state_dict(state)`` with every key required; a mismatch is one ConfigError,
    ``problem`` followed by the missing and unexpected keys or the first shape conflict."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        conflict = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
        raise ConfigError(f"{problem} ({conflict})") from None
    if missing or unexpected:
        raise ConfigError(f"{problem} (missing keys: {missing[:5]}, unexpected keys: {unexpected[:5]})")


def read_state(path: Path, device: torch.device | str = "cpu", what: str = "state dict") -> dict:
    """A dict saved with ``torch.save``, read with ``weights_only``; a missing, corrupt or unsafe
    file is one ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torn file, not a torch file, or pickled objects weights_only refuses
        raise ConfigError(f"{path}: not a loadable {what} ({str(err).strip().splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a {what} (a dict), found {type(state).__name__}")
    return state


def load_weights(model: nn.Module, path: Path, device: torch.device, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict safely and strictly. A model with a ``convert_state_dict(state)`` method
    (another code base's published layout) has it applied first; then keys starting with one of
    ``ignore_prefixes`` (parts of a checkpoint the model does not use) are dropped."""
    if not path.is_file():
        raise ConfigError(f"model weights not found: {path}")
    state = read_state(path, device)
    if hasattr(model, "convert_state_dict"):
        try:
            state = model.convert_state_dict(state)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    load_state_strictly(model, {key: value for key, value in state.items() if not key.startswith(ignore_prefixes)},
                        f"{path}: weights do not fit the model")


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` through a temporary file, so an interrupted save never leaves a torn file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(state: dict, run_dir: Path) -> None:
    """Write ``run_dir/checkpoint.pth``; the one it replaces becomes ``checkpoint.prev.pth``."""
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    if (run_dir / CHECKPOINT).exists():
        os.replace(run_dir / CHECKPOINT, run_dir / PREVIOUS)
    os.replace(tmp, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path, warn: Callable[[str], None] | None = None) -> dict:
    """The newest readable training checkpoint of ``run_dir``. A corrupt ``checkpoint.pth`` is
    reported in one line and the previous good one is used; without one, that line is the error."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    latest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not latest.is_file() and not previous.is_file():
        raise ConfigError(f"--resume: no checkpoint in {run_dir} ({latest} not found)")
    try:
        return read_state(latest, what="checkpoint")
    except ConfigError as err:
        if not previous.is_file():
            raise ConfigError(f"{latest} is corrupt and no previous checkpoint was kept "
                              f"({str(err).split(' (', 1)[-1].rstrip(')')})") from None
        state = read_state(previous, what="checkpoint")
        warn(f"warning: {latest} is corrupt or missing; continuing from the previous good checkpoint "
             f"{previous} (epoch {state.get('epoch', '?')})")
        return state


def rng_state(generator: torch.Generator) -> dict:
    """Every RNG a run draws from, in a form ``torch.load(weights_only=True)`` accepts (numpy's
    key array stored as a list)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        # This process's GPU only: under torchrun, reading every GPU's state would open a CUDA
        # context on each of them in every process.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
        "loader": generator.get_state(),
    }


def restore_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])
    generator.set_state(state["loader"])

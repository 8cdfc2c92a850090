"""Reading and writing weights and training checkpoints safely.

Weight files the project writes (a run's ``weights/best``, ``swa`` and ``final``, the ACRNN
emotion classifier) are safetensors files (:func:`save_weights`): tensors and their names, nothing
that runs on load. Weight files of other code bases and of older runs (``.pth``) and the training
checkpoints (``checkpoint.pth``: optimiser, scheduler and RNG state besides the model) are read
with ``torch.load(weights_only=True)``, so they can hold tensors and plain containers but never run
code. :func:`read_state` tells the two formats apart by their first bytes, whatever the file is
called. Weights load strictly: a mismatch is one ConfigError naming the missing and unexpected keys.
Every weight file and training checkpoint the project writes goes through :func:`write_atomically`
(temporary file in the same folder, fsync, ``os.replace``), so a kill during a save never leaves a
torn file; the previous training checkpoint is also kept beside the new one (``checkpoint.prev.pth``).
"""
from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import safetensors.torch
import torch
from torch import nn

from emospoof.core.config import ConfigError

CHECKPOINT = "checkpoint.pth"
PREVIOUS = "checkpoint.prev.pth"
WEIGHTS_SUFFIX = ".safetensors"  # every weight file the project writes
LEGACY_SUFFIX = ".pth"  # weight files of the reference code, other code bases and older runs


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
    """A dict of tensors from a safetensors file, or a dict saved with ``torch.save`` read with
    ``weights_only``, told apart by content; a missing, corrupt or unsafe file is one ConfigError
    naming it."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        if is_safetensors(path):
            state = safetensors.torch.load_file(path, device=str(device))
        else:  # through a handle: torch.load would take any file named *.safetensors for one
            with open(path, "rb") as handle:
                state = torch.load(handle, map_location=device, weights_only=True)
    except Exception as err:  # torn file, not a weight file, or pickled objects weights_only refuses
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{path}: not a loadable {what} ({reason})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a {what} (a dict), found {type(state).__name__}")
    return state


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` is (or was meant to be) a safetensors file: one starts with the 8-byte length
    of its JSON header, whose first character, '{', is byte 8. ``torch.save`` files never have it
    there (a zip archive has its compression method, a legacy file its pickled magic number)."""
    with open(path, "rb") as handle:
        return handle.read(9)[8:] == b"{"


def weights_file(folder: Path, name: str) -> Path:
    """``folder/<name>.safetensors``, as the project writes it, or the ``.pth`` of an older run or
    another code base when only that exists."""
    path = folder / (name + WEIGHTS_SUFFIX)
    legacy = folder / (name + LEGACY_SUFFIX)
    return legacy if not path.is_file() and legacy.is_file() else path


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


def write_atomically(path: Path, write: Callable[[Path], None], keep_previous: Path | None = None) -> None:
    """The one way the project writes a weight or checkpoint file: ``write(tmp)`` writes the whole
    file under a temporary name in ``path``'s folder, which is flushed to disk (fsync) and renamed
    over ``path`` (``os.replace``, atomic on one file system). Interrupted at any point (an
    exception, a kill, a full disk), ``path`` holds the previous file or the new one, never a torn
    one. With ``keep_previous``, the file ``path`` held is moved there first."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        _fsync(tmp)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)  # the rename itself


def write_folder_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary folder beside ``folder`` (a Hugging Face model folder:
    weights, config, feature extractor); each of its files then replaces its namesake in
    ``folder`` through :func:`write_atomically`, so every file there is always a whole one."""
    folder = folder.resolve()  # "." has no name to put a temporary folder beside
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for written in sorted(tmp.iterdir()):
            write_atomically(folder / written.name, lambda target: os.replace(written, target))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # a folder cannot be opened on some systems; the rename is then as safe as they make it
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_weights(state: dict, path: Path) -> None:
    """A state dict as a safetensors file (names, shapes, dtypes and bytes: nothing in it runs
    when it is loaded), written atomically (:func:`write_atomically`)."""
    tensors = standalone_tensors(state)
    write_atomically(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata={"format": "pt"}))


def standalone_tensors(state: dict) -> dict[str, torch.Tensor]:
    """The tensors of a state dict as safetensors stores them: on the CPU, contiguous (a
    channels-last weight is repacked) and none sharing memory with another (a tied one is copied)."""
    tensors, seen = {}, set()
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: a weight file holds tensors only, not {type(value).__name__}")
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors


def save_checkpoint(state: dict, run_dir: Path) -> None:
    """Write ``run_dir/checkpoint.pth`` atomically; the one it replaces becomes ``checkpoint.prev.pth``."""
    write_atomically(run_dir / CHECKPOINT, lambda tmp: torch.save(state, tmp), keep_previous=run_dir / PREVIOUS)


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

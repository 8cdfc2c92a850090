"""Shared test fixtures: where ../shared lives and small helpers to write audio."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shared_path() -> Path:
    return Path(os.environ.get("EMOSPOOF_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only reference folder; tests needing it skip in a clone without it."""
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"shared reference folder not found at {path} (set EMOSPOOF_SHARED)")
    return path


@pytest.fixture(scope="session")
def tiny_ser_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised wav2vec 2.0 emotion classifier saved as a Hugging Face
    directory (config, safetensors weights, feature extractor), loaded by path in the tests."""
    from models.ser import save_random_hf_ser
    return save_random_hf_ser(tmp_path_factory.mktemp("ser") / "tiny_wav2vec2")


@pytest.fixture
def single_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster
    than two that contend with other processes (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

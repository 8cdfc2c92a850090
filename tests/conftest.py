"""Shared test fixtures: where ../shared lives and small helpers to write audio."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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

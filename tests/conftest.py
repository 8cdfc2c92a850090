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


@pytest.fixture(scope="session")
def tiny_ssl_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised wav2vec 2.0 encoder (hidden size 32, 2 layers) saved as a
    Hugging Face directory, for the SSL front end's tests."""
    from models.ssl import save_random_ssl
    return save_random_ssl(tmp_path_factory.mktemp("ssl") / "tiny_wav2vec2")


@pytest.fixture
def single_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster
    than two that contend with other processes (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def interrupted_run(monkeypatch, main_args: list[str], call: int = 2) -> None:
    """Run ``main.main(main_args)`` and stop it as a kill would (KeyboardInterrupt) at the
    ``call``-th ``score_trials`` call, i.e. during dev scoring of epoch ``call``; the checkpoint of
    the epochs before stays for ``--resume``."""
    import main as main_module

    original = main_module.score_trials
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(main_module, "score_trials", interrupting)
    with pytest.raises(KeyboardInterrupt):
        main_module.main(main_args)
    monkeypatch.setattr(main_module, "score_trials", original)


def assert_learns(model, make_batch, steps: int, lr: float, n_test: int) -> None:
    """Adam on fresh batches from ``make_batch(n, rng)`` must halve the loss and, in eval mode,
    rank every held-out bona fide clip above every spoof clip by logit 1 - logit 0."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x_test, y_test = make_batch(n_test, rng)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        x, y = make_batch(8, rng)
        loss = F.cross_entropy(model(x)[1], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    model.eval()
    with torch.no_grad():
        logits = model(x_test)[1]
    scores = logits[:, 1] - logits[:, 0]
    assert scores[y_test == 1].min() > scores[y_test == 0].max(), scores

"""The threaded CPU forward of inference.py gives each thread its own replica of the model: with
threads forced to run the emotion branch at the same moment, every SER backend and AMSDF score
exactly as one thread does, and openSMILE has one extractor per thread."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from emospoof.scoring.windows import threaded_cpu_forward
from models import build_model
from models.emotion import egemaps
from models.layers.fused import optimise_for_cpu
from tests.conftest import REPO, TINY_AASIST

EGEMAPS_STATS = REPO / "models/weights/ser_egemaps_ravdess.json"
TINY_AMSDF = {
    "architecture": "AMSDF", "nb_samp": 8000, "first_conv": 32, "filts": [20, [1, 4], [4, 4], [4, 8], [8, 8]],
    "gat_dim": 16, "text_dim": 32, "emotion_pool": [3, 1], "view_norm": "feature",
    "ser_config": {"backend": "acrnn", "ser_path": None, "acrnn_dims": [8, 16, 32, 16]},
}


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The threaded forward sets torch to one thread per process; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def waves(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.uniform(0.05, 0.5, (n, 1)) * rng.standard_normal((n, samples)), dtype=torch.float32)


def emotion_model(backend: str, tiny_ser_dir) -> torch.nn.Module:
    ser_config = {
        "hf": {"backend": "hf", "ser_path": str(tiny_ser_dir), "layer": "penultimate"},
        "acrnn": {"backend": "acrnn", "ser_path": None, "acrnn_dims": [4, 8, 16, 8]},
        "egemaps": {"backend": "egemaps", "ser_path": str(EGEMAPS_STATS)},
    }[backend]
    torch.manual_seed(0)
    # the SER runs inside the forward (per window), where per-call state could mix between threads
    model = build_model({"architecture": "AASIST_Concat", **TINY_AASIST, "ser_config": ser_config,
                         "emotion_source": "window"}).eval()
    if backend == "acrnn":  # statistics of its own, so that a BatchNorm mix-up would show
        bn = model.ser.encoder.net.bn
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return model


def meet_inside(module: torch.nn.Module, parties: int) -> threading.Barrier:
    """Every call of ``module`` waits at its start until ``parties`` calls have begun: the threads'
    calls interleave there for certain. The hook is part of the module, so replicas carry it."""
    barrier = threading.Barrier(parties, timeout=60)

    def wait(*_) -> None:
        barrier.wait()

    module.register_forward_pre_hook(wait)
    return barrier


def assert_threads_score_as_one(model: torch.nn.Module, inside: str, x: torch.Tensor, threads: int) -> None:
    """``threaded_cpu_forward`` of the CPU twin on ``threads`` threads equals one thread's forward of
    each thread's share, bit for bit, over several calls in which the threads meet inside the
    module named ``inside`` (where per-call state would be overwritten by another thread)."""
    fast = optimise_for_cpu(model)
    single = threaded_cpu_forward(fast, 1)
    expected = np.concatenate([single(part) for part in x.tensor_split(threads)])
    meet_inside(fast.get_submodule(inside), threads)
    forward = threaded_cpu_forward(fast, threads)
    for _ in range(3):
        np.testing.assert_array_equal(forward(x), expected)


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("backend,inside", [
    ("hf", "ser.encoder.model.classifier"),  # between the hook that takes the pooled input and its use
    ("acrnn", "ser.encoder"),
    ("egemaps", "ser.encoder"),
])
def test_emotion_backends_score_the_same_on_several_threads(tiny_ser_dir, backend, inside, threads):
    assert_threads_score_as_one(emotion_model(backend, tiny_ser_dir), inside, waves(8, 4000), threads)


@pytest.mark.parametrize("threads", [2, 4])
def test_amsdf_scores_the_same_on_several_threads(tiny_ssl_dir, threads):
    torch.manual_seed(0)
    model = build_model({**TINY_AMSDF, "ssl_path": str(tiny_ssl_dir)}).eval()
    assert_threads_score_as_one(model, "emo_view_extract.model", waves(4, 8000, seed=1), threads)


def test_opensmile_extractor_is_one_per_thread():
    found: dict[str, list] = {}

    def take(name: str) -> None:
        found[name] = [egemaps._smile(), egemaps._smile()]

    workers = [threading.Thread(target=take, args=(name,)) for name in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert found["a"][0] is found["a"][1] and found["b"][0] is found["b"][1]  # kept within a thread
    assert found["a"][0] is not found["b"][0]

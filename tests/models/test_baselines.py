"""RawNet2 and RawGAT-ST baselines: sizes of the shipped configs, output convention, and that each
can learn a trivial spectral task (a smoke test of the whole gradient path, not of accuracy)."""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emospoof.cm.config import load_config as load_cm_config
from emospoof.core.config import ConfigError
from models import RawNet2Spoof, RawNetGatSpoofST
from tests.conftest import REPO, assert_learns

CONFIG_DIR = REPO / "config"
SAMPLE_RATE = 16000
TOP_LEVEL_KEYS = {
    "database_path", "asv_score_path", "model_path", "batch_size", "num_epochs", "loss", "track",
    "eval_all_best", "eval_output", "cudnn_deterministic_toggle", "cudnn_benchmark_toggle",
    "model_config", "optim_config",
}
OPTIM_KEYS = {"optimizer", "amsgrad", "base_lr", "lr_min", "betas", "weight_decay", "scheduler"}


def load_config(name: str) -> dict:
    with open(CONFIG_DIR / name) as f:
        return json.load(f)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, module", [
    ("RawNet2_baseline.conf", RawNet2Spoof),
    ("RawGATST_baseline.conf", RawNetGatSpoofST),
])
def test_config_layout(name: str, module: ModuleType) -> None:
    config = load_cm_config(CONFIG_DIR / name)  # the project's validator accepts it
    assert set(config) == TOP_LEVEL_KEYS
    assert set(config["optim_config"]) == OPTIM_KEYS
    assert set(config["model_config"]) == module.CONFIG_KEYS
    assert config["model_config"]["architecture"] == module.__name__.split(".")[-1]


def test_parameter_counts_match_reference() -> None:
    rawnet2 = load_config("RawNet2_baseline.conf")["model_config"]
    assert count_parameters(RawNet2Spoof.Model(rawnet2)) == 17_621_410
    # The reference's dumped config shows filts[2] as [128, 128] (it rewrites it in place);
    # that spelling must build the same network.
    dumped = copy.deepcopy(rawnet2)
    dumped["filts"][2] = [128, 128]
    assert count_parameters(RawNet2Spoof.Model(dumped)) == 17_621_410
    rawgat = load_config("RawGATST_baseline.conf")["model_config"]
    assert count_parameters(RawNetGatSpoofST.Model(rawgat)) == 437_034


def test_invalid_model_configs_are_rejected() -> None:
    rawnet2 = load_config("RawNet2_baseline.conf")["model_config"]
    with pytest.raises(ConfigError, match="in_channels"):
        RawNet2Spoof.Model({**rawnet2, "in_channels": 2})
    rawgat = load_config("RawGATST_baseline.conf")["model_config"]
    with pytest.raises(ConfigError, match="nb_samp"):
        RawNetGatSpoofST.Model({**rawgat, "nb_samp": 4000})  # too short for a temporal graph


def test_rawnet2_forward_on_short_crop() -> None:
    torch.manual_seed(0)
    model = RawNet2Spoof.Model(load_config("RawNet2_baseline.conf")["model_config"]).eval()
    with torch.no_grad():
        hidden, logits = model(torch.randn(2, SAMPLE_RATE))
    assert hidden.shape == (2, 1024)
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()
    # Log-softmax outputs, as in the reference: CrossEntropyLoss on them is plain NLL.
    torch.testing.assert_close(logits.exp().sum(dim=1), torch.ones(2))
    target = torch.tensor([0, 1])
    torch.testing.assert_close(F.cross_entropy(logits, target), F.nll_loss(logits, target))


def test_rawgatst_forward_needs_configured_length() -> None:
    """RawGAT-ST projects a fixed number of temporal nodes, so it runs on nb_samp-long inputs
    (64 600 samples for the shipped config) rather than on an arbitrary short crop."""
    torch.manual_seed(0)
    config = load_config("RawGATST_baseline.conf")["model_config"]
    model = RawNetGatSpoofST.Model(config).eval()
    with torch.no_grad():
        hidden, logits = model(torch.randn(2, config["nb_samp"]))
        assert hidden.shape == (2, 7)
        assert logits.shape == (2, 2)
        assert torch.isfinite(logits).all()
        with pytest.raises(ValueError, match="nb_samp"):
            model(torch.randn(2, SAMPLE_RATE))


@pytest.fixture
def single_thread() -> Iterator[None]:
    """The scaled-down models gain little from a second thread, and OpenMP threads slow down
    several-fold when other jobs share the cores; one thread keeps the learning tests fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tone_batch(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """1 s clips: class 1 (bona fide) a low tone, class 0 a high tone, both in white noise."""
    labels = np.arange(n) % 2
    freqs = np.where(labels == 1, rng.uniform(200, 600, n), rng.uniform(3000, 6000, n))
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    phases = rng.uniform(0, 2 * np.pi, n)
    amplitudes = rng.uniform(0.3, 1.0, n)
    waves = amplitudes[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])
    waves = waves + 0.3 * rng.standard_normal((n, SAMPLE_RATE))
    return torch.tensor(waves, dtype=torch.float32), torch.tensor(labels)


def test_rawnet2_learns_tone_task(single_thread: None) -> None:
    """Scaled-down RawNet2 (129-tap sinc filters, narrower blocks, one 32-unit GRU layer instead
    of 17.6 M parameters) to fit a CPU test budget; the code path is the baseline's."""
    torch.manual_seed(0)
    config = {
        "architecture": "RawNet2Spoof", "nb_samp": SAMPLE_RATE, "first_conv": 128, "in_channels": 1,
        "filts": [20, [20, 20], [20, 32], [32, 32]], "blocks": [2, 4],
        "nb_fc_node": 32, "gru_node": 32, "nb_gru_layer": 1, "nb_classes": 2,
    }
    assert_learns(RawNet2Spoof.Model(config), tone_batch, steps=15, lr=3e-3, n_test=16)


def test_rawgatst_learns_tone_task(single_thread: None) -> None:
    """Scaled-down RawGAT-ST (24 sinc filters, 4-8 channel encoders, built for 1 s inputs via
    nb_samp) to fit a CPU test budget; it needs more steps than RawNet2 to leave its initial
    plateau. The code path is the baseline's."""
    torch.manual_seed(0)
    config = {
        "architecture": "RawNetGatSpoofST", "nb_samp": SAMPLE_RATE, "first_conv": 128,
        "filts": [24, [1, 4], [4, 4], [4, 8], [8, 8]],
    }
    assert_learns(RawNetGatSpoofST.Model(config), tone_batch, steps=40, lr=1e-2, n_test=16)

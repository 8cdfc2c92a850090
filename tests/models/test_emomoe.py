"""AASIST_EmoMoE: starts as AASIST, the gate follows the SER's emotion posterior, ablations act on
the gate, it learns, and an SER without an emotion classifier is refused."""
import numpy as np
import pytest
import torch

from emospoof.core.config import ConfigError
from models import build_model
from tests.conftest import TINY_AASIST, assert_learns, tone_batch

pytestmark = pytest.mark.usefixtures("single_thread")


def emomoe(tiny_ser_dir, **extra) -> torch.nn.Module:
    ser = {"backend": "hf", "ser_path": str(tiny_ser_dir), "layer": "penultimate"}
    # the gate read on each window (the per-utterance path: tests/models/test_emotion_inputs.py)
    return build_model({"architecture": "AASIST_EmoMoE", **TINY_AASIST, "ser_config": ser, "emotion_source": "window",
                        **extra})


def waves(n: int, seed: int = 0) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).standard_normal((n, 4000)), dtype=torch.float32)


@pytest.mark.parametrize("experts", ["head", "film"])
def test_starts_as_aasist(tiny_ser_dir, tmp_path, experts):
    torch.manual_seed(3)
    aasist = build_model({"architecture": "AASIST", **TINY_AASIST}).eval()
    torch.save(aasist.state_dict(), tmp_path / "aasist.pth")
    model = emomoe(tiny_ser_dir, experts=experts, aasist_path=str(tmp_path / "aasist.pth")).eval()
    assert model.ser.posterior(waves(3)).shape == (3, 5)  # the tiny SER's five emotions gate five experts
    x = waves(3, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1], aasist(x)[1], atol=1e-6, rtol=1e-5)


def test_gate_follows_the_emotion_posterior(tiny_ser_dir):
    torch.manual_seed(0)
    model = emomoe(tiny_ser_dir).eval()
    x = waves(4, seed=2)
    with torch.no_grad():
        model.set_emotion_statistics(model.raw_emotion(waves(6, seed=8)), ["angry", "happy", "sad"] * 2)
        torch.nn.init.normal_(model.heads, std=1.0)  # experts that disagree
        hidden, logits = model(x)
        posterior = model.ser.posterior(x)
        per_expert = torch.einsum("bd,kcd->bkc", hidden, model.heads) + model.head_bias
        torch.testing.assert_close(logits, (posterior[:, :, None] * per_expert).sum(dim=1), atol=1e-5, rtol=1e-5)
        # A gate that is sure of emotion k gives expert k's logits.
        sure = torch.zeros(4, 5)
        sure[:, 2] = 1
        torch.testing.assert_close(model.mix(hidden, sure), per_expert[:, 2])
        model.ablation = "zero"
        uniform = model(x)[1]
        torch.testing.assert_close(uniform, per_expert.mean(dim=1), atol=1e-5, rtol=1e-5)
        model.ablation = "shuffle"
        shuffled = model(x)[1]
    assert not torch.allclose(logits, uniform, atol=1e-4)
    assert not torch.allclose(logits, shuffled, atol=1e-4)


def test_film_experts_mix_their_modulations(tiny_ser_dir):
    torch.manual_seed(0)
    model = emomoe(tiny_ser_dir, experts="film").eval()
    x = waves(3, seed=1)
    with torch.no_grad():
        torch.nn.init.normal_(model.scale, std=0.5)
        torch.nn.init.normal_(model.shift, std=0.5)
        hidden, logits = model(x)
        p = model.ser.posterior(x)
        expected = model.aasist.classify((1 + p @ model.scale) * hidden + p @ model.shift)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("experts", ["head", "film"])
def test_learns_a_tone_task(tiny_ser_dir, experts):
    torch.manual_seed(0)
    assert_learns(emomoe(tiny_ser_dir, experts=experts), tone_batch, steps=25, lr=0.01, n_test=12)


def test_needs_an_ser_with_an_emotion_classifier(tiny_ser_dir):
    with pytest.raises(ConfigError, match="needs an SER with an emotion classifier"):
        build_model({"architecture": "AASIST_EmoMoE", **TINY_AASIST,
                     "ser_config": {"backend": "hf", "ser_path": str(tiny_ser_dir), "layer": -1}})
    with pytest.raises(ConfigError, match="model_config.experts"):
        emomoe(tiny_ser_dir, experts="router")

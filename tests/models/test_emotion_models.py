"""AASIST_Concat / AASIST_FiLM / AASIST_GFiLM: FiLM starts as the identity, conditioning is live,
the GFiLM gate reads the bona fide probability, ablations, AASIST initialisation and freezing,
and each model learns a small task."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emospoof.cm.config import load_config
from emospoof.core.config import ConfigError
from models import AASIST, build_model
from tests.conftest import REPO, TINY_AASIST, assert_learns, tone_batch
from utils import trainable_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

ALL_SITES = ["embedding", "graph", "block0", "block3", "block5"]


def ser_config(tiny_ser_dir) -> dict:
    return {"backend": "hf", "ser_path": str(tiny_ser_dir), "layer": "penultimate"}


# These tests exercise the conditioning itself on each window, as the models ran before their
# emotion was taken per utterance (tests/models/test_emotion_inputs.py covers that path).
PER_WINDOW = {"emotion_source": "window", "emotion_norm": "l2"}


def emotion_model(architecture: str, tiny_ser_dir, **extra) -> torch.nn.Module:
    return build_model({"architecture": architecture, **TINY_AASIST, "ser_config": ser_config(tiny_ser_dir),
                        **PER_WINDOW, **extra})


def waves(n: int, seed: int = 0) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).standard_normal((n, 4000)), dtype=torch.float32)


def with_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Emotion statistics from eight 'training' utterances of four emotion classes."""
    with torch.no_grad():
        model.set_emotion_statistics(model.raw_emotion(waves(8, seed=9)), ["angry", "sad", "calm", "happy"] * 2)
    return model


@pytest.fixture(scope="module")
def aasist_weights(tmp_path_factory):
    """A tiny AASIST with non-trivial (perturbed) BatchNorm statistics, saved as a state dict."""
    torch.manual_seed(1)
    model = AASIST.Model(TINY_AASIST)
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(waves(4, seed))
    path = tmp_path_factory.mktemp("aasist") / "aasist.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


@pytest.mark.parametrize("architecture", ["AASIST_FiLM", "AASIST_GFiLM"])
@pytest.mark.parametrize("sites", [["embedding"], ALL_SITES], ids=["embedding", "all-sites"])
def test_film_starts_as_the_unconditioned_aasist(tiny_ser_dir, aasist_weights, architecture, sites):
    aasist, path = aasist_weights
    model = emotion_model(architecture, tiny_ser_dir, film_at=sites, aasist_path=str(path)).eval()
    x = waves(3, seed=5)
    with torch.no_grad():
        hidden, logits = model(x)
        ref_hidden, ref_logits = aasist(x)
    torch.testing.assert_close(logits, ref_logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(hidden, ref_hidden, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["AASIST_FiLM", "AASIST_GFiLM"])
@pytest.mark.parametrize("site", ["embedding", "graph", "block2"])
def test_changing_the_emotion_changes_the_logits(tiny_ser_dir, architecture, site):
    torch.manual_seed(0)
    model = with_statistics(emotion_model(architecture, tiny_ser_dir, film_at=[site]).eval())
    x = waves(3, seed=2)
    with torch.no_grad():
        identity = model(x)[1]
        for film in model.film.values():
            torch.nn.init.normal_(film.generator.weight, std=0.5)
        conditioned = model(x)[1]
        model.ablation = "zero"
        without_emotion = model(x)[1]
        model.ablation = "shuffle"
        shuffled = model(x)[1]
    assert not torch.allclose(conditioned, without_emotion, atol=1e-4)
    assert not torch.allclose(conditioned, shuffled, atol=1e-4)
    # Zero emotion with zero biases is the identity modulation again.
    torch.testing.assert_close(without_emotion, identity, atol=1e-6, rtol=1e-5)


def test_gfilm_gate_reads_the_bona_fide_probability(tiny_ser_dir):
    """Gate weight only on the probability input: a plain path that is sure of bona fide (logit 1)
    opens the gate (output = FiLM path), one sure of spoof closes it (output = plain path)."""
    torch.manual_seed(0)
    gated = emotion_model("AASIST_GFiLM", tiny_ser_dir).eval()
    film = emotion_model("AASIST_FiLM", tiny_ser_dir).eval()
    film.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("gate.")})
    plain = gated.aasist
    with torch.no_grad():
        torch.nn.init.normal_(gated.film["embedding"].generator.weight, std=0.5)
        film.film["embedding"].generator.weight.copy_(gated.film["embedding"].generator.weight)
        gated.gate.weight.zero_()
        gated.gate.weight[0, -1] = 40.0
        gated.gate.bias.fill_(-20.0)
        x = waves(2, seed=3)
        for bias, expected in (([-30.0, 30.0], film), ([30.0, -30.0], plain)):
            plain.out_layer.bias.copy_(torch.tensor(bias))
            torch.testing.assert_close(gated(x)[0], expected(x)[0], atol=1e-5, rtol=1e-4)


def test_ablations(tiny_ser_dir):
    """zero: no input; mean: the training mean; shuffle: the training mean of the next emotion class
    after the one the input is nearest to -- a real but wrong emotion, for any batch, alone too."""
    torch.manual_seed(0)
    model = with_statistics(emotion_model("AASIST_Concat", tiny_ser_dir, residual=False).eval())
    x = waves(3, seed=4)
    with torch.no_grad():
        raw = model.raw_emotion(x)
        real = model.emotion(x)
        torch.testing.assert_close(real, torch.nn.functional.normalize(raw, dim=-1))  # emotion_norm l2
        hidden, _ = model(x)
        torch.testing.assert_close(hidden[:, -real.size(1):], real)  # concatenated after AASIST's part
        model.ablation = "zero"
        assert torch.equal(model.emotion(x), torch.zeros_like(real))
        model.ablation = "mean"
        torch.testing.assert_close(model.emotion(x), F.normalize(model.emotion_mean, dim=-1).expand_as(real))
        model.ablation = "shuffle"
        present = [i for i in range(len(model.class_counts)) if model.class_counts[i] > 0]
        means = model.class_means[present]
        nearest = torch.cdist(raw, means).argmin(dim=1)
        expected = F.normalize(means[(nearest + 1) % len(present)], dim=-1)
        shuffled = model.emotion(x)
        torch.testing.assert_close(shuffled, expected)
        torch.testing.assert_close(model.emotion(x[:1]), shuffled[:1])  # alone: the same, no state kept
        assert not torch.allclose(shuffled, real)
        fresh = emotion_model("AASIST_Concat", tiny_ser_dir, emotion_ablation="shuffle").eval()
        with pytest.raises(ConfigError, match="training means of two emotion classes"):
            fresh.emotion(x[:1])


def test_frozen_aasist_initialised_from_weights(tiny_ser_dir, aasist_weights, tmp_path):
    aasist, path = aasist_weights
    model = emotion_model("AASIST_Concat", tiny_ser_dir, aasist_path=str(path), freeze_aasist=True)
    model.train()
    assert not model.aasist.training and model.head.training
    assert {id(p) for p in trainable_parameters(model)} == {id(p) for p in model.head.parameters()}
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=0.01)
    for seed in range(2):
        loss = F.cross_entropy(model(waves(4, seed))[1], torch.tensor([0, 1, 0, 1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(v, aasist.state_dict()[k]) for k, v in model.aasist.state_dict().items())

    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="bad.pth: weights do not fit"):
        emotion_model("AASIST_FiLM", tiny_ser_dir, aasist_path=str(tmp_path / "bad.pth"))


@pytest.mark.parametrize("architecture,extra,steps,lr", [
    ("AASIST_Concat", {"head_hidden": 16, "head_dropout": 0.1}, 30, 0.005),
    ("AASIST_FiLM", {"film_at": ["block5", "embedding"]}, 25, 0.01),
    ("AASIST_GFiLM", {"film_at": ["graph", "embedding"]}, 25, 0.01),
])
def test_model_learns_a_tone_task(tiny_ser_dir, architecture, extra, steps, lr):
    """Loss falls and every held-out bona fide clip outscores every spoof clip (logit 1 - logit 0).
    Concat learns more slowly (its AASIST part is L2-normalised), hence its own rate and steps."""
    torch.manual_seed(0)
    model = emotion_model(architecture, tiny_ser_dir, **extra)
    assert_learns(model, tone_batch, steps=steps, lr=lr, n_test=12)


def as_emomoe(model_config: dict, **extra) -> None:
    """The GFiLM devkit model section turned into EmoMoE's (no film_at; gated by the posterior)."""
    del model_config["film_at"]
    model_config.update(architecture="AASIST_EmoMoE", emotion_features="posterior", **extra)


@pytest.mark.parametrize("change,message", [
    (lambda m: m.update(film_at=["block6"]), "model_config.film_at"),
    (lambda m: m.update(film_at="embedding"), "model_config.film_at"),
    (lambda m: m.update(emotion_ablation="random"), "model_config.emotion_ablation"),
    (lambda m: m.pop("ser_config"), "model_config.ser_config"),
    (lambda m: m.update(head_hidden=8), "unknown config key 'model_config.head_hidden'"),
    (lambda m: m.update(emotion_source="window", emotion_norm="standardise"), "emotion_norm: 'standardise'"),
    (lambda m: m["ser_config"].update(freeze=False), "ser_config.freeze: false fine-tunes the SER"),
    (lambda m: as_emomoe(m, emotion_norm="l2"), "AASIST_EmoMoE's gate is the emotion posterior itself"),
])
def test_config_errors(tmp_path, change, message):
    config = json.loads((REPO / "config/AASIST_GFiLM_devkit.conf").read_text())
    change(config["model_config"])
    (tmp_path / "bad.conf").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "bad.conf")


def test_emotion_training_keys_need_an_emotion_conditioned_architecture(tmp_path):
    """AMSDF has an SER (its emotion view) but no emotion parts of the conditioned models'."""
    for config_name, key, value, accepted in (("AASIST_FiLM_devkit", "freeze_aasist_epochs", 1, True),
                                              ("AMSDF_devkit", "freeze_aasist_epochs", 1, False),
                                              ("AMSDF_devkit", "emotion_lr", 1e-3, False)):
        config = json.loads((REPO / f"config/{config_name}.conf").read_text())
        if key == "emotion_lr":
            config["optim_config"][key] = value
        else:
            config[key] = value
        (tmp_path / "c.conf").write_text(json.dumps(config))
        if accepted:
            load_config(tmp_path / "c.conf")
        else:
            with pytest.raises(ConfigError, match=key):
                load_config(tmp_path / "c.conf")


def test_the_norm_default_follows_the_source(tiny_ser_dir):
    base = {"architecture": "AASIST_FiLM", **TINY_AASIST, "ser_config": ser_config(tiny_ser_dir)}
    assert build_model(base).emotion_norm == "standardise"
    assert build_model({**base, "emotion_source": "window"}).emotion_norm == "l2"


def test_shipped_configs():
    """Hub configs: AASIST sizes and official weights; devkit configs: the AASIST-L devkit
    template's training settings, its starting weights as ``aasist_path``, and a trained SER that
    ships with the project (the eGeMAPS statistics and probe of train_ser.py on RAVDESS actors 1-8)."""
    reference = load_config(REPO / "config/AASIST.conf")["model_config"]
    template = load_config(REPO / "config/AASIST-L_devkit.conf")
    for name in ("AASIST_Concat", "AASIST_FiLM", "AASIST_GFiLM", "AASIST_EmoMoE"):
        hub = load_config(REPO / f"config/{name}.conf")
        devkit = load_config(REPO / f"config/{name}_devkit.conf")
        assert hub["model_config"]["architecture"] == devkit["model_config"]["architecture"] == name
        assert hub["model_config"]["ser_config"]["ser_path"] == "superb/wav2vec2-base-superb-er"
        assert all(hub["model_config"][k] == v for k, v in reference.items() if k != "architecture")
        assert devkit["model_config"]["ser_config"]["ser_path"] == "./models/weights/ser_egemaps_ravdess.json"
        trained = json.loads((REPO / "models/weights/ser_egemaps_ravdess.json").read_text())
        assert trained["actors"] == list(range(1, 9)) and len(trained["probe"]["labels"]) == 5
        assert devkit["model_config"].get("aasist_path") == template.get("init_weights")
        assert all(devkit["model_config"][k] == v for k, v in template["model_config"].items() if k != "architecture")
        assert {k: v for k, v in devkit.items() if k not in ("model_config", "model_path")} == \
            {k: v for k, v in template.items() if k not in ("model_config", "model_path", "init_weights")}

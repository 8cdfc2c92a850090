"""The SER branch: HF checkpoints load by path and embed as their own feature extractor and model
would; the ACRNN input recipe and orientation; freezing is real (bit-identical weights and
BatchNorm statistics after training steps, also through SWA's BatchNorm update)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from data_utils import LoadedTrial, Trial, collate_trials
from emospoof.cm.config import load_config
from emospoof.cm.training import update_bn_of_trainable
from emospoof.core.config import ConfigError
from emospoof.training.optim import create_optimizer
from models import build_model
from models.emotion.acrnn import ACRNN, acrnn_features
from models.emotion.branch import SERBranch
from tests.conftest import REPO, TINY_AASIST
from utils import trainable_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_ACRNN = {"backend": "acrnn", "ser_path": None, "acrnn_dims": [4, 8, 16, 8]}


def speech_like(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Noise with a DC offset and varying gain, so that per-utterance normalisation matters."""
    rng = np.random.default_rng(seed)
    wave = rng.uniform(0.05, 0.5, (n, 1)) * rng.standard_normal((n, samples)) + 0.1
    return torch.tensor(wave, dtype=torch.float32)


def reference_embedding(model_dir, wave: torch.Tensor, layer) -> torch.Tensor:
    """What the checkpoint's own feature extractor and model give, without the branch."""
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    rate = extractor.sampling_rate
    audio = [soxr.resample(w.numpy(), 16000, rate, quality="HQ") if rate != 16000 else w.numpy() for w in wave]
    inputs = extractor(audio, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        if layer == "penultimate":
            model = AutoModelForAudioClassification.from_pretrained(model_dir).eval()
            hidden = model.wav2vec2(inputs["input_values"]).last_hidden_state
            return model.projector(hidden).mean(dim=1)
        model = AutoModel.from_pretrained(model_dir).eval()
        return model(inputs["input_values"], output_hidden_states=True).hidden_states[layer].mean(dim=1)


@pytest.mark.parametrize("layer", [1, -1, "penultimate"])
def test_hf_embedding_matches_the_checkpoint_itself(tiny_ser_dir, layer):
    branch = SERBranch({"backend": "hf", "ser_path": str(tiny_ser_dir), "layer": layer})
    wave = speech_like(2, 6000)
    embedding = branch(wave)
    assert embedding.shape == (2, 16 if layer == "penultimate" else 32) == (2, branch.embedding_dim)
    torch.testing.assert_close(embedding, reference_embedding(tiny_ser_dir, wave, layer), atol=1e-5, rtol=1e-4)


def test_hf_audio_is_resampled_to_the_extractor_rate(tiny_ser_dir, tmp_path):
    model_dir = tmp_path / "ser8k"
    shutil.copytree(tiny_ser_dir, model_dir)
    settings = json.loads((model_dir / "preprocessor_config.json").read_text())
    (model_dir / "preprocessor_config.json").write_text(json.dumps({**settings, "sampling_rate": 8000}))
    branch = SERBranch({"backend": "hf", "ser_path": str(model_dir), "layer": -1})
    wave = speech_like(2, 8000, seed=1)
    torch.testing.assert_close(branch(wave), reference_embedding(model_dir, wave, -1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("ser_config,message", [
    ({"backend": "hf", "ser_path": "/nonexistent/ser"}, "ser_config.ser_path: directory not found: /nonexistent/ser"),
    ({"backend": "hf", "ser_path": "TINY", "layer": 7}, "ser_config.layer"),
    ({"backend": "acrnn", "ser_path": "/nonexistent/ser.pth"}, "/nonexistent/ser.pth"),
    ({"backend": "acrnn", "acrnn_dims": [4, 8]}, "ser_config.acrnn_dims"),
])
def test_bad_ser_config_is_one_line_error(tiny_ser_dir, ser_config, message):
    config = {key: (str(tiny_ser_dir) if value == "TINY" else value) for key, value in ser_config.items()}
    with pytest.raises(ConfigError) as err:
        SERBranch(config)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("ser_config,message", [
    ({"backend": "hf", "ser_path": "x", "layers": 3}, "unknown config key 'model_config.ser_config.layers'"),
    ({"backend": "wav2vec"}, "model_config.ser_config.backend"),
    ({"backend": "acrnn", "layer": 2}, "model_config.ser_config.layer"),
    ({"backend": "hf", "ser_path": "x", "freeze": "maybe"}, "model_config.ser_config.freeze"),
])
def test_ser_config_is_checked_at_config_load(tmp_path, ser_config, message):
    config = json.loads((REPO / "config/AASIST_FiLM_devkit.conf").read_text())
    config["model_config"]["ser_config"] = ser_config
    path = tmp_path / "bad.conf"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_acrnn_features_follow_the_recipe():
    t = torch.arange(16000) / 16000
    tone = 0.5 * torch.sin(2 * torch.pi * 1031.25 * t)[None]  # exactly FFT bin 33 of 512
    features = acrnn_features(tone)
    assert features.shape == (1, 3, 300, 40) and features.dtype == torch.float32
    # Time before frequency: every frame peaks in band 14, the filter whose centre is bin 33
    # (mel point 15 of 42 between 0 and 8 kHz is 1060 Hz, floor(513 * 1060 / 16000) = 33).
    assert (features[0, 0].argmax(dim=1) == 14).all()
    # A steady tone: deltas of the bands around it vanish away from the tiling seams (every 100 frames).
    assert features[0, 1:, 10:90, 12:17].abs().max() < 0.05
    assert features[0, 0, 10:90, 14].std() < 0.01
    # Louder input: log-Mel shifts by log(gain^2), deltas unchanged.
    louder = acrnn_features(4 * tone)
    shift = torch.full((300, 40), float(np.log(16)))
    torch.testing.assert_close(louder[0, 0] - features[0, 0], shift, atol=1e-3, rtol=0)
    torch.testing.assert_close(louder[0, 1:], features[0, 1:], atol=1e-3, rtol=0)


def test_acrnn_features_match_python_speech_features():
    """The recipe AMSDF trained its checkpoint with, when that package is installed."""
    psf = pytest.importorskip("python_speech_features")
    wave = speech_like(1, 30000, seed=3)[0].double()
    tiled = np.tile(wave.numpy(), 3)[:64600]
    log_mel = psf.logfbank(tiled, 16000, nfilt=40)
    delta = psf.delta(log_mel, 2)
    expected = np.stack([log_mel, delta, psf.delta(delta, 2)])[:, :300]
    np.testing.assert_allclose(acrnn_features(wave[None])[0].numpy(), expected, atol=1e-4)


def test_acrnn_rejects_frequency_before_time_and_loads_checkpoints(tmp_path):
    net = ACRNN((4, 8, 16, 8)).eval()
    features = acrnn_features(speech_like(2, 8000))
    with pytest.raises(ValueError, match="300 frames, 40 mel bands"):
        net(features.transpose(2, 3))
    # An AMSDF-style checkpoint also holds the emotion classifier (fc1, fc2), which is not used.
    state = {**net.state_dict(), "fc1.weight": torch.zeros(64, 16), "fc1.bias": torch.zeros(64),
             "fc2.weight": torch.zeros(4, 64), "fc2.bias": torch.zeros(4)}
    torch.save(state, tmp_path / "ser_acrnn.pth")
    branch = SERBranch({"backend": "acrnn", "ser_path": str(tmp_path / "ser_acrnn.pth"), "acrnn_dims": [4, 8, 16, 8]})
    wave = speech_like(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(branch(wave), net(acrnn_features(wave)))


def tone_batch(n: int, rng: np.random.Generator, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = np.arange(n) % 2
    freqs = np.where(labels == 1, rng.uniform(200, 500, n), rng.uniform(3000, 5000, n))
    t = np.arange(samples) / 16000
    waves = np.sin(2 * np.pi * freqs[:, None] * t) + 0.3 * rng.standard_normal((n, samples))
    return torch.tensor(waves, dtype=torch.float32), torch.tensor(labels)


def train_steps(model: torch.nn.Module, steps: int) -> torch.optim.Optimizer:
    """A few steps with the training loop's own optimiser construction."""
    optimizer, _ = create_optimizer(trainable_parameters(model), {"base_lr": 0.01, "scheduler": "none"}, steps)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        x, y = tone_batch(4, rng, 4000)
        loss = F.cross_entropy(model(x)[1], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("ser_config", [TINY_ACRNN, "hf"], ids=["acrnn", "hf"])
def test_frozen_ser_is_untouched_by_training_and_swa(tiny_ser_dir, ser_config):
    torch.manual_seed(0)
    if ser_config == "hf":
        ser_config = {"backend": "hf", "ser_path": str(tiny_ser_dir), "layer": -1}
    model = build_model({"architecture": "AASIST_Concat", **TINY_AASIST, "ser_config": ser_config,
                         "emotion_source": "window"})
    ser_before, aasist_before, head_before = snapshot(model.ser), snapshot(model.aasist), snapshot(model.head)
    model.train()
    assert not model.ser.encoder.training and model.head.training  # dropout and BN of the SER stay off
    embedding = model.ser(tone_batch(2, np.random.default_rng(1), 4000)[0])
    assert embedding.grad_fn is None and not embedding.requires_grad  # no graph built for it

    optimizer = train_steps(model, 3)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in in_optimizer for p in model.ser.parameters())
    assert all(torch.equal(v, ser_before[k]) for k, v in model.ser.state_dict().items())
    assert not all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    assert not all(torch.equal(v, aasist_before[k]) for k, v in model.aasist.state_dict().items())
    if ser_config["backend"] == "acrnn":
        assert model.ser.encoder.net.bn.num_batches_tracked.item() == 0  # statistics never updated

    # SWA's BatchNorm re-estimation must leave the frozen BatchNorm statistics as they were.
    swa = AveragedModel(model)
    swa.update_parameters(model)
    x, y = tone_batch(4, np.random.default_rng(2), 4000)
    batches = [collate_trials([LoadedTrial(x[i:i + 1], Trial(str(i), Path("-"), int(y[i]))) for i in range(4)])]
    aasist_bn_before = swa.module.aasist.first_bn.running_mean.clone()
    update_bn_of_trainable(batches, swa, torch.device("cpu"))
    assert all(torch.equal(v, ser_before[k]) for k, v in swa.module.ser.state_dict().items())
    assert not torch.equal(swa.module.aasist.first_bn.running_mean, aasist_bn_before)


def test_unfrozen_ser_is_fine_tuned():
    torch.manual_seed(0)
    model = build_model({"architecture": "AASIST_Concat", **TINY_AASIST, "ser_config": {**TINY_ACRNN, "freeze": False},
                         "emotion_source": "window"})
    before = snapshot(model.ser)
    model.train()
    assert model.ser.encoder.training
    optimizer = train_steps(model, 2)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in in_optimizer for p in model.ser.parameters())
    assert not torch.equal(model.ser.encoder.net.conv1.weight, before["encoder.net.conv1.weight"])
    assert model.ser.encoder.net.bn.num_batches_tracked.item() == 2

"""The SER recipes that give the emotion branch real emotion: ACRNN training (its checkpoint loads
strictly into the ``acrnn`` backend) and the eGeMAPS linear probe (its statistics are the
parameter-free ``egemaps`` backend)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import train_ser
from data_utils import load_audio
from emospoof.core.config import ConfigError
from emospoof.core.emotions import TTS5_EMOTIONS
from emospoof.ser.classifiers import ACRNNClassifier
from emospoof.ser.ravdess import make_splits, read_ravdess
from models.emotion.acrnn import acrnn_features
from models.emotion.branch import SERBranch
from tests.conftest import RAVDESS, REPO, safetensors_weights

pytestmark = pytest.mark.usefixtures("single_thread")


def write_config(tmp_path, **config) -> str:
    path = tmp_path / f"{config['backend']}.conf"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def acrnn_run(ravdess_cuts, tmp_path_factory):
    """A small ACRNN trained for 8 epochs on actor 1 (dev 2, test 3) of the 1.5-s RAVDESS cuts."""
    tmp_path = tmp_path_factory.mktemp("acrnn")
    config = write_config(
        tmp_path, backend="acrnn", database_path=str(ravdess_cuts), train_actors=[1], dev_actors=[2],
        test_actors=[3], emotion_map="tts5", calm="drop", acrnn_dims=[8, 16, 32, 16], batch_size=8, num_epochs=8,
        crop_seconds=1.5, noise_snr_db=None, gain_db=None, optim_config={"optimizer": "adam", "base_lr": 0.003,
                                                                          "scheduler": "none"})
    train_ser.main(["--config", config, "--output_dir", str(tmp_path / "runs")])
    return tmp_path / "runs" / "acrnn"


def test_acrnn_training_lowers_the_loss_and_reports(acrnn_run):
    with open(acrnn_run / "metrics.csv", newline="") as handle:
        losses = [float(row["train_loss"]) for row in csv.DictReader(handle)]
    # Class-weighted cross-entropy starts near ln 5 = 1.61.
    assert len(losses) == 8 and np.mean(losses[-3:]) < losses[0] - 0.1, losses
    report = json.loads((acrnn_run / "ser_report.json").read_text())
    assert report["backend"] == "acrnn" and report["classes"] == list(TTS5_EMOTIONS)
    assert json.loads((acrnn_run / "model/labels.json").read_text()) == list(TTS5_EMOTIONS)
    assert sorted(path.name for path in (acrnn_run / "model").iterdir()) == ["acrnn.safetensors", "labels.json"]
    assert "fc2.weight" in safetensors_weights(acrnn_run / "model/acrnn.safetensors")


def test_acrnn_checkpoint_loads_strictly_into_the_emotion_branch(acrnn_run, ravdess_cuts):
    classifier = ACRNNClassifier.load(acrnn_run / "model")
    branch = SERBranch({"backend": "acrnn", "ser_path": str(acrnn_run / "model/acrnn.safetensors"),
                        "acrnn_dims": [8, 16, 32, 16]})
    assert branch.labels == TTS5_EMOTIONS
    clips = sorted(ravdess_cuts.rglob("03-01-0[25]-*-03.flac"))[:3]  # actor 3: calm / angry clips
    wave = torch.from_numpy(np.stack([load_audio(path) for path in clips]))
    classifier.model.eval()
    with torch.no_grad():
        embedding = classifier.model(acrnn_features(wave))
        posterior = classifier.logits(wave).softmax(dim=-1)
    torch.testing.assert_close(branch(wave), embedding, atol=1e-6, rtol=1e-6)  # float rounding only
    torch.testing.assert_close(branch.posterior(wave), posterior)
    with pytest.raises(ConfigError, match="weights do not fit"):  # other sizes: a strict load refuses
        SERBranch({"backend": "acrnn", "ser_path": str(acrnn_run / "model/acrnn.safetensors"), "acrnn_dims": [8, 16, 32, 8]})


@pytest.fixture(scope="module")
def egemaps_run(shared_dir, egemaps_cache, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("egemaps_linear")
    config = json.loads((REPO / "config/SER_egemaps_linear.conf").read_text())
    config.update(database_path=str(shared_dir / RAVDESS), feature_cache=str(egemaps_cache))
    train_ser.main(["--config", write_config(tmp_path, **config), "--output_dir", str(tmp_path / "runs")])
    return config, tmp_path / "runs" / "egemaps_linear"


def test_egemaps_linear_probe_beats_chance_on_held_out_actors(egemaps_run):
    report = json.loads((egemaps_run[1] / "ser_report.json").read_text())
    # 5 classes: chance macro-F1 is about 0.2; measured 0.536 (accuracy 55.7 %) with C = 0.01
    assert report["test"]["macro_f1"] > 0.4 and report["test"]["accuracy"] > 0.4, report["test"]


def test_egemaps_backend_embeds_like_training_and_carries_emotion(egemaps_run):
    config, run_dir = egemaps_run
    stats = json.loads((run_dir / "model/egemaps_ser.json").read_text())
    assert stats["actors"] == list(range(1, 9)) and len(stats["mean"]) == 88
    branch = SERBranch({"backend": "egemaps", "ser_path": str(run_dir / "model/egemaps_ser.json")})
    assert branch.embedding_dim == 88 and branch.labels == TTS5_EMOTIONS and not list(branch.parameters())
    # The branch's posterior on whole test clips reproduces the report's test accuracy.
    test = make_splits(read_ravdess(config["database_path"]), config, seed=0)["test"]
    wave = [torch.from_numpy(load_audio(t.path))[None] for t in test]
    predicted = [int(branch.posterior(w).argmax()) for w in wave]
    report = json.loads((run_dir / "ser_report.json").read_text())
    assert np.mean(np.array(predicted) == [t.label for t in test]) == pytest.approx(report["test"]["accuracy"])
    # Same audio, same embedding; clips of different emotions, different embeddings.
    again = branch(wave[0])
    assert torch.equal(branch(wave[0]), again)
    by_emotion = {t.emotion: w for t, w in zip(test, wave)}
    assert torch.linalg.vector_norm(branch(by_emotion["angry"]) - branch(by_emotion["sad"])) > 1.0


def test_egemaps_backend_needs_its_statistics(tmp_path):
    with pytest.raises(ConfigError, match="egemaps_ser.json"):
        SERBranch({"backend": "egemaps"})
    (tmp_path / "bad.json").write_text(json.dumps({"feature_set": "eGeMAPSv02", "mean": [0.0], "std": [1.0]}))
    with pytest.raises(ConfigError, match="88 eGeMAPSv02 means"):
        SERBranch({"backend": "egemaps", "ser_path": str(tmp_path / "bad.json")})

"""Proof of learning on real speech: AASIST-L trained on the devkit's train split.

The devkit (../shared/data/devkit/LA) pits real RAVDESS/LibriSpeech speech against classic TTS
engines and vocoders in the ASVspoof 2019 LA layout. Training AASIST from scratch needs far more
steps than a CPU test can afford (measured here: still ~40-50 % dev EER after ~100 steps), so the
shipped devkit config fine-tunes the official AASIST-L weights with 1-second crops. One epoch of
that over every other training trial (236 of 472) in batches of 8 -- the config's 29 steps at half
its cost (measured under load: dev EER 15.3 % at the test's seed, 17.1 % at seed 1; the whole
split in batches of 16: 17.6 %) -- must (a) lower the dev EER clearly below what the same weights
give before training, and (b) end clearly below chance.

Dev is scored over back-to-back 1-s windows (345 windows; the config's half-overlapping ones are
497, for the same EER after training: 17.64 % both ways), and the run has no eval split, so
main.py ends after selecting on dev: the LA evaluation of the devkit (every file labelled with an
emotion, min t-DCF) is checked by tests/models/test_amsdf.py, which scores it anyway.
"""
import csv
import json

import torch

import main as main_module
from data_utils import SkipReport
from emospoof.cm.evaluation import metrics_for
from emospoof.core.checkpoint import load_weights
from emospoof.corpora.asvspoof import la_trials
from emospoof.scoring.windows import score_trials
from models import build_model
from tests.conftest import REPO, devkit_half_train

# 40 bona fide and 90 spoof dev trials: the standard error of an EER near 20 % is about
# sqrt(0.2 * 0.8 / 40) = 6.3 points, so 20 % is more than four standard errors below chance (50 %).
MAX_DEV_EER = 20.0
# The official weights score about 33 % dev EER on back-to-back 1-second windows before
# fine-tuning (30 % on half-overlapping ones).
MIN_IMPROVEMENT = 5.0


def test_short_devkit_run_learns(shared_dir, tmp_path):
    config = json.loads((REPO / "config" / "AASIST-L_devkit.conf").read_text())
    config.pop("eval_datasets", None)  # the genuine-speech sets: tests/cm/test_operating_points.py
    for key in ("emo_dataset", "emo_bonafide_system"):
        config.pop(key, None)  # the emotional set has its own tests
    config.update(database_path=str(devkit_half_train(shared_dir, tmp_path / "LA", with_eval=False)),
                  emotion_labels=str(shared_dir / "data/devkit/meta.tsv"),
                  init_weights=str(shared_dir / "reference/weights/AASIST-L.pth"),
                  num_epochs=1, swa=False, eval_hop=config["model_config"]["nb_samp"], batch_size=8)
    config_path = tmp_path / "devkit.conf"
    config_path.write_text(json.dumps(config))

    model = build_model(config["model_config"])
    load_weights(model, shared_dir / "reference/weights/AASIST-L.pth", torch.device("cpu"))
    dev = la_trials(config["database_path"], "dev")
    scores = score_trials(model, dev, config, torch.device("cpu"), SkipReport(), "dev")
    before = metrics_for(dev, scores, None)["eer"]

    main_module.main(["--config", str(config_path), "--output_dir", str(tmp_path / "runs")])
    run_dir = next((tmp_path / "runs").iterdir())
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    after = float(rows[-1]["dev_eer"])
    print(f"devkit dev EER: {before:.2f} % before training, {after:.2f} % after one epoch")
    assert after < MAX_DEV_EER
    assert after < before - MIN_IMPROVEMENT
    # Every training and dev file was used; the dev ASV scores gave a min t-DCF.
    assert rows[-1]["n_skipped"] == "0" and float(rows[-1]["dev_min_tdcf"]) > 0
    assert json.loads((run_dir / "train_summary.json").read_text())["final"] == "best.safetensors"

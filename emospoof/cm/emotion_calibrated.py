"""The emotion-calibrated system of a run (``emotion_calibration`` in the config): the run's
scores mapped to log-likelihood ratios with the utterance's emotion as covariates
(``emospoof.metrics.emotion_calibration``), fitted on the run's dev scores and applied to every
evaluated set; reported like a run of its own in ``<run>/emotion_calibrated/`` (scores, error rates
at its own dev threshold, ``eval_report.json``, ``config.conf``), so ``compare.py`` can test it
against the uncalibrated runs. ``inference.py --run`` applies the same calibration.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from data_utils import SkipReport, Trial
from emospoof.augment.preprocess import build_preprocess
from emospoof.cm.data import EvalSet, dev_trials
from emospoof.cm.thresholds import fixed_threshold
from emospoof.core.checkpoint import write_atomically
from emospoof.core.config import ConfigError
from emospoof.core.labels import BONAFIDE
from emospoof.metrics.emotion_calibration import EmotionCalibration, fit_emotion_calibration
from emospoof.metrics.score_files import CmScores
from emospoof.scoring.utterances import utterance_features
from models.emotion.branch import SERBranch

FOLDER = "emotion_calibrated"
CALIBRATION_FILE = "emotion_calibration.json"


def covariate_fn(ser: SERBranch, features: str, device: torch.device):
    """waveform (1, samples) -> the covariates: arousal and valence, or the posterior without its
    last class (the classes sum to one, so the last one adds nothing but collinearity)."""
    if features == "posterior":
        return lambda wave: ser.posterior(wave.to(device))[:, :-1]
    return lambda wave: ser.arousal_valence(wave.to(device))


def covariates_of(section: dict, trials: list[Trial], config: dict, device: torch.device, skips: SkipReport,
                  preprocess=None, desc: str = "calibration covariates") -> dict[str, np.ndarray]:
    """utterance id -> the emotion covariates of the whole recording."""
    ser = SERBranch(section["ser_config"]).to(device)
    workers = 0 if device.type == "cuda" else config.get("num_workers")
    return utterance_features(trials, covariate_fn(ser, section.get("features", "arousal_valence"), device),
                              preprocess, workers, desc, skips)


def calibrated_system(run, sets: list[EvalSet], config: dict, device: torch.device, skips: SkipReport,
                      threshold: str | None):
    """The emotion-calibrated version of ``run`` (a ``cm.evaluation.Run`` with dev scores) and
    its calibration; trials without covariates (unreadable audio) are left out."""
    section = config["emotion_calibration"]
    preprocess = build_preprocess(config.get("preprocess"))
    dev_covariates = covariates_of(section, dev_trials(config), config, device, skips, preprocess,
                                   "dev calibration covariates")
    keep = np.array([utt in dev_covariates for utt in run.dev.utt_ids])
    if not keep.any():
        raise ConfigError("emotion_calibration: none of the run's dev trials has covariates (are the dev scores "
                          "from this config's dev set?)")
    dev_z = np.stack([dev_covariates[utt] for utt in run.dev.utt_ids[keep]])
    calibration = fit_emotion_calibration(run.dev.scores[keep], dev_z, run.dev.keys[keep] == BONAFIDE)
    dev = CmScores(run.dev.utt_ids[keep], run.dev.attacks[keep], run.dev.keys[keep],
                   calibration.apply(run.dev.scores[keep], dev_z))
    scores = {}
    for eval_set in sets:
        z = covariates_of(section, eval_set.trials, config, device, skips, build_preprocess(eval_set.preprocess),
                          f"{eval_set.name} calibration covariates")
        kept = [utt for utt in run.scores[eval_set.name] if utt in z]
        values = calibration.apply([run.scores[eval_set.name][utt] for utt in kept], np.stack([z[u] for u in kept]))
        scores[eval_set.name] = dict(zip(kept, values.tolist()))
    source = "emotion-calibrated dev scores"
    calibrated = type(run)(f"{run.label} + emotion calibration", scores, dev, source,
                           fixed_threshold(threshold, dev, source))
    return calibrated, calibration


def write_calibrated_folder(folder: Path, config: dict, calibration: EmotionCalibration, threshold: float | None) -> None:
    """The config (so the folder groups like a run) and the calibration, which ``inference.py
    --run`` applies."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.conf").write_text(json.dumps(config, indent=4))
    record = {**calibration.as_dict(), "features": config["emotion_calibration"].get("features", "arousal_valence"),
              "ser_config": config["emotion_calibration"]["ser_config"], "dev_eer_threshold": threshold}
    write_atomically(folder / CALIBRATION_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))

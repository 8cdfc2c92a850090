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
from emospoof.cm.emotion_inputs import ser_workers
from emospoof.core.checkpoint import write_atomically
from emospoof.core.config import ConfigError
from emospoof.core.labels import BONAFIDE
from emospoof.metrics.emotion_calibration import EmotionCalibration, fit_emotion_calibration
from emospoof.metrics.score_files import CmScores
from emospoof.scoring.utterances import utterance_features
from models.emotion.branch import SERBranch

FOLDER = "emotion_calibrated"
SYSTEM = "emotion calibration"  # the report's "system": compare.py labels the folder "<run> + emotion calibration"
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
    return utterance_features(trials, covariate_fn(ser, section.get("features", "arousal_valence"), device),
                              preprocess, ser_workers(config, device), desc, skips)


def calibrated_scores(calibration: EmotionCalibration, scores: dict[str, float],
                      covariates: dict[str, np.ndarray]) -> dict[str, float]:
    """The calibrated score of every utterance that has covariates (the others are left out)."""
    kept = [utt for utt in scores if utt in covariates]
    if not kept:
        return {}
    values = calibration.apply([scores[utt] for utt in kept], np.stack([covariates[utt] for utt in kept]))
    return dict(zip(kept, values.tolist()))


def calibrate_run(run_scores: dict[str, dict[str, float]], dev: CmScores, sets: list[EvalSet], config: dict,
                  device: torch.device, skips: SkipReport) -> tuple[dict[str, dict[str, float]], CmScores,
                                                                     EmotionCalibration]:
    """A run's emotion calibration, fitted on its ``dev`` scores, and the calibrated scores of
    every set in ``run_scores`` and of dev; trials without covariates (unreadable audio) are left out."""
    section = config["emotion_calibration"]
    dev_covariates = covariates_of(section, dev_trials(config), config, device, skips,
                                   build_preprocess(config.get("preprocess")), "dev calibration covariates")
    keep = np.array([utt in dev_covariates for utt in dev.utt_ids])
    if not keep.any():
        raise ConfigError("emotion_calibration: none of the run's dev trials has covariates (are the dev scores "
                          "from this config's dev set?)")
    dev_z = np.stack([dev_covariates[utt] for utt in dev.utt_ids[keep]])
    calibration = fit_emotion_calibration(dev.scores[keep], dev_z, dev.keys[keep] == BONAFIDE)
    calibrated_dev = CmScores(dev.utt_ids[keep], dev.attacks[keep], dev.keys[keep],
                              calibration.apply(dev.scores[keep], dev_z))
    scores = {}
    for eval_set in sets:
        z = covariates_of(section, eval_set.trials, config, device, skips, build_preprocess(eval_set.preprocess),
                          f"{eval_set.name} calibration covariates")
        scores[eval_set.name] = calibrated_scores(calibration, run_scores[eval_set.name], z)
    return scores, calibrated_dev, calibration


def read_calibration(run_dir: Path) -> tuple[EmotionCalibration, dict, float | None, Path]:
    """A run's stored emotion calibration: the calibration, its SER section (``ser_config`` and
    ``features``), the calibrated system's dev EER threshold, and the file."""
    path = run_dir / FOLDER / CALIBRATION_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found (evaluate the run with an emotion_calibration section first, "
                          "docs/emotion.md)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        calibration = EmotionCalibration(float(record["scale"]), tuple(float(w) for w in record["covariate_weights"]),
                                         float(record["offset"]))
        section = {"ser_config": record["ser_config"], "features": record["features"]}
        threshold = record["dev_eer_threshold"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: not an emotion calibration written by main.py ({type(err).__name__}: {err})") \
            from None
    return calibration, section, threshold, path


def write_calibrated_folder(folder: Path, config: dict, calibration: EmotionCalibration, threshold: float | None) -> None:
    """The config (so the folder groups like a run) and the calibration, which ``inference.py
    --run`` applies."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.conf").write_text(json.dumps(config, indent=4))
    record = {**calibration.as_dict(), "features": config["emotion_calibration"].get("features", "arousal_valence"),
              "ser_config": config["emotion_calibration"]["ser_config"], "dev_eer_threshold": threshold}
    write_atomically(folder / CALIBRATION_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))

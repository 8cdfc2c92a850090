"""The eGeMAPS SER baselines: the 88 eGeMAPS v02 functionals (Eyben et al., IEEE TAC 2016) from
openSMILE, cached per file, classified by a random forest or by a linear probe (multinomial
logistic regression on standardised functionals; scikit-learn). The probe's run writes
``model/egemaps_ser.json`` (the training actors' means and standard deviations and the probe),
which the emotion branch loads as its parameter-free ``egemaps`` backend.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_utils import AudioError, SkipReport, Trial, load_audio
from emospoof.core.checkpoint import write_atomically
from emospoof.core.config import str_to_bool
from emospoof.core.emotions import AROUSAL_VALENCE
from emospoof.core.errors import InputValueError
from emospoof.ser.ravdess import RAVDESS_EMOTION, class_names
from emospoof.ser.report import REPORT, classification_report, print_report, write_report
from models.emotion.egemaps import EGEMAPS_SET, egemaps_feature_names, egemaps_functionals

EGEMAPS_FILE = "egemaps_ser.json"


def egemaps_features(trials: list[Trial], cache: Path, skipped: SkipReport) -> dict[str, np.ndarray]:
    """The 88 eGeMAPS v02 functionals of every trial's audio, keyed by path.

    Rows of ``cache`` (CSV: path, size, mtime_ns, features) are reused while the file's size and
    modification time are unchanged; new or changed files are extracted and the cache rewritten.
    """
    columns = egemaps_feature_names()
    cached: dict[str, tuple[str, str, np.ndarray]] = {}
    if cache.is_file():
        with open(cache, newline="") as handle:
            reader = csv.reader(handle)
            if next(reader, None) == ["path", "size", "mtime_ns", *columns]:
                for row in reader:
                    cached[row[0]] = (row[1], row[2], np.array(row[3:], dtype=np.float64))
            else:
                tqdm.write(f"note: {cache} has other columns; features are extracted again")
    features, fresh = {}, 0
    for trial in tqdm(trials, desc="eGeMAPS", unit="file", leave=False):
        key = str(trial.path)
        stat = trial.path.stat() if trial.path.is_file() else None
        stamp = (str(stat.st_size), str(stat.st_mtime_ns)) if stat else None
        if stamp and key in cached and cached[key][:2] == stamp:
            features[key] = cached[key][2]
            continue
        try:
            audio = load_audio(trial.path)
        except AudioError as err:
            skipped.add([(key, err.reason)])
            continue
        features[key] = egemaps_functionals(audio)
        cached[key] = (*stamp, features[key])
        fresh += 1
    if fresh:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "size", "mtime_ns", *columns])
            for key, (size, mtime, values) in sorted(cached.items()):
                writer.writerow([key, size, mtime, *(repr(float(v)) for v in values)])
    tqdm.write(f"eGeMAPS: {fresh} files extracted, {len(features) - fresh} from {cache}")
    return features


def feature_splits(config: dict, splits: dict[str, list[Trial]], output_dir: Path, skipped: SkipReport
                   ) -> tuple[dict[str, np.ndarray], dict[str, list[Trial]], Path]:
    """Per split, the functionals (clips x 88) and labels-bearing trials of the clips that loaded."""
    cache = Path(config.get("feature_cache", output_dir / "egemaps_features.csv"))
    features = egemaps_features([t for split in splits.values() for t in split], cache, skipped)
    kept = {name: [t for t in trials if str(t.path) in features] for name, trials in splits.items()}
    for name, trials in kept.items():
        if not trials:
            raise InputValueError(f"no clip of the {name} split could be read ({len(skipped)} skipped)")
    return {name: np.stack([features[str(t.path)] for t in trials]) for name, trials in kept.items()}, kept, cache


def fit_and_report(config: dict, splits: dict[str, list[Trial]], run_dir: Path, output_dir: Path,
                   fit_predict) -> tuple[dict, object]:
    """Features, ``fit_predict(x_train, y_train) -> (predict, fitted)``, dev and test reports (a fit
    takes seconds, so training and evaluation are one step)."""
    started = time.time()
    skipped = SkipReport(tqdm.write)
    matrices, kept, cache = feature_splits(config, splits, output_dir, skipped)
    predict, fitted = fit_predict(matrices["train"], [t.label for t in kept["train"]])
    names = class_names(config)
    reports = {name: classification_report([t.label for t in kept[name]], predict(matrices[name]).tolist(), names)
               for name in ("dev", "test")}
    print_report("dev", reports["dev"])
    return write_report(run_dir, config, kept, reports, {"seconds": round(time.time() - started, 1),
                                                         "feature_cache": str(cache)}, skipped), fitted


def run_egemaps_rf(config: dict, splits: dict[str, list[Trial]], run_dir: Path, seed: int,
                   output_dir: Path) -> dict:
    """Fit the random forest on the train split and report dev and test."""
    from sklearn.ensemble import RandomForestClassifier

    def fit_predict(x: np.ndarray, y: list[int]):
        forest = RandomForestClassifier(
            n_estimators=config.get("n_estimators", 500), min_samples_leaf=config.get("min_samples_leaf", 1),
            class_weight="balanced" if str_to_bool(config.get("class_weights", True)) else None,
            random_state=seed, n_jobs=1).fit(x, y)
        return forest.predict, forest

    return fit_and_report(config, splits, run_dir, output_dir, fit_predict)[0]


def fit_arousal_valence(config: dict, splits: dict[str, list[Trial]], output_dir: Path, mean: np.ndarray,
                        std: np.ndarray) -> dict:
    """A ridge regression from the standardised functionals to each clip's (arousal, valence): the
    place of its RAVDESS emotion on the circumplex (``emospoof.core.emotions.AROUSAL_VALENCE``),
    fitted on the train split; the Pearson correlation of each output with its target on dev and
    test says how well it generalises to unseen actors."""
    from sklearn.linear_model import Ridge

    matrices, kept, _ = feature_splits(config, splits, output_dir, SkipReport(tqdm.write))
    targets = {name: np.array([AROUSAL_VALENCE[dict(t.conditions)[RAVDESS_EMOTION]] for t in trials])
               for name, trials in kept.items()}
    alpha = config.get("arousal_valence_alpha", 100.0)
    ridge = Ridge(alpha=alpha).fit((matrices["train"] - mean) / std, targets["train"])
    result = {"weight": ridge.coef_.tolist(), "bias": ridge.intercept_.tolist(), "alpha": alpha,
              "targets": {emotion: list(place) for emotion, place in AROUSAL_VALENCE.items()}}
    for name in ("dev", "test"):
        predicted = ridge.predict((matrices[name] - mean) / std)
        result[name] = {axis: float(np.corrcoef(predicted[:, i], targets[name][:, i])[0, 1])
                        for i, axis in enumerate(("arousal_r", "valence_r"))}
    tqdm.write(f"arousal/valence head: test correlation arousal {result['test']['arousal_r']:.3f}, "
               f"valence {result['test']['valence_r']:.3f}")
    return result


def run_egemaps_linear(config: dict, splits: dict[str, list[Trial]], run_dir: Path, output_dir: Path) -> dict:
    """Standardise the functionals with the training clips' statistics, fit the linear probe, report
    dev and test, and write ``run_dir/model/egemaps_ser.json`` for the emotion branch."""
    from sklearn.linear_model import LogisticRegression

    def fit_predict(x: np.ndarray, y: list[int]):
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant functional carries nothing; keep it at zero
        probe = LogisticRegression(C=config.get("C", 1.0), max_iter=5000,
                                   class_weight="balanced" if str_to_bool(config.get("class_weights", True)) else None)
        probe.fit((x - mean) / std, y)
        return (lambda features: probe.predict((features - mean) / std)), (mean, std, probe)

    report, (mean, std, probe) = fit_and_report(config, splits, run_dir, output_dir, fit_predict)
    regression = None
    if str_to_bool(config.get("arousal_valence", True), "arousal_valence"):
        regression = fit_arousal_valence(config, splits, output_dir, mean, std)
        report["arousal_valence"] = {name: regression[name] for name in ("dev", "test")}
        (run_dir / REPORT).write_text(json.dumps(report, indent=2))
    names = class_names(config)
    weight = np.zeros((len(names), mean.size))
    bias = np.full(len(names), -1e4)  # a class absent from training is never predicted
    weight[probe.classes_], bias[probe.classes_] = probe.coef_, probe.intercept_
    if len(probe.classes_) == 2:  # scikit-learn keeps one row for two classes: class 1 vs class 0
        weight[probe.classes_] = np.stack([-probe.coef_[0] / 2, probe.coef_[0] / 2])
        bias[probe.classes_] = [-probe.intercept_[0] / 2, probe.intercept_[0] / 2]
    model_dir = run_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    stats = {"feature_set": EGEMAPS_SET, "features": egemaps_feature_names(), "mean": mean.tolist(),
             "std": std.tolist(), "actors": report["actors"]["train"],
             "probe": {"labels": list(names), "weight": weight.tolist(), "bias": bias.tolist(), "C": probe.C}}
    if regression is not None:
        stats["arousal_valence"] = {key: regression[key] for key in ("weight", "bias", "alpha", "targets")}
    write_atomically(model_dir / EGEMAPS_FILE, lambda tmp: tmp.write_text(json.dumps(stats) + "\n"))
    tqdm.write(f"eGeMAPS statistics and probe for the emotion branch: {model_dir / EGEMAPS_FILE}")
    return report

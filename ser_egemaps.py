"""The eGeMAPS + random-forest SER baseline: the 88 eGeMAPS v02 functionals (Eyben et al., IEEE
TAC 2016) from openSMILE, cached per file, classified by a random forest (scikit-learn).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from config import str_to_bool
from data_utils import SAMPLE_RATE, AudioError, SkipReport, Trial, load_audio
from ser_data import class_names
from ser_report import classification_report, print_report, write_report


def egemaps_features(trials: list[Trial], cache: Path, skipped: SkipReport) -> dict[str, np.ndarray]:
    """The 88 eGeMAPS v02 functionals of every trial's audio, keyed by path.

    Rows of ``cache`` (CSV: path, size, mtime_ns, features) are reused while the file's size and
    modification time are unchanged; new or changed files are extracted and the cache rewritten.
    """
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    columns = list(smile.feature_names)
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
        features[key] = smile.process_signal(audio, SAMPLE_RATE).to_numpy()[0].astype(np.float64)
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


def run_egemaps_rf(config: dict, splits: dict[str, list[Trial]], run_dir: Path, seed: int,
                   output_dir: Path) -> dict:
    """Fit the random forest on the train split and report dev and test (a fit takes seconds, so
    training and evaluation are one step)."""
    from sklearn.ensemble import RandomForestClassifier

    started = time.time()
    skipped = SkipReport(tqdm.write)
    cache = Path(config.get("feature_cache", output_dir / "egemaps_features.csv"))
    features = egemaps_features([t for split in splits.values() for t in split], cache, skipped)
    kept = {name: [t for t in trials if str(t.path) in features] for name, trials in splits.items()}

    def matrix(trials: list[Trial]) -> np.ndarray:
        return np.stack([features[str(t.path)] for t in trials])

    forest = RandomForestClassifier(
        n_estimators=config.get("n_estimators", 500), min_samples_leaf=config.get("min_samples_leaf", 1),
        class_weight="balanced" if str_to_bool(config.get("class_weights", True)) else None,
        random_state=seed, n_jobs=1)
    forest.fit(matrix(kept["train"]), [t.label for t in kept["train"]])
    names = class_names(config)
    reports = {name: classification_report([t.label for t in kept[name]],
                                           forest.predict(matrix(kept[name])).tolist(), names)
               for name in ("dev", "test")}
    print_report("dev", reports["dev"])
    return write_report(run_dir, config, kept, reports, {"seconds": round(time.time() - started, 1),
                                                         "feature_cache": str(cache)}, skipped)

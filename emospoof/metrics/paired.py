"""Paired comparison of two models scored on the same trials, over seeds: the bootstrap test that
``compare.py`` reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emospoof.core.config import ConfigError
from emospoof.core.labels import BONAFIDE
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.score_files import read_cm_scores


@dataclass
class PairedScores:
    """Scores of several runs on the same trials: (runs, trials), and which trials are bona fide."""

    scores: np.ndarray
    is_bonafide: np.ndarray
    utt_ids: list[str] = field(default_factory=list)


def paired_scores(files: list[Path]) -> PairedScores:
    """Score files of runs over the same trials, aligned on the trials all of them scored."""
    runs = [read_cm_scores(path) for path in files]
    common = set(runs[0].utt_ids.tolist()).intersection(*(set(r.utt_ids.tolist()) for r in runs[1:]))
    if not common:
        raise ConfigError(f"{files[0]}: the runs share no scored trial")
    order = sorted(common)
    matrix = np.empty((len(runs), len(order)))
    for row, run in enumerate(runs):
        position = {utt: i for i, utt in enumerate(run.utt_ids.tolist())}
        index = np.array([position[utt] for utt in order])
        matrix[row] = run.scores[index]
        keys = run.keys[index]
    return PairedScores(matrix, keys == BONAFIDE, order)


def _mean_eer(scores: np.ndarray, is_bonafide: np.ndarray) -> float:
    return float(np.mean([100 * compute_eer(row[is_bonafide], row[~is_bonafide])[0] for row in scores]))


def paired_bootstrap(baseline: PairedScores, model: PairedScores, n_boot: int = 1000, seed: int = 0) -> dict:
    """Difference of seed-mean EERs (model minus baseline, percentage points) with its bootstrap
    95 % interval and two-sided p-value; both score sets must cover the same trials."""
    if baseline.utt_ids != model.utt_ids:
        raise ValueError("the baseline and the model were scored on different trials")
    bonafide, spoof = np.flatnonzero(baseline.is_bonafide), np.flatnonzero(~baseline.is_bonafide)
    observed = _mean_eer(model.scores, model.is_bonafide) - _mean_eer(baseline.scores, baseline.is_bonafide)
    rng = np.random.default_rng(seed)
    differences = np.empty(n_boot)
    for b in range(n_boot):
        index = np.concatenate([rng.choice(bonafide, bonafide.size), rng.choice(spoof, spoof.size)])
        labels = baseline.is_bonafide[index]
        differences[b] = _mean_eer(model.scores[:, index], labels) - _mean_eer(baseline.scores[:, index], labels)
    far_side = min(np.sum(differences <= 0), np.sum(differences >= 0))
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"difference": observed, "ci95": [float(low), float(high)], "p_value": min(1.0, 2 * (far_side + 1) / (n_boot + 1)),
            "n_bonafide": int(bonafide.size), "n_spoof": int(spoof.size), "n_boot": n_boot}

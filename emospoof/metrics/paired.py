"""Paired comparison of two models over seeds and trials: the test ``compare.py`` reports.

Each model is a group of runs (its seeds), every run scored on the same trials. The statistic is
the difference of the two groups' seed means of a per-run figure (model minus baseline): the EER,
or the FRR (bona fide rejected) at each run's own fixed threshold, over all bona fide trials or a
subset of them (e.g. the high-arousal ones). Its interval comes from a two-level bootstrap:
each replicate draws the seeds of each group with replacement, then the trials with replacement
(within strata: spoof, and bona fide inside and outside the subset -- or each of two subsets --
so every replicate holds as many trials of each kind as the set; the same trials for both
groups, since they are paired), and recomputes the statistic; so the interval widens both when
trials are few and when seeds disagree (Bouthillier et al., "Accounting for variance in machine
learning benchmarks", MLSys 2021: randomise over data and seeds; Efron & Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 16). The p-value inverts the percentile interval: the
smallest level at which the interval would exclude zero, twice the smaller share of replicates
on either side of zero (with the +1 correction). The replicates are not centred on the null,
so it is an approximation to read beside the interval, not a calibrated test.
``levels=("trials",)`` keeps every seed in every replicate: the trial-only test (it ignores how
much a model depends on its seed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emospoof.core.config import ConfigError
from emospoof.core.errors import InputValueError
from emospoof.core.labels import BONAFIDE
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.operating_point import accepted
from emospoof.metrics.score_files import read_cm_scores

STATISTICS = ("eer", "frr")
LEVELS = ("seeds", "trials")


@dataclass
class PairedScores:
    """Scores of several runs (seeds) on the same trials: (runs, trials), which trials are bona
    fide, and each run's fixed threshold (needed for the FRR)."""

    scores: np.ndarray
    is_bonafide: np.ndarray
    utt_ids: list[str] = field(default_factory=list)
    thresholds: np.ndarray | None = None

    def select(self, rows: slice) -> PairedScores:
        return PairedScores(self.scores[rows], self.is_bonafide, self.utt_ids,
                            None if self.thresholds is None else self.thresholds[rows])


def paired_scores(files: list[Path], thresholds: list[float] | None = None) -> PairedScores:
    """Score files of runs over the same trials, aligned on the trials all of them scored (a file
    may hold bona fide trials only: a genuine-speech set)."""
    runs = [read_cm_scores(path, both_classes=False) for path in files]
    common = set(runs[0].utt_ids.tolist()).intersection(*(set(r.utt_ids.tolist()) for r in runs[1:]))
    if not common:
        raise ConfigError(f"{files[0]}: the runs share no scored trial")
    order = sorted(common)
    matrix = np.empty((len(runs), len(order)))
    keys = None
    for row, (run, path) in enumerate(zip(runs, files)):
        position = {utt: i for i, utt in enumerate(run.utt_ids.tolist())}
        index = np.array([position[utt] for utt in order])
        matrix[row] = run.scores[index]
        labels = run.keys[index]
        if keys is not None and not np.array_equal(keys, labels):
            at = int(np.flatnonzero(keys != labels)[0])
            raise InputValueError(f"{path}: trial {order[at]} is {labels[at]} here but {keys[at]} in {files[0]}; "
                                  "the runs were not scored on the same protocol")
        keys = labels
    return PairedScores(matrix, keys == BONAFIDE, order, None if thresholds is None else np.asarray(thresholds, float))


def strata(is_bonafide: np.ndarray, *subsets: np.ndarray | None) -> list[np.ndarray]:
    """The trial indices each replicate resamples separately: spoof, and the bona fide trials of
    each subset and of none of them (empty strata left out)."""
    parts = [np.flatnonzero(~is_bonafide)]
    rest = is_bonafide.copy()
    for subset in subsets:
        if subset is not None:
            parts.append(np.flatnonzero(rest & subset))
            rest &= ~subset
    parts.append(np.flatnonzero(rest))
    return [part for part in parts if part.size]


def resample(rng: np.random.Generator, parts: list[np.ndarray]) -> np.ndarray:
    """Trials drawn with replacement inside each stratum, as many as it holds."""
    return np.concatenate([rng.choice(part, part.size) for part in parts])


def run_figures(group: PairedScores, statistic: str, index: np.ndarray, subset: np.ndarray | None) -> np.ndarray:
    """The per-run figure on the trials ``index`` (a resample): EER or FRR in percent."""
    labels = group.is_bonafide[index]
    scores = group.scores[:, index]
    if statistic == "eer":
        return np.array([100 * compute_eer(row[labels], row[~labels])[0] for row in scores])
    bonafide = labels if subset is None else labels & subset[index]
    if not bonafide.any():
        return np.full(len(scores), np.nan)
    rejected = ~accepted(scores[:, bonafide], group.thresholds[:, None])
    return 100 * rejected.mean(axis=1)


def paired_bootstrap(baseline: PairedScores, model: PairedScores, statistic: str = "eer",
                     subset: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                     levels: tuple[str, ...] = LEVELS) -> dict:
    """The difference of seed means (model minus baseline) of ``statistic`` with its two-level
    bootstrap 95 % interval and p-value; ``subset`` (a mask over trials) restricts the FRR to
    those bona fide trials. Both groups must cover the same trials."""
    if baseline.utt_ids != model.utt_ids:
        raise InputValueError("the baseline and the model were scored on different trials")
    if statistic not in STATISTICS or not set(levels) <= set(LEVELS) or "trials" not in levels:
        raise ValueError(f"statistic must be one of {STATISTICS} and levels include 'trials', got {statistic}, {levels}")
    is_bonafide = baseline.is_bonafide
    in_subset = is_bonafide if subset is None else is_bonafide & subset
    if statistic == "frr" and (baseline.thresholds is None or model.thresholds is None or not in_subset.any()):
        raise InputValueError("the FRR needs each run's threshold and bona fide trials")
    if statistic == "eer" and (is_bonafide.all() or not is_bonafide.any()):
        raise InputValueError("the EER needs bona fide and spoof trials")
    everything = np.arange(is_bonafide.size)
    observed = (run_figures(model, statistic, everything, subset).mean()
                - run_figures(baseline, statistic, everything, subset).mean())
    rng = np.random.default_rng(seed)
    parts = strata(is_bonafide, subset)
    differences = np.empty(n_boot)
    for b in range(n_boot):
        index = resample(rng, parts)
        means = []
        for group in (model, baseline):
            figures = run_figures(group, statistic, index, subset)
            picked = rng.integers(0, len(figures), len(figures)) if "seeds" in levels else np.arange(len(figures))
            means.append(figures[picked].mean())
        differences[b] = means[0] - means[1]
    finite = differences[np.isfinite(differences)]
    far_side = min(np.sum(finite <= 0), np.sum(finite >= 0))
    low, high = np.percentile(finite, [2.5, 97.5])
    return {"statistic": statistic, "difference": float(observed), "ci95": [float(low), float(high)],
            "p_value": min(1.0, 2 * (far_side + 1) / (finite.size + 1)), "levels": list(levels),
            "n_seeds": [len(baseline.scores), len(model.scores)],
            "n_bonafide": int(in_subset.sum() if statistic == "frr" else is_bonafide.sum()),
            "n_spoof": int((~is_bonafide).sum()), "n_boot": n_boot}


def frr_gap_interval(group: PairedScores, first: np.ndarray, second: np.ndarray, n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """One model's seed-mean FRR of the bona fide trials in ``first`` minus that of those in
    ``second`` (e.g. high- and low-arousal genuine speech), each run at its own threshold, with the
    same two-level bootstrap interval (seeds, then trials) and the share of replicates at or
    below zero: does the model reject one group more often, counting seeds and trials?"""
    if group.thresholds is None or not (group.is_bonafide & first).any() or not (group.is_bonafide & second).any():
        raise InputValueError("the FRR gap needs each run's threshold and bona fide trials in both groups")

    def gap(index: np.ndarray, runs: np.ndarray) -> float:
        figures = run_figures(group, "frr", index, first) - run_figures(group, "frr", index, second)
        return float(figures[runs].mean())
    everything = np.arange(group.is_bonafide.size)
    observed = gap(everything, np.arange(len(group.scores)))
    rng = np.random.default_rng(seed)
    parts = strata(group.is_bonafide, first, second)
    draws = np.array([gap(resample(rng, parts), rng.integers(0, len(group.scores), len(group.scores)))
                      for _ in range(n_boot)])
    finite = draws[np.isfinite(draws)]
    low, high = np.percentile(finite, [2.5, 97.5])
    return {"gap": observed, "ci95": [float(low), float(high)],
            "share_at_or_below_zero": float(np.mean(finite <= 0)), "n_seeds": len(group.scores),
            "n_first": int((group.is_bonafide & first).sum()), "n_second": int((group.is_bonafide & second).sum()),
            "n_boot": n_boot}

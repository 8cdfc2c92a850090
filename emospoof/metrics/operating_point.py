"""Error rates at one operating threshold, per group of trials.

A deployed countermeasure has one threshold: a trial is accepted as bona fide when its score is
above it (``accepted``; the DET curve's convention, so at the EER threshold these rates are the
EER's operating point). At that threshold the bona fide rejection rate (FRR: genuine speech
taken for fake) and the spoof acceptance rate (FAR) are counted per group -- emotion, arousal,
speaker, attack, any condition factor -- each with its counts and a bootstrap 95 % interval. A
per-group EER hides what matters here: it picks a different threshold for every group, while a
deployed detector applies the same one to everybody.

Intervals. A group's rate gets the Wilson score interval (Wilson, "Probable inference, the law of
succession, and statistical inference", JASA 1927): a percentile bootstrap of a proportion
resamples a binomial count, and at 0 or n errors every resample is the same, so it would say
[0, 0] for a group where no genuine trial happened to be rejected -- certainty from, say, 40
trials; Wilson's stays honest at the edges and needs no random draws. The arousal ratio and gap
are bootstrapped (the two groups' counts drawn independently as binomials, Efron & Tibshirani,
"An Introduction to the Bootstrap", 1993, ch. 13), from a generator seeded for that contrast
alone, so its interval does not depend on how many other groups the set has.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from emospoof.core.emotions import UNLABELLED, arousal_of

N_BOOT = 1000
WILSON_Z = 1.959963984540054  # the standard normal's 97.5 % quantile
# A factor with more values than this (e.g. thousands of speakers) is not broken down.
MAX_GROUPS = 60


def accepted(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The decision of a deployed detector: bona fide when the score is above the threshold."""
    return np.asarray(scores) > threshold


def rate_cell(errors: int, n: int) -> dict | None:
    """``errors`` of ``n`` trials as a percentage with its Wilson 95 % interval; None for no trial."""
    if n == 0:
        return None
    rate = errors / n
    z2 = WILSON_Z ** 2
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = WILSON_Z * np.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low, high = max(0.0, min(rate, centre - half)), min(1.0, max(rate, centre + half))  # rounding at 0 and n
    return {"rate": 100 * rate, "ci95": [100 * float(low), 100 * float(high)], "errors": int(errors), "n": int(n)}


def _rates(scores: np.ndarray, is_bonafide: np.ndarray, mask: np.ndarray, threshold: float) -> dict:
    """FRR of the bona fide trials and FAR of the spoofs inside ``mask``."""
    bonafide, spoof = scores[mask & is_bonafide], scores[mask & ~is_bonafide]
    return {"frr": rate_cell(int(np.count_nonzero(~accepted(bonafide, threshold))), bonafide.size),
            "far": rate_cell(int(np.count_nonzero(accepted(spoof, threshold))), spoof.size)}


def group_factors(emotions: Sequence[str], speakers: Sequence[str], attacks: Sequence[str],
                  conditions: Sequence[tuple[tuple[str, str], ...]]) -> dict[str, np.ndarray]:
    """The factors a set can be broken down by, one label per trial: emotion and arousal where
    trials carry emotions, speaker where there are several, attack, and every condition factor
    (codec, corpus, ...). Unlabelled trials carry '-' and fall in no group of that factor."""
    emotion = np.asarray(emotions, dtype=str)
    factors: dict[str, np.ndarray] = {}
    if np.any(emotion != UNLABELLED):
        factors["emotion"] = emotion
        factors["arousal"] = np.array([arousal_of(e) or UNLABELLED for e in emotion])
    speaker = np.asarray(speakers, dtype=str)
    if len(set(speaker.tolist()) - {UNLABELLED}) > 1:
        factors["speaker"] = speaker
    attack = np.asarray(attacks, dtype=str)
    if len(set(attack.tolist()) - {UNLABELLED}) > 0:
        factors["attack"] = attack
    for name in sorted({name for trial in conditions for name, _ in trial}):
        factors[name] = np.array([dict(trial).get(name, UNLABELLED) for trial in conditions])
    return {name: values for name, values in factors.items()
            if len(set(values.tolist()) - {UNLABELLED}) <= MAX_GROUPS}


def arousal_contrast(high: dict | None, low: dict | None, rng: np.random.Generator, n_boot: int = N_BOOT) -> dict:
    """High- against low-arousal FRR: their ratio and their difference in points, each with a
    bootstrap interval (the groups resampled independently). The ratio is None when the
    low-arousal FRR is 0, and its upper bound is None (unbounded) when more than 2.5 % of the
    resamples have no low-arousal rejection."""
    if high is None or low is None:
        return {"high_frr": high and high["rate"], "low_frr": low and low["rate"], "ratio": None, "ratio_ci95": None,
                "gap_points": None, "gap_ci95": None}
    high_draws = rng.binomial(high["n"], high["errors"] / high["n"], n_boot) / high["n"]
    low_draws = rng.binomial(low["n"], low["errors"] / low["n"], n_boot) / low["n"]
    gaps = 100 * (high_draws - low_draws)
    ratios = np.sort(np.where(low_draws > 0, high_draws / np.where(low_draws > 0, low_draws, 1), np.inf))
    # order statistics, not interpolation, since some ratios may be infinite
    low_ratio, high_ratio = ratios[int(0.025 * n_boot)], ratios[int(np.ceil(0.975 * n_boot)) - 1]
    return {
        "high_frr": high["rate"], "low_frr": low["rate"],
        "ratio": high["rate"] / low["rate"] if low["errors"] else None,
        "ratio_ci95": [float(low_ratio) if np.isfinite(low_ratio) else None,
                       float(high_ratio) if np.isfinite(high_ratio) else None],
        "gap_points": high["rate"] - low["rate"],
        "gap_ci95": [float(v) for v in np.percentile(gaps, [2.5, 97.5])],
    }


def operating_point(scores: np.ndarray, is_bonafide: np.ndarray, factors: dict[str, np.ndarray], threshold: float,
                    source: str, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """FRR and FAR at ``threshold`` (named by ``source``: the set's EER, the run's dev EER, a
    calibration, a value given) over the whole set and per value of each factor, and the
    summaries: the emotion with the highest FRR, and the high- against low-arousal FRR."""
    scores, is_bonafide = np.asarray(scores, dtype=np.float64), np.asarray(is_bonafide, dtype=bool)
    everything = np.ones_like(is_bonafide)
    groups = {name: {value: _rates(scores, is_bonafide, values == value, threshold)
                     for value in sorted(set(values.tolist()) - {UNLABELLED})}
              for name, values in factors.items()}
    by_emotion = {e: cells["frr"] for e, cells in groups.get("emotion", {}).items() if cells["frr"] is not None}
    worst = max(by_emotion, key=lambda e: by_emotion[e]["rate"]) if by_emotion else None
    arousal = groups.get("arousal", {})
    return {
        "threshold": float(threshold), "source": source,
        "pooled": _rates(scores, is_bonafide, everything, threshold),
        "groups": groups,
        "worst_emotion_frr": {"emotion": worst, **by_emotion[worst]} if worst else None,
        "arousal_frr": arousal_contrast(arousal.get("high", {}).get("frr"), arousal.get("low", {}).get("frr"),
                                        np.random.default_rng(seed), n_boot) if arousal else None,
    }

"""ASVspoof 2019 countermeasure metrics: EER, DET curve, legacy min t-DCF, EER per attack and
bootstrap intervals (the score-file readers are in ``score_files``).

The definitions are those of the ASVspoof 2019 evaluation package, so results are comparable
with published numbers. That includes its tie handling: the DET curve has one operating point
per pooled score, in stable ascending order with target (bona fide) scores placed before tied
non-target scores, rather than one point per distinct threshold value.

t-DCF: Kinnunen et al., "t-DCF: a Detection Cost Function for the Tandem Assessment of Spoofing
Countermeasures and Automatic Speaker Verification", Odyssey 2018 (the "legacy" form used for
ASVspoof 2019; see also IEEE/ACM TASLP 2020).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypedDict

import numpy as np
import numpy.typing as npt

from emospoof.core.errors import InputValueError
from emospoof.core.labels import BONAFIDE, SPOOF
from emospoof.metrics.score_files import AsvScores, read_asv_scores, read_cm_scores

# The official curve starts just below the lowest score, where everything is accepted.
_FIRST_THRESHOLD_OFFSET = 0.001


@dataclass(frozen=True)
class CostModel:
    """Priors and costs of the tandem ASV + CM system; defaults are the ASVspoof 2019 ones.

    Target and non-target priors are derived from ``p_spoof`` so the three priors always sum
    to one when ``p_spoof`` is changed (and reproduce the official values bit for bit).
    """

    p_spoof: float = 0.05
    p_nontarget_given_human: float = 0.01
    c_miss_asv: float = 1.0
    c_fa_asv: float = 10.0
    c_miss_cm: float = 1.0
    c_fa_cm: float = 10.0

    @property
    def p_tar(self) -> float:
        return (1 - self.p_spoof) * (1 - self.p_nontarget_given_human)

    @property
    def p_non(self) -> float:
        return (1 - self.p_spoof) * self.p_nontarget_given_human


class Metrics(TypedDict):
    """Result of :func:`evaluate_arrays`; EERs are in percent."""

    eer: float
    min_tdcf: float | None
    per_attack: dict[str, float]
    n_bonafide: int
    n_spoof: int


def as_scores(values: npt.ArrayLike, name: str) -> np.ndarray:
    """Scores as a checked 1-D float64 array; empty or NaN input would give meaningless rates."""
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} scores must be one-dimensional, got shape {scores.shape}")
    if scores.size == 0:
        raise InputValueError(f"{name} scores are empty")
    if np.isnan(scores).any():
        raise InputValueError(f"{name} scores contain NaN")
    return scores


def _pool_in_official_order(
    sorted_target: np.ndarray, sorted_nontarget: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two ascending score arrays into the official pooled order: (scores, is_target).

    Equals a stable sort of the targets followed by the nontargets (ties: targets first), but
    two separate sorts and a merge take about half the time of that pooled stable argsort.
    """
    n_target = sorted_target.size
    before = np.searchsorted(sorted_nontarget, sorted_target, side="left")
    target_slots = np.arange(n_target) + before
    is_target = np.zeros(n_target + sorted_nontarget.size, dtype=bool)
    is_target[target_slots] = True
    scores = np.empty(is_target.size, dtype=np.float64)
    scores[target_slots] = sorted_target
    scores[~is_target] = sorted_nontarget
    return scores, is_target


def _det_from_sorted(
    sorted_scores: np.ndarray, sorted_is_target: np.ndarray, n_target: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET curve from scores already in official order; shared with the bootstrap."""
    n_total = sorted_scores.size
    n_nontarget = n_total - n_target
    targets_at_or_below = np.cumsum(sorted_is_target)
    nontargets_above = n_nontarget - (np.arange(1, n_total + 1) - targets_at_or_below)
    frr = np.concatenate(([0.0], targets_at_or_below / n_target))
    far = np.concatenate(([1.0], nontargets_above / n_nontarget))
    thresholds = np.concatenate(([sorted_scores[0] - _FIRST_THRESHOLD_OFFSET], sorted_scores))
    return frr, far, thresholds


def _sorted_with_ranks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending scores and, for each original entry, its index in that sorted array."""
    order = np.argsort(scores)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return scores[order], rank


def _eer_at_crossing(
    frr: np.ndarray, far: np.ndarray, thresholds: np.ndarray
) -> tuple[float, float]:
    """EER as the mean of FRR and FAR where they are closest (first such point on ties)."""
    i = int(np.argmin(np.abs(frr - far)))
    return float(np.mean((frr[i], far[i]))), float(thresholds[i])


def compute_det_curve(
    target_scores: npt.ArrayLike, nontarget_scores: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Official ASVspoof 2019 DET curve: (frr, far, thresholds), each of length n + 1.

    Entry ``i > 0`` is the operating point after the ``i`` lowest pooled scores; entry 0 sits
    below every score (nothing rejected).
    """
    target = as_scores(target_scores, "target")
    nontarget = as_scores(nontarget_scores, "nontarget")
    pooled, is_target = _pool_in_official_order(np.sort(target), np.sort(nontarget))
    return _det_from_sorted(pooled, is_target, target.size)


def compute_eer(target: npt.ArrayLike, nontarget: npt.ArrayLike) -> tuple[float, float]:
    """Equal error rate as a fraction in [0, 1], and the threshold where it is reached."""
    return _eer_at_crossing(*compute_det_curve(target, nontarget))


def compute_min_tdcf(
    bonafide_cm: npt.ArrayLike,
    spoof_cm: npt.ArrayLike,
    tar_asv: npt.ArrayLike,
    non_asv: npt.ArrayLike,
    spoof_asv: npt.ArrayLike,
    cost_model: CostModel | None = None,
) -> float:
    """Minimum normalised legacy t-DCF of a CM in tandem with a fixed ASV system.

    The ASV system operates at its own EER threshold; the CM threshold is swept over the CM
    DET curve. Normalising by min(C1, C2) makes 1.0 the cost of a CM that accepts or rejects
    everything, so values above 1 mean the CM is worse than no CM.
    """
    costs = cost_model if cost_model is not None else CostModel()
    bonafide = as_scores(bonafide_cm, "bona fide CM")
    spoof = as_scores(spoof_cm, "spoof CM")
    target = as_scores(tar_asv, "target ASV")
    nontarget = as_scores(non_asv, "nontarget ASV")
    spoof_at_asv = as_scores(spoof_asv, "spoof ASV")

    _, asv_threshold = compute_eer(target, nontarget)
    p_fa_asv = np.count_nonzero(nontarget >= asv_threshold) / nontarget.size
    p_miss_asv = np.count_nonzero(target < asv_threshold) / target.size
    p_miss_spoof_asv = np.count_nonzero(spoof_at_asv < asv_threshold) / spoof_at_asv.size

    c1 = costs.p_tar * (costs.c_miss_cm - costs.c_miss_asv * p_miss_asv) - (
        costs.p_non * costs.c_fa_asv * p_fa_asv
    )
    c2 = costs.c_fa_cm * costs.p_spoof * (1 - p_miss_spoof_asv)
    if c1 < 0 or c2 < 0:
        raise InputValueError(
            f"t-DCF cost weights must be non-negative, got C1={c1:.6g}, C2={c2:.6g}: "
            "the ASV system or the cost model is unusable for t-DCF"
        )
    normaliser = min(c1, c2)
    if normaliser == 0:
        raise InputValueError(
            f"t-DCF cannot be normalised: C1={c1:.6g}, C2={c2:.6g} "
            "(e.g. the ASV system rejects every spoof trial)"
        )
    p_miss_cm, p_fa_cm, _ = compute_det_curve(bonafide, spoof)
    return float(np.min(c1 * p_miss_cm + c2 * p_fa_cm) / normaliser)


def eer_bootstrap_ci(
    target: npt.ArrayLike,
    nontarget: npt.ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the EER, in percent.

    Each replicate resamples both classes with replacement, so small subsets (e.g. one
    emotion) get honestly wide intervals. Replicate ``b`` uses the ``b``-th pair of draws
    ``rng.integers(0, n_target, n_target)``, ``rng.integers(0, n_nontarget, n_nontarget)``
    from ``np.random.default_rng(seed)``.
    """
    tar = as_scores(target, "target")
    non = as_scores(nontarget, "nontarget")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")

    # A sorted resample is each item of the sorted class repeated as often as it was drawn,
    # so sorting once up front makes every replicate O(n) apart from the merge.
    sorted_tar, tar_rank = _sorted_with_ranks(tar)
    sorted_non, non_rank = _sorted_with_ranks(non)
    rng = np.random.default_rng(seed)
    eers = np.empty(n_boot)
    for b in range(n_boot):
        tar_copies = np.bincount(tar_rank[rng.integers(0, tar.size, tar.size)], minlength=tar.size)
        non_copies = np.bincount(non_rank[rng.integers(0, non.size, non.size)], minlength=non.size)
        pooled, is_target = _pool_in_official_order(
            np.repeat(sorted_tar, tar_copies), np.repeat(sorted_non, non_copies)
        )
        eers[b] = _eer_at_crossing(*_det_from_sorted(pooled, is_target, tar.size))[0]
    low, high = np.percentile(eers, [50 * alpha, 100 - 50 * alpha])
    return 100 * float(low), 100 * float(high)


def evaluate_arrays(
    scores: npt.ArrayLike,
    keys: Sequence[str] | np.ndarray,
    attacks: Sequence[str] | np.ndarray | None = None,
    asv: AsvScores | None = None,
    cost_model: CostModel | None = None,
) -> Metrics:
    """All metrics for in-memory CM scores (higher = more bona fide), one entry per trial.

    ``keys`` holds 'bonafide' or 'spoof'. ``per_attack`` is empty without ``attacks`` and
    ``min_tdcf`` is None without ``asv``, so training loops can ask for the EER alone.
    """
    cm = np.asarray(scores, dtype=np.float64)
    key_array = np.asarray(keys, dtype=str)
    if cm.ndim != 1 or key_array.shape != cm.shape:
        raise ValueError(
            f"scores and keys must be 1-D and equally long, got {cm.shape} and {key_array.shape}"
        )
    is_bonafide = key_array == BONAFIDE
    known = is_bonafide | (key_array == SPOOF)
    if not known.all():
        unknown = sorted(set(key_array[~known]))
        raise InputValueError(f"unknown CM keys {unknown}, expected {BONAFIDE!r} or {SPOOF!r}")
    bonafide, spoof = cm[is_bonafide], cm[~is_bonafide]
    eer, _ = compute_eer(bonafide, spoof)

    per_attack: dict[str, float] = {}
    if attacks is not None:
        attack_array = np.asarray(attacks, dtype=str)
        if attack_array.shape != cm.shape:
            raise ValueError(f"attacks must match scores, got {attack_array.shape} and {cm.shape}")
        spoof_attacks = attack_array[~is_bonafide]
        for attack in np.unique(spoof_attacks):
            attack_eer, _ = compute_eer(bonafide, spoof[spoof_attacks == attack])
            per_attack[str(attack)] = 100 * attack_eer

    min_tdcf = None
    if asv is not None:
        min_tdcf = compute_min_tdcf(
            bonafide, spoof, asv.target, asv.nontarget, asv.spoof, cost_model
        )
    return Metrics(
        eer=100 * eer,
        min_tdcf=min_tdcf,
        per_attack=per_attack,
        n_bonafide=int(bonafide.size),
        n_spoof=int(spoof.size),
    )


def evaluate_scores(
    cm_path: str | os.PathLike[str],
    asv_path: str | os.PathLike[str] | None = None,
    cost_model: CostModel | None = None,
) -> Metrics:
    """:func:`evaluate_arrays` for a CM score file and, for the min t-DCF, an ASV score file."""
    cm = read_cm_scores(cm_path)
    asv = read_asv_scores(asv_path) if asv_path is not None else None
    return evaluate_arrays(cm.scores, cm.keys, cm.attacks, asv=asv, cost_model=cost_model)

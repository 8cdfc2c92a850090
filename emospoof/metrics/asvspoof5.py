"""ASVspoof 5 metrics, as the official evaluation package computes them, and the readers of the
package's score and key files.

Track 1 (stand-alone countermeasure): minimum and actual detection cost (min DCF, act DCF), the
log-likelihood-ratio cost Cllr (bits) and the EER. Track 2 (spoofing-aware speaker verification,
SASV): the architecture-agnostic a-DCF, the min t-DCF with the organisers' fixed ASV error rates,
and the tandem EER (t-EER).

References: Wang et al., "ASVspoof 5: crowdsourced speech data, deepfakes, and adversarial attacks
at scale", ASVspoof 2024 workshop (the evaluation plan's DCF); Shim et al., "a-DCF: an architecture
agnostic metric with application to spoofing-robust speaker verification", Odyssey 2024; Kinnunen
et al., "Tandem assessment of spoofing countermeasures and automatic speaker verification:
fundamentals", IEEE/ACM TASLP 2020 (t-DCF and t-EER); Brümmer and du Preez, "Application-independent
evaluation of speaker detection", Computer Speech and Language 2006 (Cllr).

Every DET curve here is the ASVspoof one (``emospoof.metrics.asvspoof2019.compute_det_curve``): one operating point per
pooled score, targets before tied non-targets.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emospoof.core.errors import InputValueError
from emospoof.core.labels import BONAFIDE, CM_KEYS, SPOOF
from emospoof.metrics.asvspoof2019 import as_scores, compute_det_curve, compute_eer
from emospoof.metrics.score_files import ScoreFileError, score_file_lines

# --- constants of the official package (every one of them is a number the package hard-codes) ---

# Track 1 detection cost: prior of a spoofing attack, cost of rejecting bona fide speech (miss),
# cost of accepting a spoof (false alarm).
P_SPOOF = 0.05
C_MISS = 1.0
C_FA = 10.0


@dataclass(frozen=True)
class SasvCosts:
    """Track 2 cost model of the package: priors of a spoof, a target and a non-target trial
    (P_spoof 0.05; the rest split 99 : 1), the cost of missing a target, of accepting a
    non-target and of accepting a spoof. The package builds its a-DCF cost model from these same
    values (its ``a_dcf.CostModel`` defaults, 0.9 / 0.05 / 0.05 and C_fa_cm 20, are not what it
    reports), and uses them for the min t-DCF."""

    p_spoof: float = 0.05
    p_target: float = (1 - 0.05) * 0.99
    p_nontarget: float = (1 - 0.05) * 0.01
    c_miss: float = 1.0
    c_fa: float = 10.0
    c_fa_spoof: float = 10.0


# The package's min t-DCF puts the CM in tandem with the organisers' ASV system, given by its
# fixed error rates pooled over all conditions: false acceptance of non-targets, miss of
# targets, acceptance of spoofs.
ORGANISER_ASV_P_FA_NONTARGET = 0.01881016557566423
ORGANISER_ASV_P_MISS = 0.01880141010575793
ORGANISER_ASV_P_FA_SPOOF = 0.4607082907604729
# Prior of a spoof in the tandem false-alarm rate of the t-EER; for the concurrent t-EER that
# the package reports any prior gives the same point, and it uses 0.5.
T_EER_SPOOF_PRIOR = 0.5

CM_SCORE_COLUMNS = ("filename", "cm-score")
CM_KEY_COLUMNS = ("filename", "cm-label")
SASV_SCORE_COLUMNS = ("spk", "filename", "cm-score", "asv-score", "sasv-score")
SASV_KEY_COLUMNS = ("spk", "filename", "cm-label", "asv-label")
CM_LABELS = CM_KEYS
ASV_LABELS = ("target", "nontarget", "spoof")


# --- track 1 ---------------------------------------------------------------------------------


def min_dcf(bonafide: npt.ArrayLike, spoof: npt.ArrayLike) -> float:
    """Minimum normalised DCF over the DET curve; 1.0 is the cost of accepting or rejecting all."""
    frr, far, _ = compute_det_curve(bonafide, spoof)
    p_bonafide = 1 - P_SPOOF
    cost = C_MISS * frr * p_bonafide + C_FA * far * (1 - p_bonafide)
    return float(np.min(cost) / min(C_MISS * p_bonafide, C_FA * (1 - p_bonafide)))


def bayes_threshold() -> float:
    """The Bayes decision threshold for LLR scores under the track 1 cost model: -log(beta),
    beta = C_miss (1 - P_spoof) / (C_fa P_spoof) (about -0.642)."""
    return -math.log(C_MISS * (1 - P_SPOOF) / (C_FA * P_SPOOF))


def act_dcf(bonafide: npt.ArrayLike, spoof: npt.ArrayLike) -> float:
    """Normalised DCF at the Bayes threshold, i.e. reading the scores as log-likelihood ratios:
    it equals min DCF only for well-calibrated scores. This is the ASVspoof 5 definition as the
    official package's ``compute_actDCF`` computes it (threshold -log(beta), bona fide below it
    missed, spoofs at or above it accepted, normalised by min(C_fa P_spoof, C_miss (1 - P_spoof)),
    the same normaliser as ``min_dcf``), so on the same scores it gives the official figure. It is
    never below ``min_dcf``, which minimises the same cost over every threshold, this one included."""
    bona = as_scores(bonafide, "bona fide")
    spf = as_scores(spoof, "spoof")
    threshold = bayes_threshold()
    p_miss = np.count_nonzero(bona < threshold) / bona.size
    p_fa = np.count_nonzero(spf >= threshold) / spf.size
    cost = C_MISS * (1 - P_SPOOF) * p_miss + C_FA * P_SPOOF * p_fa
    return float(cost / min(C_FA * P_SPOOF, C_MISS * (1 - P_SPOOF)))


def cllr(bonafide: npt.ArrayLike, spoof: npt.ArrayLike) -> float:
    """Cllr in bits: the mean logistic loss of the scores read as natural-log LLRs, averaged over
    the two classes; 1.0 for an uninformative 0 score, 0 for perfect confident LLRs.

    ``log(1 + e^-x)`` is computed as ``logaddexp(0, -x)``: the same value, but finite for scores
    far below -700 where the package's ``log1p(exp(-x))`` overflows."""
    bona = as_scores(bonafide, "bona fide")
    spf = as_scores(spoof, "spoof")
    return float(0.5 * (np.mean(np.logaddexp(0.0, -bona)) + np.mean(np.logaddexp(0.0, spf))) / math.log(2))


def cm_metrics(bonafide: npt.ArrayLike, spoof: npt.ArrayLike) -> dict[str, float]:
    """Track 1 metrics: ``min_dcf``, ``act_dcf``, ``cllr`` (bits) and ``eer`` (percent)."""
    bona = as_scores(bonafide, "bona fide")
    spf = as_scores(spoof, "spoof")
    return {"min_dcf": min_dcf(bona, spf), "act_dcf": act_dcf(bona, spf), "cllr": cllr(bona, spf),
            "eer": 100 * compute_eer(bona, spf)[0]}


# --- track 2 ---------------------------------------------------------------------------------


def three_class_curves(target: np.ndarray, nontarget: np.ndarray, spoof: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss rate of targets and acceptance rates of non-targets and spoofs after each pooled
    score (stable order: targets, then non-targets, then spoofs on ties); entry 0 accepts all."""
    scores = np.concatenate((target, nontarget, spoof))
    kind = np.repeat(np.arange(3), (target.size, nontarget.size, spoof.size))[np.argsort(scores, kind="stable")]
    counts = [np.concatenate(([0], np.cumsum(kind == k))) for k in range(3)]
    return counts[0] / target.size, 1 - counts[1] / nontarget.size, 1 - counts[2] / spoof.size


def a_dcf(target: npt.ArrayLike, nontarget: npt.ArrayLike, spoof: npt.ArrayLike,
          costs: SasvCosts = SasvCosts()) -> float:
    """Minimum normalised a-DCF of one SASV score per trial (Shim et al., Odyssey 2024): the
    weighted miss, non-target and spoof acceptance rates, minimised over the threshold and
    normalised by the cheaper of accepting or rejecting everything."""
    tar = as_scores(target, "target")
    non = as_scores(nontarget, "nontarget")
    spf = as_scores(spoof, "spoof")
    p_miss, p_fa_non, p_fa_spoof = three_class_curves(tar, non, spf)
    curve = (costs.c_miss * costs.p_target * p_miss + costs.c_fa * costs.p_nontarget * p_fa_non
             + costs.c_fa_spoof * costs.p_spoof * p_fa_spoof)
    normaliser = min(costs.c_fa * costs.p_nontarget + costs.c_fa_spoof * costs.p_spoof, costs.c_miss * costs.p_target)
    return float(np.min(curve) / normaliser)


def min_tdcf_organiser_asv(bonafide_cm: npt.ArrayLike, spoof_cm: npt.ArrayLike,
                           costs: SasvCosts = SasvCosts()) -> float:
    """Track 2 min t-DCF: the t-DCF of Kinnunen et al. (TASLP 2020, the form with the constant
    C0 that ASVspoof 2021 introduced) of the CM in tandem with the organisers' ASV system,
    normalised by C0 + min(C1, C2), the cost of a CM that accepts or rejects everything."""
    bona = as_scores(bonafide_cm, "bona fide CM")
    spf = as_scores(spoof_cm, "spoof CM")
    asv_cost = costs.p_target * costs.c_miss * ORGANISER_ASV_P_MISS + (
        costs.p_nontarget * costs.c_fa * ORGANISER_ASV_P_FA_NONTARGET)
    c0 = asv_cost
    c1 = costs.p_target * costs.c_miss - asv_cost
    c2 = costs.p_spoof * costs.c_fa_spoof * ORGANISER_ASV_P_FA_SPOOF
    p_miss_cm, p_fa_cm, _ = compute_det_curve(bona, spf)
    return float(np.min(c0 + c1 * p_miss_cm + c2 * p_fa_cm) / (c0 + min(c1, c2)))


def _first_at_least(values_of, floor: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For each row r, the first position p in [lo[r], hi[r]) with ``values_of(r, p) >= floor[r]``
    (hi[r] when there is none), for values that never decrease along p: bisection on all rows at
    once."""
    rows = np.arange(floor.size)
    lo, hi = lo.copy(), hi.copy()
    active = np.flatnonzero(lo < hi)
    while active.size:
        mid = (lo[active] + hi[active]) // 2
        ok = values_of(rows[active], mid) >= floor[active]
        hi[active] = np.where(ok, mid, hi[active])
        lo[active] = np.where(ok, lo[active], mid + 1)
        active = active[lo[active] < hi[active]]
    return lo


def t_eer(asv_target: npt.ArrayLike, asv_nontarget: npt.ArrayLike, asv_spoof: npt.ArrayLike,
          cm_target: npt.ArrayLike, cm_nontarget: npt.ArrayLike, cm_spoof: npt.ArrayLike) -> float:
    """Concurrent tandem EER in percent (Kinnunen et al., TASLP 2020), as the package returns it.

    For every ASV threshold the CM threshold is the one where the tandem miss and false-alarm
    rates are closest (first on ties); among the ASV thresholds allowed (ASV miss below the
    prior-weighted ASV acceptance), the pair closest to the intersection of the two systems'
    curves gives t-EER = P_fa_spoof(ASV) x P_fa(CM) there. The package's plain search scans every
    CM threshold for every ASV threshold (quadratic) and its faster one searches a window around
    a coarse grid's best point. Here the tandem difference, which never decreases along the CM
    curve nor with the ASV threshold, is bisected, giving the points of the plain search in
    O(n log n).
    """
    kinds = ("target", "nontarget", "spoof")
    asv = [as_scores(s, f"{kind} ASV") for s, kind in zip((asv_target, asv_nontarget, asv_spoof), kinds)]
    cm = [as_scores(s, f"{kind} CM") for s, kind in zip((cm_target, cm_nontarget, cm_spoof), kinds)]
    p_miss_asv, p_fa_non_asv, p_fa_spf_asv = three_class_curves(*asv)
    p_miss_cm, p_fa_cm, _ = compute_det_curve(np.concatenate(cm[:2]), cm[2])
    rho = T_EER_SPOOF_PRIOR

    allowed = np.flatnonzero(p_miss_asv < (1 - rho) * p_fa_non_asv + rho * p_fa_spf_asv)
    a, b, c = p_miss_asv[allowed], p_fa_non_asv[allowed], p_fa_spf_asv[allowed]

    def tandem_difference(rows: np.ndarray, j: np.ndarray) -> np.ndarray:
        x, y = p_miss_cm[j], p_fa_cm[j]
        return (x + (1 - x) * a[rows]) - ((1 - rho) * (1 - x) * b[rows] + rho * y * c[rows])

    # Where the difference turns non-negative: exactly on every 64th ASV threshold, then, since it
    # only moves towards the start of the CM curve as the ASV threshold rises, between those.
    n_rows, n_cm = allowed.size, p_miss_cm.size
    zero = np.zeros(n_rows)
    sampled = np.unique(np.append(np.arange(0, n_rows, 64), n_rows - 1))
    cross_at = np.full(n_rows, n_cm)
    cross_at[sampled] = _first_at_least(lambda r, j: tandem_difference(sampled[r], j), zero[sampled],
                                        np.zeros(sampled.size, dtype=int), np.full(sampled.size, n_cm))
    segment = np.searchsorted(sampled, np.arange(n_rows))  # next sampled row at or after each row
    cross = _first_at_least(tandem_difference, zero, cross_at[sampled[segment]],
                            np.where(segment > 0, cross_at[sampled[np.maximum(segment - 1, 0)]], n_cm))
    rows = np.arange(n_rows)
    below, above = np.clip(cross - 1, 0, n_cm - 1), np.clip(cross, 0, n_cm - 1)
    value_below, value_above = tandem_difference(rows, below), tandem_difference(rows, above)
    cm_index = np.where(np.abs(value_below) <= np.abs(value_above), below, above)
    # The first CM point of the closest value: only a run of equal values before ``below`` moves it.
    plateau = np.flatnonzero((cm_index == below) & (below > 0)
                             & (tandem_difference(rows, np.maximum(below - 1, 0)) == value_below))
    cm_index[plateau] = _first_at_least(lambda r, j: tandem_difference(plateau[r], j), value_below[plateau],
                                        np.zeros(plateau.size, dtype=int), below[plateau])

    with np.errstate(divide="ignore", invalid="ignore"):
        criterion = np.abs(b / c - p_fa_cm[cm_index] / (1 - p_miss_cm[cm_index]))
    usable = np.flatnonzero(criterion < np.inf)
    if usable.size == 0:
        raise InputValueError("t-EER is undefined: no ASV threshold where the tandem curves can meet")
    best = usable[np.argmin(criterion[usable])]
    return float(100 * (c[best] * p_fa_cm[cm_index[best]]))


# --- the package's files ---------------------------------------------------------------------


@dataclass(frozen=True)
class PackageTable:
    """Columns of a package file as string arrays, and the file line of each row."""

    path: str
    columns: dict[str, np.ndarray]
    lines: np.ndarray

    def numbers(self, name: str) -> np.ndarray:
        """A numeric column; a value that is not a number (or NaN) is an error naming its line."""
        values = self.columns[name]
        try:
            numbers = values.astype(np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(values) if not _is_float(str(v)))
            raise ScoreFileError(self.path, f"{name} {str(values[bad])!r} is not a number",
                                 int(self.lines[bad])) from None
        if np.isnan(numbers).any():
            raise ScoreFileError(self.path, f"{name} is NaN", int(self.lines[np.flatnonzero(np.isnan(numbers))[0]]))
        return numbers

    def labels(self, name: str, allowed: tuple[str, ...]) -> np.ndarray:
        """A label column whose values must be ``allowed``, each class present."""
        values = self.columns[name]
        bad = np.flatnonzero(~np.isin(values, allowed))
        if bad.size:
            raise ScoreFileError(self.path, f"{name} {str(values[bad[0]])!r} is not one of {', '.join(allowed)}",
                                 int(self.lines[bad[0]]))
        for label in allowed:
            if not np.any(values == label):
                raise ScoreFileError(self.path, f"no {label!r} trials")
        return values


def read_package_table(path: str | os.PathLike[str], columns: tuple[str, ...]) -> PackageTable:
    """A whitespace-separated file whose first (non-blank) line names its columns (the package's
    TSVs); the named ``columns`` must be among them."""
    lines = score_file_lines(path)
    _, header = next(lines, (1, []))
    missing = [c for c in columns if c not in header]
    if missing:
        raise ScoreFileError(path, f"header {' '.join(header)!r} lacks the column(s) {', '.join(missing)} "
                             f"(expected {' '.join(columns)})", 1)
    rows, numbers = [], []
    for number, fields in lines:
        if len(fields) != len(header):
            raise ScoreFileError(path, f"expected {len(header)} fields ({' '.join(header)}), got {len(fields)}", number)
        rows.append(fields)
        numbers.append(number)
    if not rows:
        raise ScoreFileError(path, "no rows after the header")
    table = np.array(rows, dtype=str)
    return PackageTable(os.fspath(path), {name: table[:, header.index(name)] for name in columns}, np.array(numbers))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _align(scores: PackageTable, keys: PackageTable, id_columns: tuple[str, ...]) -> np.ndarray:
    """For each score row, the key row of the same trial; both files must list the same trials once."""
    score_ids, key_ids = ([tuple(t.columns[c][i] for c in id_columns) for i in range(t.lines.size)]
                          for t in (scores, keys))
    for table, ids in ((keys, key_ids), (scores, score_ids)):
        if len(set(ids)) != len(ids):
            raise ScoreFileError(table.path, "a trial is listed more than once")
    position = {trial: i for i, trial in enumerate(key_ids)}
    extra = [t for t in score_ids if t not in position]
    if extra or len(score_ids) != len(key_ids):
        example = extra[0] if extra else sorted(set(key_ids) - set(score_ids))[0]
        raise ScoreFileError(scores.path, f"scores and keys ({keys.path}) cover different trials "
                             f"(e.g. {' '.join(example)})")
    return np.array([position[t] for t in score_ids])


def evaluate_cm_files(scores_path: str | os.PathLike[str], keys_path: str | os.PathLike[str]) -> dict[str, float]:
    """Track 1 metrics of a ``filename cm-score`` file against a ``filename cm-label`` file."""
    scores = read_package_table(scores_path, CM_SCORE_COLUMNS)
    keys = read_package_table(keys_path, CM_KEY_COLUMNS)
    order = _align(scores, keys, ("filename",))
    labels = keys.labels("cm-label", CM_LABELS)[order]
    values = scores.numbers("cm-score")
    return cm_metrics(values[labels == BONAFIDE], values[labels == SPOOF])


def evaluate_sasv_files(scores_path: str | os.PathLike[str], keys_path: str | os.PathLike[str]) -> dict[str, float]:
    """Track 2 metrics (``a_dcf``, ``min_tdcf``, ``t_eer`` in percent) of a
    ``spk filename cm-score asv-score sasv-score`` file against ``spk filename cm-label asv-label``."""
    scores = read_package_table(scores_path, SASV_SCORE_COLUMNS)
    keys = read_package_table(keys_path, SASV_KEY_COLUMNS)
    order = _align(scores, keys, ("spk", "filename"))
    cm_label = keys.labels("cm-label", CM_LABELS)[order]
    asv_label = keys.labels("asv-label", ASV_LABELS)[order]
    cm, asv, sasv = (scores.numbers(c) for c in ("cm-score", "asv-score", "sasv-score"))
    by_asv = {label: asv_label == label for label in ASV_LABELS}
    return {
        "a_dcf": a_dcf(*(sasv[by_asv[label]] for label in ASV_LABELS)),
        "min_tdcf": min_tdcf_organiser_asv(cm[cm_label == BONAFIDE], cm[cm_label == SPOOF]),
        "t_eer": t_eer(*(asv[by_asv[label]] for label in ASV_LABELS), *(cm[by_asv[label]] for label in ASV_LABELS)),
    }

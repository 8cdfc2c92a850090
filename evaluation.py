"""ASVspoof 2019 countermeasure metrics: EER, legacy min t-DCF and EER per attack.

The definitions are those of the ASVspoof 2019 evaluation package, so results are comparable
with published numbers. That includes its tie handling: the DET curve has one operating point
per pooled score, in stable ascending order with target (bona fide) scores placed before tied
non-target scores, rather than one point per distinct threshold value.

t-DCF: Kinnunen et al., "t-DCF: a Detection Cost Function for the Tandem Assessment of Spoofing
Countermeasures and Automatic Speaker Verification", Odyssey 2018 (the "legacy" form used for
ASVspoof 2019; see also IEEE/ACM TASLP 2020).

For emotional evaluation sets, :func:`emotion_report` gives the EER per emotion, per spoof system
and per system x emotion with bootstrap intervals; :func:`format_emotion_table` and
:func:`plot_emotion_eer` present it.

Score files of several runs over the same trials are fused by :func:`fuse_score_files`
(``mean`` of standardised scores or ``softmax-vote``; AMSDF's "vote" over seeds, Wu et al.,
IEEE TIFS 2024).

Also a command-line tool: ``python evaluation.py --scores CM --asv-scores ASV [--json]``, and
``python evaluation.py --fuse CM1 CM2 ... --method mean|softmax-vote --output FUSED``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Sequence, TypedDict

import numpy as np
import numpy.typing as npt

BONAFIDE = "bonafide"
SPOOF = "spoof"
CM_KEYS = (BONAFIDE, SPOOF)
ASV_KEYS = ("target", "nontarget", SPOOF)
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


@dataclass(frozen=True)
class CmScores:
    """A CM score file as parallel arrays, one entry per trial, in file order."""

    utt_ids: np.ndarray
    attacks: np.ndarray
    keys: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class AsvScores:
    """ASV scores split by trial type, as the t-DCF needs them."""

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray


class ScoreFileError(ValueError):
    """A score file that cannot be used; the message names the file and, if known, the line."""

    def __init__(self, path: str | os.PathLike[str], problem: str, line: int | None = None):
        self.path = os.fspath(path)
        self.problem = problem
        self.line = line
        where = self.path if line is None else f"{self.path}: line {line}"
        super().__init__(f"{where}: {problem}")


def _as_scores(values: npt.ArrayLike, name: str) -> np.ndarray:
    """Scores as a checked 1-D float64 array; empty or NaN input would give meaningless rates."""
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} scores must be one-dimensional, got shape {scores.shape}")
    if scores.size == 0:
        raise ValueError(f"{name} scores are empty")
    if np.isnan(scores).any():
        raise ValueError(f"{name} scores contain NaN")
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
    target = _as_scores(target_scores, "target")
    nontarget = _as_scores(nontarget_scores, "nontarget")
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
    bonafide = _as_scores(bonafide_cm, "bona fide CM")
    spoof = _as_scores(spoof_cm, "spoof CM")
    target = _as_scores(tar_asv, "target ASV")
    nontarget = _as_scores(non_asv, "nontarget ASV")
    spoof_at_asv = _as_scores(spoof_asv, "spoof ASV")

    _, asv_threshold = compute_eer(target, nontarget)
    p_fa_asv = np.count_nonzero(nontarget >= asv_threshold) / nontarget.size
    p_miss_asv = np.count_nonzero(target < asv_threshold) / target.size
    p_miss_spoof_asv = np.count_nonzero(spoof_at_asv < asv_threshold) / spoof_at_asv.size

    c1 = costs.p_tar * (costs.c_miss_cm - costs.c_miss_asv * p_miss_asv) - (
        costs.p_non * costs.c_fa_asv * p_fa_asv
    )
    c2 = costs.c_fa_cm * costs.p_spoof * (1 - p_miss_spoof_asv)
    if c1 < 0 or c2 < 0:
        raise ValueError(
            f"t-DCF cost weights must be non-negative, got C1={c1:.6g}, C2={c2:.6g}: "
            "the ASV system or the cost model is unusable for t-DCF"
        )
    normaliser = min(c1, c2)
    if normaliser == 0:
        raise ValueError(
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
    tar = _as_scores(target, "target")
    non = _as_scores(nontarget, "nontarget")
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


def _read_score_lines(
    path: str | os.PathLike[str], columns: tuple[str, ...], allowed_keys: tuple[str, ...]
) -> tuple[list[list[str]], np.ndarray]:
    """Fields before the score, and the scores, of a file whose last two columns are KEY SCORE.

    Blank lines are skipped; anything else malformed raises :class:`ScoreFileError`.
    """
    rows: list[list[str]] = []
    scores: list[float] = []
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise ScoreFileError(path, "not UTF-8 text", line_no) from None
            if not fields:
                continue
            if len(fields) != len(columns):
                raise ScoreFileError(
                    path,
                    f"expected {len(columns)} fields ({' '.join(columns)}), got {len(fields)}",
                    line_no,
                )
            if fields[-2] not in allowed_keys:
                raise ScoreFileError(
                    path,
                    f"unknown key {fields[-2]!r}, expected one of {', '.join(allowed_keys)}",
                    line_no,
                )
            try:
                score = float(fields[-1])
            except ValueError:
                problem = f"score {fields[-1]!r} is not a number"
                raise ScoreFileError(path, problem, line_no) from None
            if math.isnan(score):
                raise ScoreFileError(path, "score is NaN", line_no)
            rows.append(fields[:-1])
            scores.append(score)
    if not scores:
        raise ScoreFileError(path, "no scores found")
    return rows, np.array(scores, dtype=np.float64)


def _require_keys(
    path: str | os.PathLike[str], keys: np.ndarray, needed: tuple[str, ...]
) -> None:
    """Reject a file lacking a trial type the metrics need, while the file is still known."""
    for key in needed:
        if not np.any(keys == key):
            raise ScoreFileError(path, f"no {key!r} trials")


def read_cm_scores(path: str | os.PathLike[str]) -> CmScores:
    """Read ``UTT ATTACK KEY SCORE`` lines (KEY bonafide|spoof; ATTACK '-' for bona fide)."""
    rows, scores = _read_score_lines(path, ("utterance", "attack", "key", "score"), CM_KEYS)
    utt_ids, attacks, keys = (np.array(column) for column in zip(*rows))
    _require_keys(path, keys, CM_KEYS)
    return CmScores(utt_ids=utt_ids, attacks=attacks, keys=keys, scores=scores)


def read_asv_scores(path: str | os.PathLike[str]) -> AsvScores:
    """Read ``SOURCE KEY SCORE`` lines (KEY target|nontarget|spoof); SOURCE is not used."""
    rows, scores = _read_score_lines(path, ("source", "key", "score"), ASV_KEYS)
    keys = np.array([row[1] for row in rows])
    _require_keys(path, keys, ASV_KEYS)
    target, nontarget, spoof = (scores[keys == key] for key in ASV_KEYS)
    return AsvScores(target=target, nontarget=nontarget, spoof=spoof)


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
        raise ValueError(f"unknown CM keys {unknown}, expected {BONAFIDE!r} or {SPOOF!r}")
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


# ---------------------------------------------------------------------------------------------
# Score fusion across runs (AMSDF's "vote" over checkpoints trained with different seeds)

FUSION_METHODS = ("mean", "softmax-vote")


def align_runs(runs: Sequence[CmScores], paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """Scores of several runs as a (runs, trials) matrix in the first run's trial order.

    Every file must hold the same utterances, once each, with the same key and attack; the
    first file that does not is named in a :class:`ScoreFileError`.
    """
    first, first_path = runs[0], paths[0]
    position = {utt: i for i, utt in enumerate(first.utt_ids.tolist())}
    matrix = np.empty((len(runs), first.scores.size), dtype=np.float64)
    for row, (run, path) in enumerate(zip(runs, paths)):
        if len(set(run.utt_ids.tolist())) != run.utt_ids.size:
            raise ScoreFileError(path, "an utterance is listed more than once")
        unknown = [utt for utt in run.utt_ids.tolist() if utt not in position]
        if unknown or run.utt_ids.size != first.utt_ids.size:
            example = unknown[0] if unknown else sorted(set(position) - set(run.utt_ids.tolist()))[0]
            raise ScoreFileError(
                path, f"covers other utterances than {os.fspath(first_path)} (e.g. {example}); "
                "fused runs must score the same trials")
        order = np.array([position[utt] for utt in run.utt_ids.tolist()])
        for name, column, reference in (("key", run.keys, first.keys), ("attack", run.attacks, first.attacks)):
            differs = np.flatnonzero(column != reference[order])
            if differs.size:
                i = differs[0]
                raise ScoreFileError(
                    path, f"{run.utt_ids[i]} has {name} {str(column[i])!r} but "
                    f"{str(reference[order[i]])!r} in {os.fspath(first_path)}")
        matrix[row, order] = run.scores
    return matrix


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(1 / (1 + e^-x)) without overflow for large |x|."""
    return -np.logaddexp(0.0, -x)


def fuse_score_matrix(matrix: np.ndarray, method: str) -> np.ndarray:
    """One fused score per trial (column) from a (runs, trials) score matrix; higher = bona fide.

    ``mean``: each run is standardised over the trials (zero mean, unit variance; no labels
    used) and the standardised scores are averaged, so a run with larger logits does not
    outweigh the others. ``softmax-vote``: each score is read as the run's bona fide log-odds,
    so its softmax probability is p = sigmoid(score) (two-class softmax); the runs cast these
    soft votes and the fused score is the log-odds of their mean, log(mean p / mean (1 - p)):
    positive exactly when the average vote is bona fide, and free of the ties a fused
    probability would have where every run is confident.
    """
    if method == "mean":
        spread = matrix.std(axis=1, keepdims=True)
        if np.any(spread == 0):
            raise ValueError("a run gives every trial the same score; it cannot be standardised")
        return ((matrix - matrix.mean(axis=1, keepdims=True)) / spread).mean(axis=0)
    if method == "softmax-vote":
        log_bonafide = np.logaddexp.reduce(_log_sigmoid(matrix), axis=0)
        log_spoof = np.logaddexp.reduce(_log_sigmoid(-matrix), axis=0)
        return log_bonafide - log_spoof
    raise ValueError(f"unknown fusion method {method!r}, expected one of {', '.join(FUSION_METHODS)}")


def fuse_score_files(
    paths: Sequence[str | os.PathLike[str]], method: str, output: str | os.PathLike[str]
) -> CmScores:
    """Fuse CM score files of several runs and write ``UTT ATTACK KEY SCORE`` lines to ``output``,
    in the first file's order."""
    if len(paths) < 2:
        raise ValueError(f"fusion needs at least two score files, got {len(paths)}")
    if len({os.path.abspath(path) for path in paths}) < len(paths):
        raise ValueError("the same score file is given twice; each run must be fused once")
    if any(os.path.abspath(path) == os.path.abspath(output) for path in paths):
        raise ValueError(f"{os.fspath(output)}: the fused file would overwrite one of its inputs")
    runs = [read_cm_scores(path) for path in paths]
    fused = fuse_score_matrix(align_runs(runs, paths), method)
    first = runs[0]
    with open(output, "w", encoding="utf-8") as handle:
        for utt, attack, key, score in zip(first.utt_ids, first.attacks, first.keys, fused):
            handle.write(f"{utt} {attack} {key} {score:.6f}\n")
    return CmScores(utt_ids=first.utt_ids, attacks=first.attacks, keys=first.keys, scores=fused)


# ---------------------------------------------------------------------------------------------
# Emotional evaluation sets: EER per emotion, per system and per system x emotion


def _eer_cell(bonafide: np.ndarray, spoof: np.ndarray, n_boot: int, seed: int) -> dict:
    """EER (percent) with its bootstrap 95 % interval and trial counts; an empty side is reported
    as such (``eer`` None and a ``note``) instead of being dropped."""
    cell: dict = {"eer": None, "ci95": None, "n_bonafide": int(bonafide.size), "n_spoof": int(spoof.size)}
    if bonafide.size == 0 or spoof.size == 0:
        cell["note"] = "no bona fide trials" if bonafide.size == 0 else "no spoof trials"
        return cell
    cell["eer"] = 100 * compute_eer(bonafide, spoof)[0]
    cell["ci95"] = list(eer_bootstrap_ci(bonafide, spoof, n_boot=n_boot, seed=seed))
    return cell


def emotion_report(
    scores: npt.ArrayLike,
    keys: Sequence[str],
    systems: Sequence[str],
    emotions: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Metrics of an emotional set, one entry per trial (higher score = more bona fide).

    ``per_emotion``: bona fide of that emotion vs spoofs of that emotion; ``per_system``: that
    system's spoofs vs all bona fide; ``per_system_emotion``: that system's spoofs of an emotion
    vs the bona fide of the same emotion; ``pooled``: everything. Each cell has ``eer`` (percent),
    ``ci95`` (percentile bootstrap, ``n_boot`` replicates, ``seed``) and trial counts. ``empty``
    lists the cells that could not be scored and why.
    """
    cm = _as_scores(scores, "CM")
    key_array, system_array, emotion_array = (np.asarray(a, dtype=str) for a in (keys, systems, emotions))
    if not key_array.shape == system_array.shape == emotion_array.shape == cm.shape:
        raise ValueError("scores, keys, systems and emotions must be equally long")
    is_bonafide = key_array == BONAFIDE
    emotion_names = sorted(set(emotion_array.tolist()))
    spoof_systems = sorted(set(system_array[~is_bonafide].tolist()))

    def cell(bonafide_mask: np.ndarray, spoof_mask: np.ndarray) -> dict:
        return _eer_cell(cm[bonafide_mask & is_bonafide], cm[spoof_mask & ~is_bonafide], n_boot, seed)

    everything = np.ones_like(is_bonafide)
    report = {
        "pooled": cell(everything, everything),
        "per_emotion": {e: cell(emotion_array == e, emotion_array == e) for e in emotion_names},
        "per_system": {s: cell(everything, system_array == s) for s in spoof_systems},
        "per_system_emotion": {
            s: {e: cell(emotion_array == e, (system_array == s) & (emotion_array == e)) for e in emotion_names}
            for s in spoof_systems
        },
        "n_boot": n_boot,
    }
    report["empty"] = [f"{name}: {c['note']}" for name, c in [
        *((f"emotion {e}", c) for e, c in report["per_emotion"].items()),
        *((f"{s} x {e}", c) for s, row in report["per_system_emotion"].items() for e, c in row.items()),
    ] if c["eer"] is None]
    return report


def _format_cell(cell: dict) -> str:
    counts = f"{cell['n_bonafide']}+{cell['n_spoof']}"
    if cell["eer"] is None:
        return f"n/a ({counts})"
    low, high = cell["ci95"]
    return f"{cell['eer']:5.1f} [{low:4.1f},{high:5.1f}] ({counts})"


def format_emotion_table(report: dict) -> str:
    """Rows: emotions and 'all'; columns: all spoof systems, then each system. Each cell is
    'EER [95 % CI] (bona fide + spoof trials)', EERs in percent."""
    systems = list(report["per_system"])
    rows = [["emotion", "all systems", *systems]]
    for emotion, cell in report["per_emotion"].items():
        by_system = (_format_cell(report["per_system_emotion"][s][emotion]) for s in systems)
        rows.append([emotion, _format_cell(cell), *by_system])
    rows.append(["all", _format_cell(report["pooled"]), *(_format_cell(report["per_system"][s]) for s in systems)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(["EER % [bootstrap 95 % CI] (bona fide + spoof trials)", *lines])


def plot_emotion_eer(report: dict, path: str | os.PathLike[str], title: str = "EER per emotion") -> None:
    """Bar chart: one group per spoof system (and one for all systems), one bar per emotion,
    bootstrap 95 % intervals as error bars; cells without trials are marked n/a."""
    # Imported here: matplotlib is only needed for this figure and is slow to import.
    from matplotlib.figure import Figure

    groups = {"all systems": report["per_emotion"], **report["per_system_emotion"]}
    emotions = list(report["per_emotion"])
    width = 0.8 / max(len(emotions), 1)
    figure = Figure(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.0), layout="constrained")
    axes = figure.add_subplot()
    for i, emotion in enumerate(emotions):
        xs = np.arange(len(groups)) + (i - (len(emotions) - 1) / 2) * width
        cells = [row[emotion] for row in groups.values()]
        heights = [c["eer"] if c["eer"] is not None else 0.0 for c in cells]
        errors = np.array([[c["eer"] - c["ci95"][0], c["ci95"][1] - c["eer"]] if c["eer"] is not None else [0.0, 0.0]
                           for c in cells]).T
        axes.bar(xs, heights, width, yerr=errors, capsize=2, label=emotion)
        for x, c in zip(xs, cells):
            if c["eer"] is None:
                axes.text(x, 0.5, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
    axes.set_xticks(np.arange(len(groups)), list(groups))
    axes.set_ylabel("EER (%)")
    axes.set_title(title)
    axes.legend(title="emotion", fontsize=8)
    figure.savefig(path, dpi=120)


def _print_report(metrics: Metrics) -> None:
    """Human-readable summary for the terminal; --json is the machine-readable form."""
    print(f"CM EER:     {metrics['eer']:.6f} %")
    if metrics["min_tdcf"] is None:
        print("min t-DCF:  not computed (needs ASV scores: pass --asv-scores)")
    else:
        print(f"min t-DCF:  {metrics['min_tdcf']:.6f}")
    print(f"trials:     {metrics['n_bonafide']} bona fide, {metrics['n_spoof']} spoof")
    print("EER per attack:")
    print(f"  {'attack':<8} {'EER (%)':>10}")
    for attack, eer in metrics["per_attack"].items():
        print(f"  {attack:<8} {eer:>10.6f}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (2 for unusable input)."""
    parser = argparse.ArgumentParser(
        description="ASVspoof 2019 CM metrics: EER, min t-DCF and EER per attack; "
        "fusion of several runs' scores."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scores", help="CM score file: UTT ATTACK KEY SCORE")
    source.add_argument(
        "--fuse", nargs="+", metavar="SCORES",
        help="CM score files of several runs over the same trials: fuse them (see --method)",
    )
    parser.add_argument(
        "--method", choices=FUSION_METHODS, default="mean",
        help="--fuse: mean of per-run standardised scores, or softmax-vote (log-odds of the "
        "mean bona fide probability)",
    )
    parser.add_argument(
        "--output", default="fused_scores.txt", help="--fuse: fused score file to write"
    )
    parser.add_argument(
        "--asv-scores", help="ASV score file: SOURCE KEY SCORE (needed for min t-DCF)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (eer, min_tdcf, per_attack)"
    )
    args = parser.parse_args(argv)
    runs: dict[str, Metrics] = {}
    try:
        if args.fuse:
            fuse_score_files(args.fuse, args.method, args.output)
            runs = {path: evaluate_scores(path, args.asv_scores) for path in args.fuse}
        metrics = evaluate_scores(args.output if args.fuse else args.scores, args.asv_scores)
    except OSError as error:
        path = error.filename if error.filename is not None else (args.scores or args.output)
        print(f"error: {path}: {error.strerror or error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if args.json:
        if metrics["min_tdcf"] is None:
            print("note: min t-DCF needs ASV scores (--asv-scores); reporting EER only",
                  file=sys.stderr)
        summary = {key: metrics[key] for key in ("eer", "min_tdcf", "per_attack")}
        if args.fuse:
            summary.update(method=args.method, output=args.output, runs=[
                {"path": path, "eer": run["eer"], "min_tdcf": run["min_tdcf"]} for path, run in runs.items()
            ])
        print(json.dumps(summary))
    else:
        for path, run in runs.items():
            tdcf = "" if run["min_tdcf"] is None else f", min t-DCF {run['min_tdcf']:.6f}"
            print(f"run {path}: EER {run['eer']:.6f} %{tdcf}")
        if args.fuse:
            print(f"fused ({args.method}) -> {args.output}")
        _print_report(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Statistics per group of trials: EER per attack, condition and emotion with bootstrap
intervals, the worst emotion and the arousal gap, and everything reported for one scored set.
Printing is in ``emospoof.reports.tables``, pictures in ``emospoof.reports.plots``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt

from emospoof.core.emotions import HIGH_AROUSAL, LOW_AROUSAL, UNLABELLED
from emospoof.core.errors import InputValueError
from emospoof.core.labels import BONAFIDE, SPOOF
from emospoof.metrics.asvspoof5 import cm_metrics
from emospoof.metrics.asvspoof2019 import as_scores, compute_eer, eer_bootstrap_ci, evaluate_arrays
from emospoof.metrics.operating_point import accepted, group_factors, operating_point
from emospoof.metrics.score_files import AsvScores


def emotion_cells(section: dict) -> dict[str, float]:
    """Emotion -> EER (percent) of a report section's scorable ``per_emotion`` cells."""
    return {emotion: cell["eer"] for emotion, cell in section.get("per_emotion", {}).items() if cell.get("eer") is not None}


def worst_emotion(per_emotion: dict[str, float]) -> tuple[str, float]:
    """The emotion with the highest EER, and that EER (``per_emotion``: emotion -> EER)."""
    emotion = max(per_emotion, key=per_emotion.get)
    return emotion, per_emotion[emotion]


def arousal_gap(per_emotion: dict[str, float]) -> float | None:
    """Mean EER of the high-arousal emotions minus mean EER of the low-arousal ones (percentage
    points); None when either group has no emotion in ``per_emotion``."""
    high = [eer for emotion, eer in per_emotion.items() if emotion in HIGH_AROUSAL]
    low = [eer for emotion, eer in per_emotion.items() if emotion in LOW_AROUSAL]
    return float(np.mean(high) - np.mean(low)) if high and low else None


def _eer_cell(bonafide: np.ndarray, spoof: np.ndarray, n_boot: int, seed: int) -> dict:
    """EER (percent) with its bootstrap 95 % interval (none when ``n_boot`` is 0) and trial
    counts; an empty side is reported as such (``eer`` None and a ``note``) instead of being
    dropped."""
    cell: dict = {"eer": None, "ci95": None, "n_bonafide": int(bonafide.size), "n_spoof": int(spoof.size)}
    if bonafide.size == 0 or spoof.size == 0:
        cell["note"] = "no bona fide trials" if bonafide.size == 0 else "no spoof trials"
        return cell
    cell["eer"] = 100 * compute_eer(bonafide, spoof)[0]
    if n_boot:
        cell["ci95"] = list(eer_bootstrap_ci(bonafide, spoof, n_boot=n_boot, seed=seed))
    return cell


def per_emotion_cells(scores: np.ndarray, is_bonafide: np.ndarray, emotions: np.ndarray, n_boot: int,
                      seed: int) -> dict[str, dict]:
    """For each labelled emotion, bona fide trials of that emotion vs spoofs of that emotion;
    unlabelled trials ('-') are in no cell."""
    names = sorted(set(emotions.tolist()) - {UNLABELLED})
    return {e: _eer_cell(scores[is_bonafide & (emotions == e)], scores[~is_bonafide & (emotions == e)], n_boot, seed)
            for e in names}


def emotion_summary(per_emotion: dict[str, dict], is_bonafide: np.ndarray, emotions: np.ndarray) -> dict:
    """``worst_emotion``, ``arousal_gap`` and ``n_unlabelled`` (trials per class left out of the
    per-emotion cells because they carry no emotion label)."""
    unlabelled = emotions == UNLABELLED
    cells = emotion_cells({"per_emotion": per_emotion})
    worst = worst_emotion(cells) if cells else None
    return {"worst_emotion": {"emotion": worst[0], "eer": worst[1]} if worst else None,
            "arousal_gap": arousal_gap(cells),
            "n_unlabelled": {"bonafide": int(np.count_nonzero(unlabelled & is_bonafide)),
                             "spoof": int(np.count_nonzero(unlabelled & ~is_bonafide))}}


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
    cm = as_scores(scores, "CM")
    key_array, system_array, emotion_array = (np.asarray(a, dtype=str) for a in (keys, systems, emotions))
    if not key_array.shape == system_array.shape == emotion_array.shape == cm.shape:
        raise ValueError("scores, keys, systems and emotions must be equally long")
    is_bonafide = key_array == BONAFIDE
    emotion_names = sorted(set(emotion_array.tolist()) - {UNLABELLED})
    spoof_systems = sorted(set(system_array[~is_bonafide].tolist()))

    def cell(bonafide_mask: np.ndarray, spoof_mask: np.ndarray) -> dict:
        return _eer_cell(cm[bonafide_mask & is_bonafide], cm[spoof_mask & ~is_bonafide], n_boot, seed)

    everything = np.ones_like(is_bonafide)
    report = {
        "pooled": cell(everything, everything),
        "per_emotion": per_emotion_cells(cm, is_bonafide, emotion_array, n_boot, seed),
        "per_system": {s: cell(everything, system_array == s) for s in spoof_systems},
        "per_system_emotion": {
            s: {e: cell(emotion_array == e, (system_array == s) & (emotion_array == e)) for e in emotion_names}
            for s in spoof_systems
        },
        "n_boot": n_boot,
    }
    report.update(emotion_summary(report["per_emotion"], is_bonafide, emotion_array))
    report["empty"] = [f"{name}: {c['note']}" for name, c in [
        *((f"emotion {e}", c) for e, c in report["per_emotion"].items()),
        *((f"{s} x {e}", c) for s, row in report["per_system_emotion"].items() for e, c in row.items()),
    ] if c["eer"] is None]
    return report


def per_condition_cells(scores: np.ndarray, is_bonafide: np.ndarray,
                        conditions: Sequence[tuple[tuple[str, str], ...]]) -> dict[str, dict[str, dict]]:
    """EER per value of each condition factor (codec, transmission, vocoder, ...). A value that
    bona fide trials also carry (a codec applies to both classes) compares the two classes under
    it; a value only spoofs carry (a vocoder type) compares its spoofs with all bona fide trials."""
    factors = sorted({name for trial in conditions for name, _ in trial})
    report = {}
    for factor in factors:
        values = np.array([dict(trial).get(factor, UNLABELLED) for trial in conditions])
        bonafide_values = set(values[is_bonafide].tolist())
        report[factor] = {
            value: _eer_cell(scores[is_bonafide & ((values == value) if value in bonafide_values else True)],
                             scores[~is_bonafide & (values == value)], 0, 0)
            for value in sorted(set(values[~is_bonafide].tolist()) - {UNLABELLED})
        }
    return report


def dataset_report(scores: npt.ArrayLike, is_bonafide: npt.ArrayLike, attacks: Sequence[str],
                   emotions: Sequence[str], conditions: Sequence[tuple[tuple[str, str], ...]],
                   asv: AsvScores | None = None, n_boot: int = 1000, seed: int = 0,
                   speakers: Sequence[str] | None = None, fixed_threshold: tuple[float, str] | None = None) -> dict:
    """Everything reported for one scored evaluation set, one entry per trial (higher score = more
    bona fide): EER, min t-DCF (with ASV scores), EER per attack (spoofs of the attack vs all bona
    fide), counts; ``asvspoof5`` (min DCF, act DCF, Cllr, EER); ``per_condition``;
    ``per_emotion`` (with bootstrap intervals), ``worst_emotion``, ``arousal_gap`` and
    ``n_unlabelled``; ``operating_points``: FRR and FAR per group at the set's own EER threshold
    (``set_eer``) and at ``fixed_threshold`` (value, source) carried in from outside the set
    (``fixed``: e.g. the run's dev EER threshold), see ``emospoof.metrics.operating_point``."""
    cm = as_scores(scores, "CM")
    bonafide = np.asarray(is_bonafide, dtype=bool)
    if bonafide.all() or not bonafide.any():
        raise InputValueError("no bona fide or no spoof trial could be scored")
    report: dict = dict(evaluate_arrays(cm, np.where(bonafide, BONAFIDE, SPOOF), np.asarray(attacks), asv))
    report["per_attack"] = {a: e for a, e in report["per_attack"].items() if a != UNLABELLED}
    report["asvspoof5"] = cm_metrics(cm[bonafide], cm[~bonafide])
    report["per_condition"] = per_condition_cells(cm, bonafide, conditions)
    emotion_array = np.asarray(emotions, dtype=str)
    report["per_emotion"] = per_emotion_cells(cm, bonafide, emotion_array, n_boot, seed)
    report.update(emotion_summary(report["per_emotion"], bonafide, emotion_array))
    factors = group_factors(emotion_array, speakers if speakers is not None else [UNLABELLED] * cm.size, attacks,
                            conditions)
    eer_threshold = compute_eer(cm[bonafide], cm[~bonafide])[1]
    report["operating_points"] = {"set_eer": operating_point(cm, bonafide, factors, eer_threshold, "the set's EER",
                                                             n_boot, seed)}
    if fixed_threshold is not None:
        report["operating_points"]["fixed"] = operating_point(cm, bonafide, factors, *fixed_threshold, n_boot, seed)
    return report


def one_class_report(scores: npt.ArrayLike, is_bonafide: npt.ArrayLike, attacks: Sequence[str],
                     emotions: Sequence[str], speakers: Sequence[str],
                     conditions: Sequence[tuple[tuple[str, str], ...]],
                     fixed_threshold: tuple[float, str] | None, n_boot: int = 1000, seed: int = 0) -> dict:
    """The report of a set holding one class only, e.g. genuine emotional speech without spoofs:
    no EER can be computed, but a deployed detector's threshold still decides each trial. At
    ``fixed_threshold`` (value, source) it gives the acceptance and the FRR (bona fide) or FAR
    (spoofs) over the set and per emotion, arousal, speaker and condition; without a threshold
    it says how to get one."""
    cm = as_scores(scores, "CM")
    bonafide = np.asarray(is_bonafide, dtype=bool)
    kind = "bonafide" if bonafide.all() else "spoof"
    report: dict = {"one_class": kind, "n_bonafide": int(bonafide.sum()), "n_spoof": int((~bonafide).sum()),
                    "score_mean": float(cm.mean()), "score_std": float(cm.std()), "operating_points": {}}
    if fixed_threshold is None:
        report["note"] = ("only one class: no EER; give a threshold (main.py --eval --threshold, or evaluate a run "
                          "whose dev scores give one) to get the error rates at it")
        return report
    factors = group_factors(emotions, speakers, attacks, conditions)
    report["operating_points"]["fixed"] = operating_point(cm, bonafide, factors, *fixed_threshold, n_boot, seed)
    rates = report["operating_points"]["fixed"]["pooled"]
    report["acceptance"] = 100 * np.mean(accepted(cm, fixed_threshold[0]))
    report["frr" if kind == "bonafide" else "far"] = rates["frr" if kind == "bonafide" else "far"]["rate"]
    return report

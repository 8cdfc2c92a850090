"""What people read: the printed metrics table, the report of one evaluation set (ASVspoof 2019
and ASVspoof 5 metrics, EER per attack, condition and emotion, the worst emotion and the arousal
gap), the per-emotion report of an emotional set, the summary table across sets, and the
pictures: bar chart of EER per emotion, DET curves, score histograms.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import numpy.typing as npt

from asvspoof5_metrics import cm_metrics
from metrics import BONAFIDE, AsvScores, Metrics, as_scores, compute_det_curve, compute_eer, eer_bootstrap_ci, evaluate_arrays

UNLABELLED = "-"  # the emotion of a trial without an emotion label

# Arousal of the emotions the sets label (Russell's circumplex model of affect, J. Pers. Soc.
# Psychol. 1980): high-arousal speech is the speech countermeasures miss most.
HIGH_AROUSAL = ("angry", "happy", "surprised", "fearful", "disgust")
LOW_AROUSAL = ("neutral", "calm", "sad")


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


def format_metrics(title: str, metrics: Metrics, digits: int = 3, tdcf_digits: int = 5) -> str:
    """EER (percent, ``digits`` decimals), min t-DCF, trial counts and the EER of each attack."""
    tdcf = ("n/a (needs ASV scores)" if metrics["min_tdcf"] is None
            else f"{metrics['min_tdcf']:.{tdcf_digits}f}")
    lines = [f"{title}: EER {metrics['eer']:.{digits}f} %   min t-DCF {tdcf}",
             f"  trials: {metrics['n_bonafide']} bona fide, {metrics['n_spoof']} spoof"]
    if metrics["per_attack"]:
        lines.append(f"  {'attack':<8} {'EER (%)':>{digits + 5}}")
        lines += [f"  {attack:<8} {eer:>{digits + 5}.{digits}f}" for attack, eer in metrics["per_attack"].items()]
    return "\n".join(lines)


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
    return "\n".join(["EER % [bootstrap 95 % CI] (bona fide + spoof trials)", _text_table(rows)])


def plot_emotion_eer(report: dict, path: str | os.PathLike[str], title: str = "EER per emotion",
                     pooled_label: str = "all systems") -> None:
    """Bar chart: one group per spoof system (``per_system_emotion``, may be empty) and one for
    all of them (``pooled_label``), one bar per emotion, bootstrap 95 % intervals as error bars;
    cells without trials are marked n/a."""
    # Imported here: matplotlib is only needed for this figure and is slow to import.
    from matplotlib.figure import Figure

    groups = {pooled_label: report["per_emotion"], **report.get("per_system_emotion", {})}
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


# ---------------------------------------------------------------------------------------------
# One evaluation set, and the summary across sets


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
                   asv: AsvScores | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Everything reported for one scored evaluation set, one entry per trial (higher score = more
    bona fide): EER, min t-DCF (with ASV scores), EER per attack (spoofs of the attack vs all bona
    fide), counts; ``asvspoof5`` (min DCF, act DCF, Cllr, EER); ``per_condition``;
    ``per_emotion`` (with bootstrap intervals), ``worst_emotion``, ``arousal_gap`` and
    ``n_unlabelled``."""
    cm = as_scores(scores, "CM")
    bonafide = np.asarray(is_bonafide, dtype=bool)
    if bonafide.all() or not bonafide.any():
        raise ValueError("no bona fide or no spoof trial could be scored")
    report: dict = dict(evaluate_arrays(cm, np.where(bonafide, BONAFIDE, "spoof"), np.asarray(attacks), asv))
    report["per_attack"] = {a: e for a, e in report["per_attack"].items() if a != UNLABELLED}
    report["asvspoof5"] = cm_metrics(cm[bonafide], cm[~bonafide])
    report["per_condition"] = per_condition_cells(cm, bonafide, conditions)
    emotion_array = np.asarray(emotions, dtype=str)
    report["per_emotion"] = per_emotion_cells(cm, bonafide, emotion_array, n_boot, seed)
    report.update(emotion_summary(report["per_emotion"], bonafide, emotion_array))
    return report


def format_emotion_cells(report: dict) -> str:
    """A set's per-emotion EERs as a table, with the worst emotion, the arousal gap and the
    unlabelled trials."""
    gap, worst, unlabelled = report["arousal_gap"], report["worst_emotion"], report["n_unlabelled"]
    rows = [["emotion", "EER % [95 % CI] (bona fide + spoof)"]]
    rows += [[emotion, _format_cell(cell)] for emotion, cell in report["per_emotion"].items()]
    return "\n".join([
        f"  per emotion: worst {worst['emotion'] if worst else 'n/a'}, arousal gap "
        f"{'n/a' if gap is None else f'{gap:+.1f} points'}, unlabelled {unlabelled['bonafide']}+{unlabelled['spoof']}",
        *("  " + line for line in _text_table(rows).splitlines()),
    ])


SUMMARY_COLUMNS = (("dataset", "{}"), ("bona fide", "{}"), ("spoof", "{}"), ("EER %", "{:.3f}"),
                   ("min t-DCF", "{:.4f}"), ("min DCF", "{:.4f}"), ("act DCF", "{:.4f}"), ("Cllr", "{:.4f}"),
                   ("act DCF cal.", "{:.4f}"), ("Cllr cal.", "{:.4f}"), ("worst emotion", "{}"))


def summary_row(name: str, report: dict) -> dict:
    """One line of the summary table: a set's headline numbers (None where they do not apply)."""
    calibrated = (report.get("calibration") or {}).get("after", {})
    worst = report.get("worst_emotion")
    values = (name, report["n_bonafide"], report["n_spoof"], report["eer"], report["min_tdcf"],
              report["asvspoof5"]["min_dcf"], report["asvspoof5"]["act_dcf"], report["asvspoof5"]["cllr"],
              calibrated.get("act_dcf"), calibrated.get("cllr"),
              f"{worst['emotion']} ({worst['eer']:.1f} %)" if worst else None)
    return dict(zip((c for c, _ in SUMMARY_COLUMNS), values))


def format_table(rows: list[dict], formats: dict[str, str] | None = None) -> str:
    """Rows of equal keys as an aligned text table; None prints as '-'."""
    formats = formats or dict(SUMMARY_COLUMNS)
    columns = list(rows[0])
    return _text_table([columns] + [["-" if row[c] is None else formats.get(c, "{}").format(row[c]) for c in columns]
                                     for row in rows])


def _text_table(rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, a rule under the first row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Pictures

DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95)
DET_POINTS = 2000  # points drawn per curve; a million-trial curve is thinned to this


def _probit(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (the DET axes), rates clipped to [1e-5, 1 - 1e-5]."""
    from statistics import NormalDist

    inverse = NormalDist().inv_cdf
    return np.array([inverse(v) for v in np.clip(p, 1e-5, 1 - 1e-5)])


def plot_det(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str], title: str) -> None:
    """DET curves on normal-deviate axes, one per label: (bona fide scores, spoof scores); the
    legend gives each curve's EER."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5.0), layout="constrained")
    axes = figure.add_subplot()
    for label, (bonafide, spoof) in curves.items():
        frr, far, _ = compute_det_curve(bonafide, spoof)
        keep = np.unique(np.linspace(0, frr.size - 1, min(frr.size, DET_POINTS)).astype(int))
        eer = 100 * compute_eer(bonafide, spoof)[0]
        axes.plot(_probit(far[keep]), _probit(frr[keep]), label=f"{label} (EER {eer:.1f} %)")
    ticks = _probit(np.array(DET_TICKS))
    labels = [f"{100 * t:g}" for t in DET_TICKS]
    axes.set_xticks(ticks, labels)
    axes.set_yticks(ticks, labels)
    axes.set_xlim(ticks[0], ticks[-1])
    axes.set_ylim(ticks[0], ticks[-1])
    axes.set_xlabel("false acceptance rate of spoofs (%)")
    axes.set_ylabel("miss rate of bona fide speech (%)")
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    axes.legend(fontsize=7, loc="upper right")
    figure.savefig(path, dpi=120)


def plot_score_histogram(bonafide: np.ndarray, spoof: np.ndarray, path: str | os.PathLike[str], title: str) -> None:
    """Score distributions of bona fide and spoof trials on shared bins, as densities."""
    from matplotlib.figure import Figure

    edges = np.histogram_bin_edges(np.concatenate((bonafide, spoof)), bins=60)
    figure = Figure(figsize=(6.0, 3.5), layout="constrained")
    axes = figure.add_subplot()
    axes.hist(bonafide, bins=edges, density=True, alpha=0.6, label=f"bona fide ({bonafide.size})")
    axes.hist(spoof, bins=edges, density=True, alpha=0.6, label=f"spoof ({spoof.size})")
    axes.set_xlabel("score (higher = more bona fide)")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)


CURVE_TITLES = {"eer": "EER (%)", "min_tdcf": "min t-DCF", "macro_f1": "macro-F1"}


def plot_training_curves(rows: list[dict], path: str | os.PathLike[str]) -> None:
    """The curves of a training run from its ``metrics.csv`` rows: one panel per measure (loss,
    accuracy, EER, ...) with its train / dev / eval columns, and one for the learning rate;
    epochs that set a new best are shaded."""
    from matplotlib.figure import Figure

    def values(column: str) -> list[float]:
        return [float(row[column]) if row.get(column) not in (None, "") else np.nan for row in rows]

    panels: dict[str, list[str]] = {}
    for column in dict.fromkeys(key for row in rows for key in row):
        split, _, measure = column.partition("_")
        if split in ("train", "dev", "eval") and measure:
            panels.setdefault(measure, []).append(column)
    panels["learning rate"] = ["lr"]
    epochs = values("epoch")
    figure = Figure(figsize=(3.0 * len(panels), 3.0), layout="constrained")
    for index, (measure, columns) in enumerate(panels.items(), start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for epoch, row in zip(epochs, rows):
            if str(row.get("new_best")) == "1":
                axes.axvspan(epoch - 0.5, epoch + 0.5, color="tab:green", alpha=0.08)
        for column in columns:
            axes.plot(epochs, values(column), marker="o", markersize=3, label=column)
        axes.set(title=CURVE_TITLES.get(measure, measure.replace("_", " ")), xlabel="epoch")
        axes.grid(alpha=0.3)
        if measure != "learning rate":
            axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)

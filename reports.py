"""What people read: the printed metrics table, the per-emotion report of an emotional set with
its table and bar chart.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import numpy.typing as npt

from metrics import BONAFIDE, Metrics, as_scores, compute_eer, eer_bootstrap_ci

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
    cm = as_scores(scores, "CM")
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

"""Pictures people look at rather than read: EER per emotion, error rates per group at one
threshold, DET curves, score histograms, training curves, ablations, the seed comparison and the
SER confusion matrix. matplotlib is imported inside each function: it is slow to import and only
needed when a picture is drawn."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from emospoof.metrics.asvspoof2019 import compute_det_curve, compute_eer


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



def plot_ablations(summary: dict, path: Path, title: str) -> None:
    """One panel per scored set: per-emotion EER under each ablation (for a genuine-only set, the
    per-emotion FRR at the fixed threshold)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5 * len(summary), 4.0), layout="constrained")
    for index, (name, entry) in enumerate(summary.items()):
        axes = figure.add_subplot(1, len(summary), index + 1)
        by_ablation, measure = ((entry["per_emotion"], "EER (%)") if entry["per_emotion"]["none"]
                                else (entry["frr_per_emotion"], "FRR at the fixed threshold (%)"))
        emotions = list(by_ablation["none"])
        width = 0.8 / len(by_ablation)
        for i, (ablation, cells) in enumerate(by_ablation.items()):
            xs = np.arange(len(emotions)) + (i - (len(by_ablation) - 1) / 2) * width
            axes.bar(xs, [cells.get(e, 0.0) for e in emotions], width, label=ablation)
        axes.set_xticks(np.arange(len(emotions)), emotions)
        axes.set_ylabel(measure)
        axes.set_title(f"{title}: {name}")
        axes.legend(title="emotion_ablation", fontsize=8)
    figure.savefig(path, dpi=120)



def plot_comparison(result: dict, path: Path) -> None:
    """Grouped bars: per-emotion and pooled EERs of each model (mean over seeds, sd as error bars)."""
    from matplotlib.figure import Figure

    models = result["models"]
    names = [n for n in dict.fromkeys(n for e in models.values() for n in e["summary"])
             if " EER" in n and "t-DCF" not in n]
    if not names:
        return
    figure = Figure(figsize=(max(7.0, 0.55 * len(names) * max(1, len(models)) / 2 + 3), 4.5), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(models)
    for i, (label, entry) in enumerate(models.items()):
        means = [entry["summary"].get(n, {}).get("mean", math.nan) for n in names]
        sds = [entry["summary"].get(n, {}).get("sd", 0.0) for n in names]
        axes.bar(np.arange(len(names)) + (i - (len(models) - 1) / 2) * width, means, width, yerr=sds, capsize=2,
                 label=label)
    axes.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("EER (%)")
    axes.set_title("EER by set and emotion: mean ± sd over seeds")
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120)



def plot_confusion(report: dict, names: tuple[str, ...], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(names), 0.8 + 0.7 * len(names)))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {100 * report['accuracy']:.1f} %, macro-F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_operating_point(point: dict, path: str | os.PathLike[str], title: str) -> None:
    """FRR (bona fide rejected) and FAR (spoofs accepted) at one threshold, per emotion (else per
    value of the point's first factor) and pooled, with bootstrap 95 % intervals; a set of one
    class gets its one panel. The threshold and where it comes from are in the title."""
    import textwrap

    from matplotlib.figure import Figure

    factor = "emotion" if "emotion" in point["groups"] else next(iter(point["groups"]))
    cells = {**point["groups"][factor], "pooled": point["pooled"]}
    rates = [(rate, words) for rate, words in (("frr", "bona fide rejected (FRR, %)"), ("far", "spoofs accepted (FAR, %)"))
             if any(cell[rate] is not None for cell in cells.values())]
    figure = Figure(figsize=(max(4.5, 0.75 * len(cells) + 1.5) * len(rates), 4.4), layout="constrained")
    for index, (rate, words) in enumerate(rates, start=1):
        axes = figure.add_subplot(1, len(rates), index)
        names = list(cells)
        values = [cells[n][rate] for n in names]
        heights = [v["rate"] if v else 0.0 for v in values]
        errors = np.array([[v["rate"] - v["ci95"][0], v["ci95"][1] - v["rate"]] if v else [0.0, 0.0]
                           for v in values]).T
        axes.bar(np.arange(len(names)), heights, 0.7, yerr=errors, capsize=2,
                 color=["tab:gray" if n == "pooled" else ("tab:red" if rate == "frr" else "tab:blue") for n in names])
        for x, v in enumerate(values):
            axes.text(x, 0.5, "n/a" if v is None else str(v["n"]), ha="center", va="bottom", fontsize=7,
                      rotation=90 if v is None else 0)
        axes.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=8)
        axes.set_ylim(0, 100)
        axes.set_ylabel(words)
        axes.grid(axis="y", alpha=0.3)
    caption = f"threshold {point['threshold']:.3f}: {point['source']} (bar labels: trials)"
    figure.suptitle("\n".join([title, *textwrap.wrap(caption, 90)]), fontsize=9)
    figure.savefig(path, dpi=120)

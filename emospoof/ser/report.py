"""Reports of a speech-emotion classifier: accuracy, macro-F1, per-class precision / recall / F1,
the confusion matrix (printed, in ``ser_report.json`` and as a PNG); the training curves are
``emospoof.reports.plots.plot_training_curves``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_utils import SkipReport, Trial
from emospoof.reports.plots import plot_confusion
from emospoof.ser.ravdess import class_names

REPORT = "ser_report.json"
CONFUSION_PNG = "confusion_matrix.png"


def classification_report(labels: list[int], predictions: list[int], names: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1, per-class precision / recall / F1 / support and the confusion matrix
    (rows: true class, columns: predicted), over the classes in ``names``."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    classes = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    return {
        "n": len(labels),
        "accuracy": float(np.mean(np.array(labels) == np.array(predictions))),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        "chance_accuracy": float(np.bincount(labels, minlength=len(names)).max() / len(labels)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(names)},
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def print_report(title: str, report: dict) -> None:
    tqdm.write(f"{title}: accuracy {100 * report['accuracy']:.1f} %, macro-F1 {report['macro_f1']:.3f} "
               f"({report['n']} clips; majority class {100 * report['chance_accuracy']:.1f} %)")
    tqdm.write(f"  {'class':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>4}")
    for name, row in report["per_class"].items():
        tqdm.write(f"  {name:<10} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} {row['support']:4d}")


def write_report(run_dir: Path, config: dict, splits: dict[str, list[Trial]], reports: dict[str, dict],
                 extra: dict, skipped: SkipReport) -> dict:
    """``ser_report.json`` and the confusion-matrix PNG of the test split in ``run_dir``."""
    names = class_names(config)
    result = {
        "backend": config["backend"],
        "classes": list(names),
        "split": config.get("split", "actor"),
        "actors": {name: sorted({int(t.speaker) for t in trials}) for name, trials in splits.items()},
        "clips": {name: len(trials) for name, trials in splits.items()},
        **reports,
        **extra,
        "skipped_files": dict(sorted(skipped.reasons.items())),
    }
    (run_dir / REPORT).write_text(json.dumps(result, indent=2))
    plot_confusion(reports["test"], names, run_dir / CONFUSION_PNG, f"{config['backend']} on test actors "
                   f"{','.join(map(str, result['actors']['test']))}")
    print_report("test", reports["test"])
    tqdm.write(f"report: {run_dir / REPORT}")
    return result

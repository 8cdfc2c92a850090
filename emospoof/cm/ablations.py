"""Does an emotion-conditioned model use the emotion it is given? ``main.py --eval --ablations``
evaluates it with ``emotion_ablation`` none, zero, mean and shuffle (``models/emotion/conditioned.py``)
and reports what each changes per emotion and at the fixed threshold: a model that uses its
emotion input gets worse without it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from emospoof.cm.evaluation import EVAL_REPORT, evaluate_eval_set
from emospoof.core.checkpoint import write_atomically
from emospoof.core.config import ConfigError
from emospoof.metrics.groups import emotion_cells
from emospoof.reports.plots import plot_ablations
from emospoof.reports.tables import format_ablations
from models.emotion.conditioned import ABLATIONS

ABLATIONS_REPORT = "ablations.json"
ABLATIONS_PLOT = "ablations_per_emotion.png"


def _frr_at_threshold(report: dict) -> tuple[float | None, dict[str, float]]:
    """The FRR at the fixed threshold, pooled and per emotion (None and {} without a threshold)."""
    point = report.get("operating_points", {}).get("fixed")
    if not point or point["pooled"]["frr"] is None:
        return None, {}
    per_emotion = {e: c["frr"]["rate"] for e, c in point["groups"].get("emotion", {}).items() if c["frr"]}
    return point["pooled"]["frr"]["rate"], per_emotion


def _has_emotions(report: dict) -> bool:
    return "error" not in report and bool(report.get("per_emotion") or _frr_at_threshold(report)[1])


def ablation_summary(reports: dict[str, dict]) -> dict:
    """Per scored set with emotion labels: pooled and per-emotion EER under each ablation, the
    change from 'none', and the FRR at the fixed threshold (genuine-only sets have the FRR only)."""
    summary = {}
    for name, baseline in reports["none"]["datasets"].items():
        if not _has_emotions(baseline):
            continue
        sets = {ablation: report["datasets"][name] for ablation, report in reports.items()}
        cells = {ablation: emotion_cells(report) for ablation, report in sets.items()}
        summary[name] = {
            "pooled": {ablation: report.get("eer") for ablation, report in sets.items()},
            "frr_at_threshold": {ablation: _frr_at_threshold(report)[0] for ablation, report in sets.items()},
            "frr_per_emotion": {ablation: _frr_at_threshold(report)[1] for ablation, report in sets.items()},
            "per_emotion": cells,
            "change_vs_none": {ablation: {emotion: eer - cells["none"][emotion] for emotion, eer in per_emotion.items()
                                          if emotion in cells["none"]}
                               for ablation, per_emotion in cells.items() if ablation != "none"},
        }
    return summary


def evaluate_ablations(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                       dev_scores: Path | None = None, threshold: str | None = None) -> dict:
    """Evaluate an emotion-conditioned model with ``emotion_ablation`` none, zero, mean and shuffle
    (each report in ``run_dir/ablations/<name>/``) on every set, and report what each changes on
    every set with emotion labels: pooled and per-emotion EER, and the FRR at the run's fixed
    threshold. A model that uses the emotion it is given gets worse without it."""
    if not hasattr(model, "ablation"):
        raise ConfigError(f"--ablations: {config['model_config']['architecture']} has no emotion input to ablate")
    configured, reports = model.ablation, {}
    try:
        for name in ABLATIONS:
            model.ablation = name
            folder = run_dir / "ablations" / name
            folder.mkdir(parents=True, exist_ok=True)
            tqdm.write(f"emotion_ablation '{name}':")
            # eval conditions and emotion calibration once, for the model as it is
            reports[name] = evaluate_eval_set(model, config, device, folder, dev_scores=dev_scores,
                                              conditions=name == "none", threshold=threshold)
    finally:
        model.ablation = configured
    summary = ablation_summary(reports)
    tqdm.write(format_ablations(summary))
    (run_dir / ABLATIONS_REPORT).write_text(json.dumps(summary, indent=2))
    if summary:
        plot_ablations(summary, run_dir / ABLATIONS_PLOT, config["model_config"]["architecture"])
    report = {**reports["none"], "ablations": summary}
    write_atomically(run_dir / EVAL_REPORT, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report

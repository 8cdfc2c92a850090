"""Does an emotion-conditioned model use the emotion it is given? ``main.py --eval --ablations``
evaluates it with ``emotion_ablation`` none, zero and shuffle and reports what each changes per
emotion: a model that uses its emotion input gets worse without it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from emospoof.cm.evaluation import EVAL_REPORT, evaluate_eval_set
from emospoof.core.config import ConfigError
from emospoof.metrics.groups import emotion_cells
from emospoof.reports.plots import plot_ablations
from emospoof.reports.tables import format_ablations

ABLATIONS_REPORT = "ablations.json"
ABLATIONS_PLOT = "ablations_per_emotion.png"
EMOTION_SETS = {"la_eval": "LA eval", "emotional_set": "emotional set"}


def ablation_summary(reports: dict[str, dict]) -> dict:
    """Per scored set: pooled and per-emotion EER under each ablation, and the change from 'none'."""
    summary = {}
    for key, title in EMOTION_SETS.items():
        if key not in reports["none"]:
            continue
        pooled = {name: (report[key].get("pooled", {}).get("eer") if key == "emotional_set" else report[key]["eer"])
                  for name, report in reports.items()}
        cells = {name: emotion_cells(report[key]) for name, report in reports.items()}
        summary[title] = {
            "pooled": pooled, "per_emotion": cells,
            "change_vs_none": {name: {emotion: eer - cells["none"][emotion] for emotion, eer in per_emotion.items()
                                      if emotion in cells["none"]}
                               for name, per_emotion in cells.items() if name != "none"},
        }
    return summary


def evaluate_ablations(model: nn.Module, config: dict, device: torch.device, run_dir: Path) -> dict:
    """Evaluate an emotion-conditioned model with ``emotion_ablation`` none, zero and shuffle (each
    report in ``run_dir/ablations/<name>/``) and report what each ablation changes per emotion. A
    model that uses the emotion it is given gets worse without it."""
    if not hasattr(model, "ablation"):
        raise ConfigError(f"--ablations: {config['model_config']['architecture']} has no emotion input to ablate")
    names = ["none", "zero", "shuffle"]
    if config.get("eval_mode", "first") == "full":  # shuffle needs one window per utterance in a batch
        names.remove("shuffle")
        tqdm.write("note: --ablations: 'shuffle' needs eval_mode 'first'; evaluating none and zero")
    configured, reports = model.ablation, {}
    for name in names:
        model.ablation, model._last_emotion = name, None
        folder = run_dir / "ablations" / name
        folder.mkdir(parents=True, exist_ok=True)
        tqdm.write(f"emotion_ablation '{name}':")
        reports[name] = evaluate_eval_set(model, config, device, folder)
    model.ablation = configured
    summary = ablation_summary(reports)
    tqdm.write(format_ablations(summary))
    (run_dir / ABLATIONS_REPORT).write_text(json.dumps(summary, indent=2))
    if summary:
        plot_ablations(summary, run_dir / ABLATIONS_PLOT, config["model_config"]["architecture"])
    report = {**reports["none"], "ablations": summary}
    (run_dir / EVAL_REPORT).write_text(json.dumps(report, indent=2))
    return report

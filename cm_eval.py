"""Evaluating a countermeasure: LA eval (EER, min t-DCF, EER per attack) and the emotional set
(EER per emotion, system and system x emotion), with score files, printed tables, a bar chart and
``eval_report.json`` in the run folder. Used by ``main.py --eval`` and at the end of training.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cm_config import has_la_eval, load_emotional_set, resolve_asv_path
from config import ConfigError
from data_utils import SkipReport, Trial, la_trials
from metrics import AsvScores, Metrics, evaluate_arrays, read_asv_scores
from reports import emotion_cells, emotion_report, format_emotion_table, format_metrics, plot_emotion_eer
from scoring import score_trials, write_score_file

EMO_SCORES = "emo_scores.txt"
EMO_PLOT = "emo_eer_per_emotion.png"
EVAL_REPORT = "eval_report.json"


def load_asv(config: dict, key: str, default: str | None) -> AsvScores | None:
    path = resolve_asv_path(config, key, default)
    return read_asv_scores(path) if path else None


def metrics_for(trials: list[Trial], scores: dict[str, float], asv: AsvScores | None) -> Metrics:
    """The metrics of the scored ``trials`` (those missing from ``scores`` were skipped)."""
    scored = [t for t in trials if t.utt_id in scores]
    return evaluate_arrays(
        np.array([scores[t.utt_id] for t in scored]),
        ["bonafide" if t.label == 1 else "spoof" for t in scored],
        [t.attack for t in scored],
        asv,
    )


def evaluate_emotional_set(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                           skips: SkipReport) -> dict:
    """Score ``emo_dataset``; EER per emotion, system and system x emotion (``reports.emotion_report``),
    printed as a table, with its score file and bar chart in ``run_dir``."""
    emo_set = load_emotional_set(config)
    scores = score_trials(model, emo_set.trials, config, device, skips, "emotional set")
    write_score_file(run_dir / EMO_SCORES, emo_set.trials, scores)
    scored = [t for t in emo_set.trials if t.utt_id in scores]
    if not any(t.label == 1 for t in scored) or not any(t.label == 0 for t in scored):
        raise ValueError(f"{config['emo_dataset']}: no bona fide or no spoof trial could be scored")
    report = emotion_report([scores[t.utt_id] for t in scored],
                            ["bonafide" if t.label == 1 else "spoof" for t in scored],
                            [t.attack for t in scored], [t.emotion for t in scored])
    report.update(dataset=str(config["emo_dataset"]), bonafide_system=emo_set.bonafide_system,
                  missing=emo_set.missing, score_file=str(run_dir / EMO_SCORES),
                  n_scored=len(scored), n_unscored=len(emo_set.trials) - len(scored))
    for problem in emo_set.missing + report["empty"]:
        tqdm.write(f"warning: emotional set: {problem}")
    tqdm.write(f"Emotional set {config['emo_dataset']} (bona fide: {emo_set.bonafide_system})\n"
               + format_emotion_table(report))
    plot_emotion_eer(report, run_dir / EMO_PLOT, f"{config['model_config']['architecture']}: EER per emotion")
    report["plot"] = str(run_dir / EMO_PLOT)
    return report


def evaluate_eval_set(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                      extra: dict | None = None) -> dict:
    """Score LA eval (when present) and the emotional set (when configured), write the score
    files and ``eval_report.json``, print the tables."""
    skips = SkipReport(tqdm.write)
    report = {}
    if has_la_eval(config):
        trials = la_trials(config["database_path"], "eval")
        scores = score_trials(model, trials, config, device, skips, "eval")
        score_path = run_dir / config.get("eval_output", "eval_scores.txt")
        write_score_file(score_path, trials, scores)
        metrics = metrics_for(trials, scores, load_asv(config, "asv_score_path", None))
        tqdm.write(format_metrics("LA eval", metrics))
        report.update(score_file=str(score_path), la_eval=metrics, n_scored=len(scores))
    if "emo_dataset" in config:
        report["emotional_set"] = evaluate_emotional_set(model, config, device, run_dir, skips)
    report.update(n_skipped=len(skips), **(extra or {}))
    if skips:
        skips.write(run_dir / "skipped_files.tsv")
        tqdm.write(f"{len(skips)} file(s) skipped, listed in {run_dir / 'skipped_files.tsv'}")
    (run_dir / EVAL_REPORT).write_text(json.dumps(report, indent=2))
    tqdm.write(f"report: {run_dir / EVAL_REPORT}")
    return report


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


def format_ablations(summary: dict) -> str:
    lines = []
    for title, entry in summary.items():
        names = list(entry["pooled"])
        lines += [f"{title}: EER % by emotion_ablation (change from 'none' in brackets)",
                  "  " + "emotion".ljust(10) + "".join(name.rjust(18) for name in names)]
        emotions = list(entry["per_emotion"]["none"]) + ["pooled"]
        for emotion in emotions:
            row = "  " + emotion.ljust(10)
            for name in names:
                value = entry["pooled"][name] if emotion == "pooled" else entry["per_emotion"][name].get(emotion)
                base = entry["pooled"]["none"] if emotion == "pooled" else entry["per_emotion"]["none"].get(emotion)
                text = "n/a" if value is None else (f"{value:.2f}" if name == "none" else f"{value:.2f} [{value - base:+.2f}]")
                row += text.rjust(18)
            lines.append(row)
    return "\n".join(lines)


def plot_ablations(summary: dict, path: Path, title: str) -> None:
    """One panel per scored set: per-emotion EER under each ablation."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5 * len(summary), 4.0), layout="constrained")
    for index, (name, entry) in enumerate(summary.items()):
        axes = figure.add_subplot(1, len(summary), index + 1)
        emotions = list(entry["per_emotion"]["none"])
        width = 0.8 / len(entry["per_emotion"])
        for i, (ablation, cells) in enumerate(entry["per_emotion"].items()):
            xs = np.arange(len(emotions)) + (i - (len(entry["per_emotion"]) - 1) / 2) * width
            axes.bar(xs, [cells.get(e, 0.0) for e in emotions], width, label=ablation)
        axes.set_xticks(np.arange(len(emotions)), emotions)
        axes.set_ylabel("EER (%)")
        axes.set_title(f"{title}: {name}")
        axes.legend(title="emotion_ablation", fontsize=8)
    figure.savefig(path, dpi=120)


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

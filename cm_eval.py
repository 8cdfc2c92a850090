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

from augment.pipeline import build_eval_conditions
from cm_config import has_la_eval, load_emotional_set, resolve_asv_path
from data_utils import SkipReport, Trial, la_trials
from metrics import AsvScores, Metrics, evaluate_arrays, read_asv_scores
from reports import emotion_report, format_emotion_table, format_metrics, plot_emotion_eer
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


def evaluate_conditions(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                        trials: list[Trial], skips: SkipReport) -> dict:
    """LA eval again under each ``eval_condition`` (a codec, noise, ... applied to every eval
    utterance, the same draws for every model): metrics and a score file per condition."""
    results = {}
    score_path = run_dir / config.get("eval_output", "eval_scores.txt")
    for name, condition in build_eval_conditions(config, tqdm.write).items():
        scores = score_trials(model, trials, config, device, skips, f"eval [{name}]", augment=condition)
        path = score_path.with_name(f"{score_path.stem}_{name}{score_path.suffix}")
        write_score_file(path, trials, scores)
        metrics = metrics_for(trials, scores, load_asv(config, "asv_score_path", None))
        tqdm.write(format_metrics(f"LA eval under condition {name} ({condition.describe()})", metrics))
        results[name] = {"score_file": str(path), "n_scored": len(scores), **metrics}
    return results


def evaluate_eval_set(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                      extra: dict | None = None, conditions: bool = True) -> dict:
    """Score LA eval (when present; also under each ``eval_condition`` unless ``conditions`` is
    False) and the emotional set (when configured), write the score files and
    ``eval_report.json``, print the tables."""
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
        if conditions and "eval_condition" in config:
            report["conditions"] = evaluate_conditions(model, config, device, run_dir, trials, skips)
    if "emo_dataset" in config:
        report["emotional_set"] = evaluate_emotional_set(model, config, device, run_dir, skips)
    report.update(n_skipped=len(skips), **(extra or {}))
    if skips:
        skips.write(run_dir / "skipped_files.tsv")
        tqdm.write(f"{len(skips)} file(s) skipped, listed in {run_dir / 'skipped_files.tsv'}")
    (run_dir / EVAL_REPORT).write_text(json.dumps(report, indent=2))
    tqdm.write(f"report: {run_dir / EVAL_REPORT}")
    return report

"""Evaluating countermeasures: every evaluation set the config names (the track's eval set, the
emotional set, ``eval_datasets``) scored in one run, with one report, ``eval_report.json``.

Per set: EER, the ASVspoof 2019 min t-DCF where ASV scores exist, the ASVspoof 5 metrics, EER per
attack, condition and emotion, the calibration to log-likelihood ratios when dev scores of the
model exist (act DCF and Cllr before and after), a score file, DET curves and a score histogram;
across sets a summary table. Several checkpoints (``main.py --eval --eval_model_weights A B C``)
are each reported, and so are their best, mean and fused results (AMSDF reports best, average
and "vote" over seeds: Wu et al., IEEE TIFS 2024). The top-level report describes the checkpoints
fused by ``mean`` (of standardised scores); the ensemble section also gives the softmax vote
and the logistic fusion learned on dev.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from data_utils import SkipReport, Trial
from emospoof.augment.pipeline import build_eval_conditions
from emospoof.augment.preprocess import build_preprocess
from emospoof.cm.data import EvalSet, eval_sets, track_eval_name
from emospoof.cm.emotion_calibrated import FOLDER as CALIBRATED_FOLDER
from emospoof.cm.emotion_calibrated import SYSTEM as CALIBRATED_SYSTEM
from emospoof.cm.emotion_calibrated import calibrate_run, write_calibrated_folder
from emospoof.cm.emotion_inputs import emotion_inputs
from emospoof.cm.thresholds import THRESHOLD_KINDS, fixed_threshold
from emospoof.core.checkpoint import load_weights, write_atomically
from emospoof.core.config import ConfigError
from emospoof.core.errors import InputError, InputValueError
from emospoof.core.labels import BONAFIDE, BONAFIDE_INDEX, SPOOF, key_of
from emospoof.metrics.asvspoof5 import cm_metrics
from emospoof.metrics.asvspoof2019 import Metrics, evaluate_arrays
from emospoof.metrics.calibration import calibration_report, fit_calibration
from emospoof.metrics.fusion import align_runs, fit_fusion, fuse_score_matrix
from emospoof.metrics.groups import dataset_report, emotion_report, one_class_report
from emospoof.metrics.score_files import AsvScores, CmScores, read_cm_scores, write_score_file, write_trial_groups
from emospoof.reports import seed_comparison
from emospoof.reports.html import write_eval_html
from emospoof.reports.plots import plot_det, plot_emotion_eer, plot_operating_point, plot_score_histogram
from emospoof.reports.tables import (format_emotion_cells, format_emotion_table, format_metrics, format_one_class,
                                     format_operating_point, format_table, summary_row)
from emospoof.scoring.windows import score_trials

EMO_PLOT = "emo_eer_per_emotion.png"
EVAL_REPORT = "eval_report.json"
REPORT_HTML = "report.html"  # the same, with tables and pictures, for a browser
SYSTEM_FUSION = "mean"  # how the checkpoints of --eval_model_weights become one system
Scores = dict[str, float]


def metrics_for(trials: list[Trial], scores: Scores, asv: AsvScores | None) -> Metrics:
    """The metrics of the scored ``trials`` (those missing from ``scores`` were skipped)."""
    scored = [t for t in trials if t.utt_id in scores]
    return evaluate_arrays(
        np.array([scores[t.utt_id] for t in scored]),
        [key_of(t.label) for t in scored],
        [t.attack for t in scored],
        asv,
    )


@dataclass
class Run:
    """One system's scores of every set, its dev scores when known (for calibration), and the
    threshold a deployed system would apply (``emospoof.cm.thresholds``)."""

    label: str
    scores: dict[str, Scores]
    dev: CmScores | None = None
    dev_path: str | None = None
    threshold: tuple[float, str] | None = None  # the fixed operating threshold and where it comes from


def _scored(trials: list[Trial], scores: Scores) -> tuple[list[Trial], np.ndarray, np.ndarray]:
    kept = [t for t in trials if t.utt_id in scores]
    return kept, np.array([scores[t.utt_id] for t in kept]), np.array([t.label == BONAFIDE_INDEX for t in kept], dtype=bool)


def _calibration(run: Run, eval_set: EvalSet, trials: list[Trial], values: np.ndarray, labels: np.ndarray,
                 out_dir: Path) -> dict | None:
    """Calibrate on the run's dev scores, write the set's LLRs and report before / after."""
    if run.dev is None:
        return None
    try:
        calibration = fit_calibration(run.dev.scores, run.dev.keys == BONAFIDE)
    except InputError as err:  # e.g. dev scores of one class, or ranked upside down
        tqdm.write(f"warning: {eval_set.name}: no calibration: {err}")
        return {"error": str(err), "dev_scores": run.dev_path}
    llr_file = out_dir / f"{Path(eval_set.score_file).stem}_llr.txt"
    write_score_file(llr_file, trials, dict(zip((t.utt_id for t in trials), calibration.apply(values))))
    return {**calibration_report(calibration, values, labels), "dev_scores": run.dev_path, "score_file": str(llr_file)}


def set_report(run: Run, eval_set: EvalSet, out_dir: Path, title: str,
               compare: dict[str, Scores] | None = None) -> dict:
    """Score file, metrics, calibration and pictures of one set; ``compare`` (label -> scores)
    draws one DET curve per model instead of one per attack. A set of one class only (genuine
    speech without spoofs) gets its error rates at the run's fixed threshold instead."""
    scores = run.scores[eval_set.name]
    trials, values, labels = _scored(eval_set.trials, scores)
    if not trials:
        raise InputValueError("no file of the set could be scored")
    score_path = out_dir / eval_set.score_file
    write_score_file(score_path, eval_set.trials, scores)
    groups_path = score_path.with_name(f"{score_path.stem}_groups.tsv")
    write_trial_groups(groups_path, trials)
    groups = ([t.attack for t in trials], [t.emotion for t in trials])
    if labels.all() or not labels.any():
        report = one_class_report(values, labels, *groups, [t.speaker for t in trials], [t.conditions for t in trials],
                                  run.threshold)
        report.update(source=eval_set.source, score_file=str(score_path), groups_file=str(groups_path),
                      n_scored=len(trials), n_unscored=len(eval_set.trials) - len(trials))
        _plot_operating_point(report, out_dir, eval_set.name, title)
        return report
    report = dataset_report(values, labels, *groups, [t.conditions for t in trials], eval_set.asv,
                            speakers=[t.speaker for t in trials], fixed_threshold=run.threshold)
    report.update(source=eval_set.source, score_file=str(score_path), groups_file=str(groups_path),
                  n_scored=len(trials), n_unscored=len(eval_set.trials) - len(trials),
                  calibration=_calibration(run, eval_set, trials, values, labels, out_dir))
    if compare:
        curves = {label: _scored(eval_set.trials, other)[1:] for label, other in compare.items()}
        curves = {label: (v[b], v[~b]) for label, (v, b) in curves.items()}
    else:
        spoof_attacks = np.array([t.attack for t in trials])[~labels]
        curves = {"pooled": (values[labels], values[~labels])}
        curves.update({a: (values[labels], values[~labels][spoof_attacks == a]) for a in report["per_attack"]})
    report["det_plot"] = str(out_dir / f"{eval_set.name}_det.png")
    plot_det(curves, report["det_plot"], f"{title}: {eval_set.name}")
    report["histogram"] = str(out_dir / f"{eval_set.name}_hist.png")
    plot_score_histogram(values[labels], values[~labels], report["histogram"], f"{title}: {eval_set.name}")
    if report["per_emotion"]:
        report["emotion_plot"] = str(out_dir / f"{eval_set.name}_per_emotion.png")
        plot_emotion_eer(report, report["emotion_plot"], f"{title}: {eval_set.name}, EER per emotion", "all attacks")
    _plot_operating_point(report, out_dir, eval_set.name, title)
    return report


def _plot_operating_point(report: dict, out_dir: Path, name: str, title: str) -> None:
    """FRR and FAR per emotion (else per group of the first factor) at the fixed threshold, or at
    the set's EER threshold when the run has no fixed one."""
    points = report["operating_points"]
    point = points.get("fixed") or points.get("set_eer")
    if point is None or not point["groups"]:
        return
    report["operating_point_plot"] = str(out_dir / f"{name}_operating_point.png")
    plot_operating_point(point, report["operating_point_plot"], f"{title}: {name}")


def _print_set(name: str, report: dict) -> None:
    if "one_class" in report:
        tqdm.write(format_one_class(name, report))
        return
    five, calibration = report["asvspoof5"], report["calibration"]
    lines = [format_metrics(name, report),
             f"  ASVspoof 5: min DCF {five['min_dcf']:.4f}  act DCF {five['act_dcf']:.4f}  "
             f"Cllr {five['cllr']:.4f} bits"]
    if calibration and "after" in calibration:
        after = calibration["after"]
        lines.append(f"  calibrated on dev: act DCF {after['act_dcf']:.4f}  Cllr {after['cllr']:.4f} bits")
    if report["per_emotion"]:
        lines.append(format_emotion_cells(report))
    point = report["operating_points"].get("fixed")
    if point is not None:
        lines.append(format_operating_point(point))
    tqdm.write("\n".join(lines))


def _emotional_report(run: Run, eval_set: EvalSet, out_dir: Path, title: str) -> dict:
    """The emotional set's per-emotion / per-system report, table and bar chart (``set_report``
    has made sure both classes were scored)."""
    trials, values, labels = _scored(eval_set.trials, run.scores[eval_set.name])
    report = emotion_report(values, np.where(labels, BONAFIDE, SPOOF), [t.attack for t in trials],
                            [t.emotion for t in trials])
    report.update(dataset=eval_set.source, bonafide_system=eval_set.bonafide_system, missing=eval_set.missing,
                  score_file=str(out_dir / eval_set.score_file), n_scored=len(trials),
                  n_unscored=len(eval_set.trials) - len(trials))
    for problem in eval_set.missing + report["empty"]:
        tqdm.write(f"warning: emotional set: {problem}")
    tqdm.write(f"Emotional set {eval_set.source} (bona fide: {eval_set.bonafide_system})\n"
               + format_emotion_table(report))
    plot_emotion_eer(report, out_dir / EMO_PLOT, f"{title}: EER per emotion")
    report["plot"] = str(out_dir / EMO_PLOT)
    return report


def system_report(run: Run, sets: list[EvalSet], out_dir: Path, title: str,
                  compare: dict[str, dict[str, Scores]] | None = None) -> dict:
    """Every set's report for one system, the emotional set's table, and the summary table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"datasets": {}}
    for eval_set in sets:
        per_model = {label: scores[eval_set.name] for label, scores in compare.items()} if compare else None
        try:
            report["datasets"][eval_set.name] = set_report(run, eval_set, out_dir, title, per_model)
        except InputError as err:  # e.g. every file of the set unreadable: report it, go on with the others
            tqdm.write(f"warning: {eval_set.name} ({eval_set.source}): {err}; it has no metrics")
            report["datasets"][eval_set.name] = {"error": str(err), "source": eval_set.source}
            continue
        _print_set(eval_set.name, report["datasets"][eval_set.name])
        if eval_set.emotional:
            report["emotional_set"] = _emotional_report(run, eval_set, out_dir, title)
    report["summary"] = [summary_row(name, r) for name, r in report["datasets"].items() if "error" not in r]
    if report["summary"]:
        tqdm.write(f"Summary ({title})\n" + format_table(report["summary"]))
    if "la_eval" in report["datasets"]:
        la_eval = report["datasets"]["la_eval"]
        report.update(la_eval=la_eval, score_file=la_eval["score_file"], n_scored=la_eval["n_scored"])
    return report


def _headline(values: np.ndarray, labels: np.ndarray, asv: AsvScores | None) -> dict:
    five = cm_metrics(values[labels], values[~labels])
    tdcf = evaluate_arrays(values, np.where(labels, BONAFIDE, SPOOF), None, asv)["min_tdcf"]
    return {"eer": five["eer"], "min_tdcf": tdcf, "min_dcf": five["min_dcf"], "act_dcf": five["act_dcf"],
            "cllr": five["cllr"]}


def _score_matrix(runs: list[Run], name: str, trials: list[Trial]) -> tuple[list[Trial], np.ndarray]:
    """Trials every run scored, and the (runs, trials) matrix of their scores."""
    kept = [t for t in trials if all(t.utt_id in run.scores[name] for run in runs)]
    return kept, np.array([[run.scores[name][t.utt_id] for t in kept] for run in runs])


def fuse_runs(runs: list[Run], sets: list[EvalSet]) -> Run:
    """The checkpoints as one system: each set's scores fused, and their dev scores too when
    every checkpoint has them (so the fused system is calibrated like one model). It has no fixed
    threshold: ``mean`` standardises each set's scores over that set, so a dev threshold does
    not carry to it (each checkpoint's report has its own)."""
    scores = {}
    for eval_set in sets:
        kept, matrix = _score_matrix(runs, eval_set.name, eval_set.trials)
        scores[eval_set.name] = dict(zip((t.utt_id for t in kept), fuse_score_matrix(matrix, SYSTEM_FUSION)))
    dev = None
    if all(run.dev is not None for run in runs):
        first = runs[0].dev
        dev = CmScores(first.utt_ids, first.attacks, first.keys,
                       fuse_score_matrix(align_runs([run.dev for run in runs], [run.dev_path for run in runs]),
                                         SYSTEM_FUSION))
    return Run(f"{SYSTEM_FUSION} of {len(runs)}", scores, dev, "fused dev scores of the checkpoints" if dev else None)


def ensemble_report(runs: list[Run], sets: list[EvalSet]) -> dict:
    """Per set: the best checkpoint (lowest EER on that set: information, not a selection), the
    mean and standard deviation of each metric over checkpoints, and fused scores: ``mean``,
    ``softmax-vote``, and ``logistic`` (weights learned on dev) when every checkpoint has dev scores."""
    weights = None
    if all(run.dev is not None for run in runs):
        dev_matrix = align_runs([run.dev for run in runs], [run.dev_path for run in runs])
        weights = fit_fusion(dev_matrix, runs[0].dev.keys == BONAFIDE)
    result = {}
    for eval_set in sets:
        kept, matrix = _score_matrix(runs, eval_set.name, eval_set.trials)
        labels = np.array([t.label == BONAFIDE_INDEX for t in kept], dtype=bool)
        if labels.all() or not labels.any():
            continue  # no metrics for this set (system_report says why)
        singles = [_headline(*_scored(eval_set.trials, run.scores[eval_set.name])[1:], eval_set.asv) for run in runs]
        best = min(range(len(runs)), key=lambda i: singles[i]["eer"])
        fused = {method: fuse_score_matrix(matrix, method) for method in ("mean", "softmax-vote")}
        if weights is not None:
            fused["logistic"] = weights[0] @ matrix + weights[1]
        result[eval_set.name] = {
            "best": {"checkpoint": runs[best].label, **singles[best]},
            "mean": {key: _mean_std([s[key] for s in singles]) for key in singles[0]},
            "fused": {method: _headline(values, labels, eval_set.asv) for method, values in fused.items()},
        }
    return result


def _mean_std(values: list) -> dict | None:
    if any(v is None for v in values):
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def read_dev_scores(path: Path | None) -> CmScores | None:
    return read_cm_scores(path) if path else None


def run_scores(run_dir: Path, sets: list[EvalSet]) -> dict[str, Scores]:
    """The scores an earlier evaluation (a training run's or ``main.py --eval``'s folder) wrote for
    each of ``sets``, read from the score files its ``eval_report.json`` names (found as
    ``compare.py`` finds them): re-reporting them (another threshold, an emotion calibration)
    needs no forward pass. A set the folder did not score is an error naming it."""
    report_path = run_dir / EVAL_REPORT
    if not report_path.is_file():
        raise ConfigError(f"--scores_from: {run_dir} has no {EVAL_REPORT} (a finished run or --eval folder)")
    earlier = seed_comparison.Run(run_dir, {}, seed_comparison.read_json(report_path), None)
    scores = {}
    for eval_set in sets:
        path = earlier.score_file(eval_set.name)
        if path is None:
            raise ConfigError(f"--scores_from: {report_path} has no scores of set {eval_set.name!r} "
                              f"(it has {', '.join(earlier.sets) or 'none'})")
        found = read_cm_scores(path, both_classes=False)
        scores[eval_set.name] = dict(zip(found.utt_ids.tolist(), found.scores.tolist()))
    return scores


def evaluate_conditions(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                        eval_set: EvalSet, skips: SkipReport) -> dict:
    """The track's eval set again under each ``eval_condition`` (a codec, noise, ... applied to
    every utterance, the same draws for every model): metrics and a score file per condition. An
    emotion-conditioned model keeps the emotion input of the clean recording: the condition
    degrades what the countermeasure hears, not what the SER heard."""
    results = {}
    score_path = run_dir / eval_set.score_file
    preprocess = build_preprocess(eval_set.preprocess)
    inputs = emotion_inputs(model, eval_set.trials, config, device, skips, preprocess, f"{eval_set.name} emotion inputs")
    for name, condition in build_eval_conditions(config, tqdm.write).items():
        scores = score_trials(model, eval_set.trials, config, device, skips, f"{eval_set.name} [{name}]",
                              augment=condition, preprocess=preprocess, utterance_inputs=inputs)
        path = score_path.with_name(f"{score_path.stem}_{name}{score_path.suffix}")
        write_score_file(path, eval_set.trials, scores)
        metrics = metrics_for(eval_set.trials, scores, eval_set.asv)
        tqdm.write(format_metrics(f"{eval_set.name} under condition {name} ({condition.describe()})", metrics))
        results[name] = {"score_file": str(path), "n_scored": len(scores), **metrics}
    return results


def evaluate_eval_set(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                      extra: dict | None = None, dev_scores: Path | None = None,
                      sets: list[EvalSet] | None = None, conditions: bool = True, threshold: str | None = None,
                      scores: dict[str, Scores] | None = None) -> dict:
    """Score every evaluation set with ``model`` (or only ``sets``), and the track's eval set
    under each ``eval_condition`` unless ``conditions`` is False; write the score files,
    pictures and ``eval_report.json``, print the tables. ``dev_scores``: the model's dev score
    file, to calibrate on and to take the fixed threshold from (``threshold``: see
    ``emospoof.cm.thresholds.fixed_threshold``). ``scores`` (set name -> scores, e.g.
    :func:`run_scores` of an earlier evaluation) are reported instead of scoring anew."""
    sets = eval_sets(config) if sets is None else sets
    skips = SkipReport(tqdm.write)
    dev = read_dev_scores(dev_scores)
    scored = scores if scores is not None else _score_sets(model, sets, config, device, skips)
    run = Run(config["model_config"]["architecture"], scored,
              dev, str(dev_scores) if dev_scores else None, fixed_threshold(threshold, dev, dev_scores))
    report = system_report(run, sets, run_dir, run.label)
    track_set = [s for s in sets if s.name == track_eval_name(config)]
    if scores is not None and "eval_condition" in config:
        tqdm.write("note: eval_condition sets are scored by the model; re-reported scores leave them out")
    elif conditions and "eval_condition" in config and track_set:
        report["conditions"] = evaluate_conditions(model, config, device, run_dir, track_set[0], skips)
    if "emotion_calibration" in config and conditions:
        try:
            report["emotion_calibrated"] = _emotion_calibrated(run, sets, config, device, skips, run_dir, threshold,
                                                               extra)
        except InputError as err:  # e.g. an SER without the covariate: the uncalibrated report still stands
            tqdm.write(f"warning: emotion_calibration not done: {err}")
            report["emotion_calibrated"] = {"error": str(err)}
    return _write_report(report, run_dir, skips, extra)


def _emotion_calibrated(run: Run, sets: list[EvalSet], config: dict, device: torch.device, skips: SkipReport,
                        run_dir: Path, threshold: str | None, extra: dict | None) -> dict:
    """The run's emotion-calibrated system, reported in its own folder (``system``
    'emotion-calibrated', so compare.py keeps it apart from the run); its headline here. Its
    threshold comes from its own dev scores: a number given for the run's scores means nothing
    on calibrated log-likelihood ratios."""
    if run.dev is None:
        tqdm.write("warning: emotion_calibration needs the model's dev scores; not done")
        return {"error": "no dev scores"}
    scores, dev, calibration = calibrate_run(run.scores, run.dev, sets, config, device, skips)
    kind = threshold if threshold in THRESHOLD_KINDS else None
    if threshold is not None and kind is None:
        tqdm.write(f"note: --threshold {threshold} applies to the run's scores; the emotion-calibrated system "
                   "is reported at its own dev EER threshold")
    source = "emotion-calibrated dev scores"
    calibrated = Run(f"{run.label} + emotion calibration", scores, dev, source, fixed_threshold(kind, dev, source))
    folder = run_dir / CALIBRATED_FOLDER
    write_calibrated_folder(folder, config, calibration, calibrated.threshold[0])
    report = {"system": CALIBRATED_SYSTEM, **system_report(calibrated, sets, folder, calibrated.label)}
    _write_report(report, folder, SkipReport(tqdm.write), extra)
    return {"folder": str(folder), "calibration": calibration.as_dict(), "summary": report["summary"]}


def evaluate_checkpoints(model: nn.Module, weights: list[Path], config: dict, device: torch.device, run_dir: Path,
                         dev_scores: list[Path | None], threshold: str | None = None) -> dict:
    """``main.py --eval`` with several checkpoints of one architecture: each is scored and
    reported in ``checkpoints/<n>_<name>/``, their fusion in ``run_dir``, and ``ensemble`` gives
    best, mean and fused results per set."""
    sets = eval_sets(config)
    skips = SkipReport(tqdm.write)
    runs = []
    for i, (path, dev) in enumerate(zip(weights, dev_scores), start=1):
        load_weights(model, path, device)
        dev_of_run = read_dev_scores(dev)
        runs.append(Run(f"{i}_{path.stem}", _score_sets(model, sets, config, device, skips), dev_of_run,
                        str(dev) if dev else None, fixed_threshold(threshold, dev_of_run, dev)))
    checkpoints = [{"weights": str(path), **system_report(run, sets, run_dir / "checkpoints" / run.label, run.label)}
                   for path, run in zip(weights, runs)]
    fused = fuse_runs(runs, sets)
    compare = {run.label: run.scores for run in runs} | {fused.label: fused.scores}
    report = system_report(fused, sets, run_dir, fused.label, compare)
    report.update(checkpoints=checkpoints, ensemble=ensemble_report(runs, sets),
                  model=f"{SYSTEM_FUSION} fusion of {len(runs)} checkpoints")
    return _write_report(report, run_dir, skips, None)


def _score_sets(model: nn.Module, sets: list[EvalSet], config: dict, device: torch.device,
                skips: SkipReport) -> dict[str, Scores]:
    scores = {}
    for eval_set in sets:
        preprocess = build_preprocess(eval_set.preprocess)
        inputs = emotion_inputs(model, eval_set.trials, config, device, skips, preprocess,
                                f"{eval_set.name} emotion inputs")
        scores[eval_set.name] = score_trials(model, eval_set.trials, config, device, skips, eval_set.name,
                                             preprocess=preprocess, utterance_inputs=inputs)
    return scores


def _write_report(report: dict, run_dir: Path, skips: SkipReport, extra: dict | None) -> dict:
    report.update(n_skipped=len(skips), **(extra or {}))
    if skips:
        skips.write(run_dir / "skipped_files.tsv")
        tqdm.write(f"{len(skips)} file(s) skipped, listed in {run_dir / 'skipped_files.tsv'}")
    # Atomic: compare.py and seed runs read eval_report.json, possibly while this run writes it.
    write_atomically(run_dir / EVAL_REPORT, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    write_eval_html(report, run_dir / REPORT_HTML, f"Evaluation: {run_dir.name}")
    tqdm.write(f"report: {run_dir / EVAL_REPORT}, {run_dir / REPORT_HTML}")
    return report

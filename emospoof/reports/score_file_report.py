"""What ``evaluation.py`` runs: the metrics of score files (ASVspoof 2019 and ASVspoof 5, SASV),
calibration to log-likelihood ratios and score fusion, as one JSON-ready result or printed text.
"""
from __future__ import annotations

import argparse

from emospoof.core.labels import BONAFIDE
from emospoof.metrics.asvspoof5 import cm_metrics, evaluate_cm_files, evaluate_sasv_files
from emospoof.metrics.asvspoof2019 import Metrics, evaluate_scores
from emospoof.metrics.calibration import calibrate_files
from emospoof.metrics.fusion import fuse_score_files
from emospoof.metrics.score_files import read_cm_scores
from emospoof.reports.tables import format_metrics


def asvspoof5_of_file(path: str) -> dict[str, float]:
    """Track 1 metrics of a ``UTT ATTACK KEY SCORE`` file."""
    cm = read_cm_scores(path)
    return cm_metrics(cm.scores[cm.keys == BONAFIDE], cm.scores[cm.keys != BONAFIDE])


def run(args: argparse.Namespace) -> dict:
    """What the options ask for, as one JSON-ready dict."""
    if args.sasv:
        return evaluate_sasv_files(args.sasv, args.sasv_keys)
    if args.calibrate:
        return calibrate_files(args.calibrate, args.apply, args.output or "calibrated_scores.txt")
    if args.scores and args.metrics == "asvspoof5":
        return evaluate_cm_files(args.scores, args.keys) if args.keys else asvspoof5_of_file(args.scores)
    runs: dict[str, Metrics] = {}
    output = args.output or "fused_scores.txt"
    if args.fuse:
        fuse_score_files(args.fuse, args.method, output, args.fuse_dev)
        runs = {path: evaluate_scores(path, args.asv_scores) for path in args.fuse}
    metrics = evaluate_scores(output if args.fuse else args.scores, args.asv_scores)
    summary = {key: metrics[key] for key in ("eer", "min_tdcf", "per_attack")}
    if args.fuse:
        summary.update(method=args.method, output=output, runs=[
            {"path": path, "eer": run["eer"], "min_tdcf": run["min_tdcf"]} for path, run in runs.items()
        ])
    return {**summary, "_metrics": metrics}


def print_text(args: argparse.Namespace, result: dict) -> None:
    if "_metrics" in result:
        for run in result.get("runs", []):
            tdcf = "" if run["min_tdcf"] is None else f", min t-DCF {run['min_tdcf']:.6f}"
            print(f"run {run['path']}: EER {run['eer']:.6f} %{tdcf}")
        if args.fuse:
            print(f"fused ({args.method}) -> {result['output']}")
        print(format_metrics("CM", result["_metrics"], digits=6, tdcf_digits=6))
    elif args.calibrate:
        print(f"calibration fitted on {args.calibrate}: llr = {result['dev']['scale']:.6f} x score "
              f"{result['dev']['offset']:+.6f} -> {result['output']}")
        for part in ("dev", "eval"):
            for stage in ("before", "after"):
                values = result[part][stage]
                print(f"{part} {stage:<6}: act DCF {values['act_dcf']:.6f}  Cllr {values['cllr']:.6f} bits  "
                      f"min DCF {values['min_dcf']:.6f}")
    else:
        for key, value in result.items():
            print(f"{key}: {value:.6f}{' %' if 'eer' in key else ''}")

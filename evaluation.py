"""Score-file metrics and fusion from the command line (the library lives in ``metrics.py``,
``fusion.py`` and ``reports.py``).

    python evaluation.py --scores CM_SCORES [--asv-scores ASV_SCORES] [--json]
    python evaluation.py --fuse CM1 CM2 ... --method mean|softmax-vote --output FUSED [--json]

CM score files hold ``UTT ATTACK KEY SCORE`` lines (higher = bona fide), ASV score files
``SOURCE KEY SCORE`` lines. Exit code 2 and one line on stderr for unusable input.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from fusion import FUSION_METHODS, fuse_score_files
from metrics import Metrics, evaluate_scores
from reports import format_metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (2 for unusable input)."""
    parser = argparse.ArgumentParser(
        description="ASVspoof 2019 CM metrics: EER, min t-DCF and EER per attack; "
        "fusion of several runs' scores."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scores", help="CM score file: UTT ATTACK KEY SCORE")
    source.add_argument(
        "--fuse", nargs="+", metavar="SCORES",
        help="CM score files of several runs over the same trials: fuse them (see --method)",
    )
    parser.add_argument(
        "--method", choices=FUSION_METHODS, default="mean",
        help="--fuse: mean of per-run standardised scores, or softmax-vote (log-odds of the "
        "mean bona fide probability)",
    )
    parser.add_argument(
        "--output", default="fused_scores.txt", help="--fuse: fused score file to write"
    )
    parser.add_argument(
        "--asv-scores", help="ASV score file: SOURCE KEY SCORE (needed for min t-DCF)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (eer, min_tdcf, per_attack)"
    )
    args = parser.parse_args(argv)
    runs: dict[str, Metrics] = {}
    try:
        if args.fuse:
            fuse_score_files(args.fuse, args.method, args.output)
            runs = {path: evaluate_scores(path, args.asv_scores) for path in args.fuse}
        metrics = evaluate_scores(args.output if args.fuse else args.scores, args.asv_scores)
    except OSError as error:
        path = error.filename if error.filename is not None else (args.scores or args.output)
        print(f"error: {path}: {error.strerror or error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if args.json:
        if metrics["min_tdcf"] is None:
            print("note: min t-DCF needs ASV scores (--asv-scores); reporting EER only",
                  file=sys.stderr)
        summary = {key: metrics[key] for key in ("eer", "min_tdcf", "per_attack")}
        if args.fuse:
            summary.update(method=args.method, output=args.output, runs=[
                {"path": path, "eer": run["eer"], "min_tdcf": run["min_tdcf"]} for path, run in runs.items()
            ])
        print(json.dumps(summary))
    else:
        for path, run in runs.items():
            tdcf = "" if run["min_tdcf"] is None else f", min t-DCF {run['min_tdcf']:.6f}"
            print(f"run {path}: EER {run['eer']:.6f} %{tdcf}")
        if args.fuse:
            print(f"fused ({args.method}) -> {args.output}")
        print(format_metrics("CM", metrics, digits=6, tdcf_digits=6))
    return 0


if __name__ == "__main__":
    sys.exit(main())

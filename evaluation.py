"""Score-file metrics, calibration and fusion from the command line (the recipe is
``emospoof.reports.score_file_report``, the metrics ``emospoof.metrics``).

    python evaluation.py --scores CM_SCORES [--asv-scores ASV_SCORES] [--json]
    python evaluation.py --scores CM_SCORES --metrics asvspoof5 [--keys CM_KEYS] [--json]
    python evaluation.py --sasv SASV_SCORES --sasv-keys SASV_KEYS [--json]
    python evaluation.py --calibrate DEV_SCORES --apply EVAL_SCORES [--output LLRS] [--json]
    python evaluation.py --fuse CM1 CM2 ... --method mean|softmax-vote|logistic [--fuse-dev DEV1 DEV2 ...]
                         --output FUSED [--json]

CM score files hold ``UTT ATTACK KEY SCORE`` lines (higher = bona fide), ASV score files
``SOURCE KEY SCORE`` lines; ``--keys`` and ``--sasv`` read the ASVspoof 5 evaluation package's
tab-separated files with headers. Exit code 2 and one line on stderr for unusable input.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from emospoof.metrics.fusion import FUSION_METHODS
from emospoof.reports.score_file_report import print_text, run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ASVspoof 2019 and ASVspoof 5 CM metrics, SASV metrics, calibration to LLRs, "
        "fusion of several runs' scores."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scores", help="CM score file: UTT ATTACK KEY SCORE (with --keys: filename cm-score)")
    source.add_argument("--fuse", nargs="+", metavar="SCORES",
                        help="CM score files of several runs over the same trials: fuse them (see --method)")
    source.add_argument("--sasv", metavar="SASV_SCORES",
                        help="ASVspoof 5 track 2 scores: spk filename cm-score asv-score sasv-score")
    source.add_argument("--calibrate", metavar="DEV_SCORES",
                        help="fit logistic-regression calibration on this labelled dev CM score file")
    parser.add_argument("--metrics", choices=("asvspoof2019", "asvspoof5"), default="asvspoof2019",
                        help="--scores: EER, min t-DCF and EER per attack (asvspoof2019), or min DCF, "
                        "act DCF, Cllr and EER (asvspoof5)")
    parser.add_argument("--keys", help="--scores in the ASVspoof 5 package's format: its key file "
                        "(filename cm-label); needs --metrics asvspoof5")
    parser.add_argument("--sasv-keys", help="--sasv: key file (spk filename cm-label asv-label)")
    parser.add_argument("--apply", metavar="EVAL_SCORES", help="--calibrate: CM score file to map to LLRs")
    parser.add_argument("--method", choices=FUSION_METHODS, default="mean",
                        help="--fuse: mean of per-run standardised scores, softmax-vote (log-odds of the "
                        "mean bona fide probability), or logistic (weights learned on --fuse-dev)")
    parser.add_argument("--fuse-dev", nargs="+", metavar="DEV_SCORES",
                        help="--method logistic: the runs' dev score files, in the order of --fuse")
    parser.add_argument("--output", help="--fuse: fused score file (default fused_scores.txt); "
                        "--calibrate: calibrated score file (default calibrated_scores.txt)")
    parser.add_argument("--asv-scores", help="ASV score file: SOURCE KEY SCORE (needed for min t-DCF)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.keys and (not args.scores or args.metrics != "asvspoof5"):
        parser.error("--keys reads the ASVspoof 5 package's files: use it with --scores and --metrics asvspoof5")
    if bool(args.sasv) != bool(args.sasv_keys):
        parser.error("--sasv and --sasv-keys go together")
    if bool(args.calibrate) != bool(args.apply):
        parser.error("--calibrate and --apply go together")
    if args.fuse_dev and args.method != "logistic":
        parser.error("--fuse-dev is for --method logistic")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (2 for unusable input)."""
    args = parse_args(argv)
    try:
        result = run(args)
    except OSError as error:
        path = error.filename if error.filename is not None else args.scores
        print(f"error: {path}: {error.strerror or error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        if result.get("min_tdcf", 0) is None:
            print("note: min t-DCF needs ASV scores (--asv-scores); reporting EER only", file=sys.stderr)
        print(json.dumps({key: value for key, value in result.items() if key != "_metrics"}))
    else:
        print_text(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare countermeasures over seeds, with a paired test against a baseline (``emospoof.cm.seed_runs``).

    python compare.py RUN_DIR [RUN_DIR ...] [--output_dir comparison]
    python compare.py --train config/AASIST-L_devkit.conf config/AASIST_EmoMoE_devkit.conf --seeds 3
    python compare.py --train config/AASIST-L_devkit.conf config/AASIST-L_silence_devkit.conf --seeds 5 --jobs 4

Run folders of the same config are seeds of one model; the first model is the baseline. With
``--train`` the runs of each config and seed 1..N are trained first with main.py (finished runs are
reused, interrupted ones resumed; ``--jobs`` of them at once) and compared in config order. Writes comparison.md,
comparison.json, comparison.png and report.html (the tables and the picture in one
self-contained page) to --output_dir.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emospoof.cm.seed_runs import compare_runs
from emospoof.core.errors import InputError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="finished run folders (or folders of them)")
    parser.add_argument("--train", nargs="+", type=Path, metavar="CONFIG", help="configs to train and compare")
    parser.add_argument("--seeds", type=int, default=3, help="--train: seeds 1..N per config (default 3)")
    parser.add_argument("--runs_dir", type=Path, default=Path("exp_result"), help="--train: where runs go")
    parser.add_argument("--output_dir", type=Path, default=Path("comparison"), help="default: ./comparison")
    parser.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples of the paired test")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="--train: passed to main.py")
    parser.add_argument("--jobs", type=int, default=1,
                        help="--train: trainings at once (default 1); each then logs to RUNS_DIR/logs/ and, "
                             "unless OMP_NUM_THREADS is set, gets an equal share of the CPU cores")
    args = parser.parse_args(argv)
    if not args.runs and not args.train:
        parser.error("give run folders, or --train CONFIG ...")
    if args.seeds < 1 or args.n_boot < 1 or args.jobs < 1:
        parser.error("--seeds, --n_boot and --jobs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        table = compare_runs(args.runs, args.train, args.seeds, args.runs_dir, args.output_dir, args.n_boot,
                             ["--device", args.device] if args.device else [], args.jobs)
    except InputError as err:  # anything else is a bug: its traceback is kept
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

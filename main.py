"""Train or evaluate a countermeasure, driven by a JSON config.

    python main.py --config config/AASIST.conf            # train
    python main.py --config config/AASIST.conf --eval     # evaluate model_path on every eval set
    python main.py --config config/AASIST.conf --eval --eval_model_weights a.pth b.pth c.pth
    python main.py --config config/AASIST_FiLM_devkit.conf --eval --ablations   # with the emotion ablated
    python main.py --config config/AASIST-L_emocal_devkit.conf --eval --scores_from RUN_DIR   # re-report, no scoring
    python main.py --resume exp_result/LA_AASIST_ep100_bs24   # continue an interrupted run
    torchrun --standalone --nproc_per_node 4 main.py --config config/AASIST.conf   # 4 GPUs (DDP)
"""
from __future__ import annotations

import argparse
import sys

from emospoof.cm.training import run
from emospoof.core.errors import InputError
from emospoof.training.engine import add_training_arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON config (optional with --resume)")
    parser.add_argument("--output_dir", default="./exp_result", help="parent folder of run folders")
    parser.add_argument("--eval", action="store_true",
                        help="evaluate the weights at model_path on every evaluation set of the config")
    parser.add_argument("--eval_model_weights", nargs="+", metavar="WEIGHTS",
                        help="weights to evaluate instead of model_path; several: each, their best, mean and fused")
    parser.add_argument("--dev_scores", nargs="+", metavar="SCORES",
                        help="--eval: dev score file of each checkpoint, to calibrate scores to LLRs "
                        "(default: the run's dev_scores.txt for a run's weights/final.safetensors)")
    parser.add_argument("--threshold", metavar="T",
                        help="--eval: the fixed threshold at which error rates are counted per group: dev_eer "
                             "(default when the model's dev scores are known), calibrated, or a number")
    parser.add_argument("--scores_from", metavar="RUN_DIR",
                        help="--eval: re-report the scores a finished run (or --eval folder) wrote instead of scoring "
                             "(another threshold, emotion_calibration); dev scores default to RUN_DIR/dev_scores.txt")
    parser.add_argument("--ablations", action="store_true",
                        help="with --eval: evaluate an emotion model with emotion_ablation none, zero, mean and "
                             "shuffle")
    parser.add_argument("--comment", help="suffix of the run folder name")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("--config is required (or --resume RUN_DIR)")
    for name in ("ablations", "threshold", "eval_model_weights", "dev_scores", "scores_from"):
        if getattr(args, name) not in (None, False) and not args.eval:
            parser.error(f"--{name} goes with --eval")
    if args.scores_from and (args.ablations or args.eval_model_weights):
        parser.error("--scores_from re-reports one run's scores; --ablations and --eval_model_weights score a model")
    if args.scores_from and args.dev_scores and len(args.dev_scores) > 1:
        parser.error("--scores_from: give one --dev_scores file, the run's")
    if args.eval and args.resume:
        parser.error("--resume continues training; evaluate a run with --eval --config RUN_DIR/config.conf "
                     "--eval_model_weights RUN_DIR/weights/final.safetensors")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except InputError as err:  # anything else is a bug: its traceback is kept
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

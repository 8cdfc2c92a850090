"""Train, evaluate and apply the speech-emotion-recognition (SER) model of the emotion branch.

    python train_ser.py --config config/SER_wav2vec2.conf          # fine-tune a wav2vec 2.0-family model
    python train_ser.py --config config/SER_wav2vec2.conf --eval   # report model_path on the test split
    python train_ser.py --config config/SER_acrnn.conf             # train the ACRNN (AMSDF's emotion encoder)
    python train_ser.py --config config/SER_egemaps_rf.conf        # eGeMAPS + random-forest baseline
    python train_ser.py --config config/SER_egemaps_linear.conf    # eGeMAPS + linear probe (the egemaps backend)
    python train_ser.py --resume exp_result/SER_wav2vec2           # continue an interrupted run
    python train_ser.py --predict my_audio/ --model DIR            # per-file emotion probabilities (TSV)

The corpus is RAVDESS speech (``emospoof.ser.ravdess``), split by actor by default; the recipes are in
``emospoof.ser.training`` (wav2vec 2.0 / ACRNN training) and ``emospoof.ser.egemaps`` (eGeMAPS baselines); the keys in
``emospoof.ser.config``; docs/emotion.md has the details.
"""
from __future__ import annotations

import argparse
import sys

from emospoof.core.errors import InputError
from emospoof.ser.training import run
from emospoof.training.engine import add_training_arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="SER config (JSON)")
    parser.add_argument("--output_dir", default="./exp_result", help="parent folder of run folders")
    parser.add_argument("--comment", help="suffix of the run folder name")
    parser.add_argument("--eval", action="store_true", help="report model_path (or --model) on the test split")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--predict", metavar="DIR", help="write per-file emotion probabilities of the audio in DIR")
    parser.add_argument("--model", help="trained SER directory for --predict / --eval (default: model_path)")
    parser.add_argument("--output", default="emotion_probs.tsv", help="--predict: the TSV to write")
    parser.add_argument("--crop_seconds", type=float, help="--predict: window length (default: the config's, else 3)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    if not (args.config or args.resume or (args.predict and args.model)):
        parser.error("--config is required (or --resume RUN_DIR, or --predict DIR --model MODEL_DIR)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        code = run(args)
    except InputError as err:  # anything else is a bug: its traceback is kept
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()

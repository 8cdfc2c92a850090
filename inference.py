"""Score every audio file under a folder with a countermeasure, or export it to ONNX.

    python inference.py --config config/AASIST.conf --test_dir DIR [--output_file scores.tsv]
    python inference.py --config config/AASIST.conf --export-onnx AASIST.onnx
    python inference.py --config config/AASIST.conf --onnx AASIST.onnx --test_dir DIR

Each file is cut into overlapping windows of the model's length (a shorter clip is tiled, as in
training), the windows of many files are batched together, and a file's score is the mean of its
window scores (bona fide minus spoof logit). Files that cannot be scored are listed in an errors
file and the run goes on. Exit code: 0 every file scored, 1 some files failed (listed in the errors
file), 2 the run could not start (bad config, folder, weights or download).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emospoof.cm.folder_scoring import AGGREGATES, run
from emospoof.core.errors import InputError
from emospoof.augment.preprocess import PREPROCESSING
from emospoof.training.acceleration import PRECISIONS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON config of the model (as for main.py); not needed with --run")
    parser.add_argument("--run", type=Path, metavar="RUN_DIR",
                        help="a finished main.py run: its config, final weights, windows, preprocessing and dev "
                             "EER threshold, so the decisions are main.py --eval's")
    parser.add_argument("--emotion_calibrated", action="store_true",
                        help="with --run: apply the run's emotion-aware calibration (RUN_DIR/emotion_calibrated/) "
                             "and its dev threshold")
    parser.add_argument("--preprocess", choices=PREPROCESSING,
                        help="trim silence and set the loudness of each file first (default: the config's)")
    parser.add_argument("--test_dir", type=Path, help="folder of audio files, searched recursively")
    parser.add_argument("--output_file", type=Path, default=Path("scores.tsv"), help="default: scores.tsv")
    parser.add_argument("--errors_file", type=Path,
                        help="files that could not be scored (default: <output_file>.errors.tsv)")
    parser.add_argument("--format", choices=["tsv", "json"], default="tsv", help="json: one object per line")
    parser.add_argument("--weights", type=Path, help="state dict to score with (default: the config's model_path)")
    parser.add_argument("--offline", action="store_true", help="never download missing official weights")
    parser.add_argument("--batch_size", type=int, help="windows per forward pass (default: the config's)")
    parser.add_argument("--hop", type=int, help="samples between windows (default: eval_hop or half a window)")
    parser.add_argument("--aggregate", choices=sorted(AGGREGATES), default="mean",
                        help="how window scores make a file score (default: mean)")
    parser.add_argument("--window_scores", type=Path, help="also write every window's score to this file")
    parser.add_argument("--threshold", type=float,
                        help="decision threshold on the score (default: with --run the run's dev EER threshold, "
                             "else the calibrated one stored with the weights, else 0)")
    parser.add_argument("--calibrate", type=Path, metavar="LABELS",
                        help="labels TSV (path/file, key) for the scored files: store their EER "
                             "threshold with the weights and use it")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--eager", action="store_true", help="plain eager fp32 model on CPU (no fusion)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="bf16, fp16 or fp32 (TF32 off); auto: bf16 on GPUs of compute capability 8.0+ (A100, "
                             "H100), fp16 on older ones (V100, T4), fp32 on CPU (default: the run's with --run, "
                             "else auto)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (eager PyTorch paths; default: the run's with --run)")
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default: torch's)")
    parser.add_argument("--num_workers", type=int, help="audio-decoding processes (default: the config's)")
    parser.add_argument("--export-onnx", "--export_onnx", dest="export_onnx", type=Path, metavar="PATH",
                        help="export the model to ONNX and exit")
    parser.add_argument("--onnx", type=Path, metavar="PATH", help="score with this ONNX model (onnxruntime)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.config and not args.run:
        parser.error("--config is required (or --run RUN_DIR)")
    if args.emotion_calibrated and not args.run:
        parser.error("--emotion_calibrated goes with --run")
    if args.run and (args.config or args.weights):
        parser.error("--run takes the run's own config and weights: leave out --config and --weights")
    if not args.export_onnx and not args.test_dir:
        parser.error("--test_dir is required (or --export-onnx PATH)")
    for name in ("batch_size", "hop", "threads", "num_workers"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "num_workers" else 1):
            parser.error(f"--{name} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except InputError as err:  # anything else is a bug: its traceback is kept
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

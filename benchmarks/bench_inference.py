"""CPU inference speed of a countermeasure: plain eager fp32, eager channels-last (what main.py
uses), the optimised path of inference.py, and onnxruntime, side by side.

    python benchmarks/bench_inference.py [--config config/AASIST.conf] [--batch 4] [--repeats 3]

Prints windows/s, the real-time factor (compute time / audio time; below 1 is faster than real
time), the speed-up over eager, and the largest score difference to eager. The paths run in turn
within each repeat so that load from other processes affects them alike; best and median repeat
are both shown, with the load average before and after.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_utils import NB_SAMP, SAMPLE_RATE
from emospoof.cm.config import load_config
from emospoof.core.checkpoint import load_weights
from emospoof.core.config import ConfigError
from emospoof.scoring.onnx import export_onnx, onnx_forward
from emospoof.scoring.windows import threaded_cpu_forward, torch_forward
from models import build_model
from models.layers.fused import optimise_for_cpu


def measure(forward, x: torch.Tensor) -> float:
    started = time.perf_counter()
    forward(x)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config/AASIST.conf"))
    parser.add_argument("--weights", type=Path, help="default: random initialisation (speed does not depend on it)")
    parser.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no_onnx", action="store_true")
    args = parser.parse_args()

    config = load_config(args.config)
    nb_samp = config["model_config"].get("nb_samp", NB_SAMP)
    model = build_model(config["model_config"])
    if args.weights:
        load_weights(model, args.weights, torch.device("cpu"))
    model.eval()
    x = 0.1 * torch.randn(args.batch, nb_samp, generator=torch.Generator().manual_seed(0))
    eager = torch_forward(model, torch.device("cpu"))
    # channels-last only, as main.py runs the model
    channels_last = torch_forward(copy.deepcopy(model).to(memory_format=torch.channels_last), torch.device("cpu"))
    optimised = threaded_cpu_forward(optimise_for_cpu(model), args.threads)

    def with_threads(forward):
        def run(batch):
            torch.set_num_threads(args.threads)
            return forward(batch)
        return run

    paths = {"eager fp32": with_threads(eager), "eager channels_last": with_threads(channels_last),
             "optimised (inference.py)": optimised}
    onnx_note = ""
    if not args.no_onnx:
        onnx_dir = tempfile.TemporaryDirectory()
        try:
            export_onnx(model, Path(onnx_dir.name) / "model.onnx", nb_samp)
            paths["onnxruntime"], _ = onnx_forward(Path(onnx_dir.name) / "model.onnx", args.threads)
        except ConfigError as err:
            onnx_note = f"onnxruntime: skipped ({err})"

    reference = paths["eager fp32"](x)
    differences = {}
    for name, forward in paths.items():  # warm-up, and the equality check
        logits = forward(x)
        differences[name] = float(np.abs((logits[:, 1] - logits[:, 0]) - (reference[:, 1] - reference[:, 0])).max())
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, forward in paths.items():
            seconds[name].append(measure(forward, x))
    load_after = os.getloadavg()[0]

    audio_s = args.batch * nb_samp / SAMPLE_RATE
    print(f"{config['model_config']['architecture']} ({args.config}), {args.batch} windows of {nb_samp} samples "
          f"per pass, {args.repeats} repeats, {os.cpu_count()} CPU cores, {args.threads} threads, "
          f"torch {torch.__version__}; load average {load_before:.1f} before, {load_after:.1f} after")
    print(f"{'path':<26} {'windows/s':>10} {'RTF':>7} {'speed-up':>9} {'median w/s':>11} {'median x':>9} "
          f"{'max |d score|':>14}")
    best_eager = min(seconds["eager fp32"])
    median_eager = statistics.median(seconds["eager fp32"])
    for name, times in seconds.items():
        best, median = min(times), statistics.median(times)
        print(f"{name:<26} {args.batch / best:>10.2f} {best / audio_s:>7.3f} {best_eager / best:>8.2f}x "
              f"{args.batch / median:>11.2f} {median_eager / median:>8.2f}x {differences[name]:>14.2e}")
    if onnx_note:
        print(onnx_note)


if __name__ == "__main__":
    main()

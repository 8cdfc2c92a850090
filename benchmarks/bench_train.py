"""Training speed of a countermeasure on this machine's GPU (or CPU): utterances per second and
peak memory for the given settings, side by side with a plain fp32 eager run.

    python benchmarks/bench_train.py --config config/AASIST.conf                      # auto precision
    python benchmarks/bench_train.py --config config/AASIST.conf --precision bf16 --compile
    python benchmarks/bench_train.py --config config/AASIST_WAV2VEC.conf --batch 16 --random_xlsr

The settings run as ``main.py`` runs them (the config's precision unless ``--precision``,
``--compile``, channels-last, the config's cuDNN switches with the autotuner on when determinism
is off, TF32 only in reduced precision). The baseline is the reference code's: fp32, eager, no
channels-last, PyTorch's default TF32 switches. Each runs in a fresh process (its own compile
cache, switches and peak-memory counter) through ``emospoof.training.engine.Trainer``, the training step of
``main.py``: host-to-device copy, forward, backward and optimiser step on random audio prepared
in memory before timing, so reading audio is not counted (docs/gpu.md has the loader's rate).
Peak memory is the GPU's allocated peak over the timed steps; on CPU, the process's peak RSS.
``--random_xlsr`` puts a randomly initialised XLS-R 300M (its published architecture) behind
AASIST_WAV2VEC, so that no download is needed.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_ssl import xlsr_300m_config  # noqa: E402

from data_utils import NB_SAMP, Batch, SkipReport
from emospoof.cm.config import load_config
from emospoof.cm.training import CountermeasureTask
from emospoof.core.config import str_to_bool
from emospoof.training.acceleration import PRECISIONS, set_tf32
from emospoof.training.engine import Trainer, TrainSettings, apply_overrides, train_settings
from emospoof.training.optim import create_optimizer, parameter_groups
from models import build_model
from models.encoders.hf_audio import save_with_extractor
from utils import seed_everything, select_device

N_BATCHES = 4  # distinct random batches, cycled


def random_batches(batch_size: int, nb_samp: int, pin: bool) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for number in range(N_BATCHES):
        x = 0.1 * torch.randn(batch_size, nb_samp, generator=generator)
        labels = torch.arange(batch_size) % 2
        batch = Batch(x, labels, [f"b{number}_{i}" for i in range(batch_size)], [1] * batch_size, [])
        batches.append(batch.pin_memory() if pin else batch)
    return batches


def write_random_xlsr(config: dict, folder: Path) -> None:
    """A random XLS-R 300M encoder in ``folder``, named by the config's ``ssl_path``."""
    from transformers import Wav2Vec2Model

    save_with_extractor(Wav2Vec2Model(xlsr_300m_config()), folder)
    config["model_config"]["ssl_path"] = str(folder)


def measure(job: dict) -> dict:
    """One setting in this process: seconds of the warm-up steps (compiling included), then
    utterances/s and peak memory over the timed steps."""
    config = load_config(job["config"])
    config["swa"] = False  # the SWA copy is updated at new best epochs, never in a step
    device = select_device(job["device"])
    deterministic = str_to_bool(config.get("cudnn_deterministic_toggle", True))
    benchmark = str_to_bool(config.get("cudnn_benchmark_toggle", False))
    seed_everything(0, deterministic, benchmark)
    if job["baseline"]:
        settings = TrainSettings(precision="fp32")
    else:
        apply_overrides(config, job["precision"], job["compile"])
        settings = train_settings(config, device)
        set_tf32(settings.precision)
    scratch = tempfile.TemporaryDirectory()
    if job["random_xlsr"]:
        write_random_xlsr(config, Path(scratch.name) / "xlsr")
    model = build_model(config["model_config"]).to(device)
    if not job["baseline"]:
        model = model.to(memory_format=torch.channels_last)
    batch_size = job["batch"] or config["batch_size"]
    steps = job["steps"] + job["warmup"]
    optimizer, scheduler = create_optimizer(parameter_groups(model, config["optim_config"]), config["optim_config"],
                                            steps)
    skips = SkipReport()
    task = CountermeasureTask(model, config, device, Path(scratch.name), [], None, skips)
    trainer = Trainer(task, optimizer, scheduler, device, settings, skips)
    batches = random_batches(batch_size, config["model_config"].get("nb_samp", NB_SAMP), device.type == "cuda")

    def run(n_steps: int) -> float:
        started = time.perf_counter()
        trainer.run_epoch((batches * math.ceil(n_steps / N_BATCHES))[:n_steps], "bench")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    warmup_s = run(job["warmup"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = run(job["steps"])
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"utt_per_s": job["steps"] * batch_size / seconds, "peak_gib": peak / 2**30, "warmup_s": warmup_s,
            "precision": settings.precision, "compile": settings.compile, "batch": batch_size,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--precision", choices=PRECISIONS, help="default: the config's, else auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--batch", type=int, help="per-step batch (default: the config's batch_size)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compiling happens here)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--random_xlsr", action="store_true", help="random XLS-R 300M as the SSL model")
    parser.add_argument("--no_baseline", action="store_true", help="skip the fp32 eager run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # one measurement, in a child process
    args = parser.parse_args()
    if args.job:
        print(json.dumps(measure(json.loads(args.job))))
        return

    job = {"config": args.config, "precision": args.precision, "compile": args.compile, "batch": args.batch,
           "steps": args.steps, "warmup": args.warmup, "device": args.device, "random_xlsr": args.random_xlsr}
    runs = {}
    for name, baseline in (("settings", False), ("fp32 eager", True)):
        if baseline and args.no_baseline:
            continue
        child = subprocess.run([sys.executable, __file__, "--config", args.config,
                                "--job", json.dumps({**job, "baseline": baseline})], capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"the {name} run failed:\n{child.stderr.strip()[-2000:]}")
        runs[name] = json.loads(child.stdout.strip().splitlines()[-1])
    first = runs["settings"]
    print(f"{Path(args.config).stem} on {first['device']} (torch {torch.__version__}): batch {first['batch']}, "
          f"{args.steps} timed steps after {args.warmup} warm-up steps")
    print(f"{'run':<34} {'utt/s':>8} {'peak memory':>12} {'warm-up':>9}")
    for name, result in runs.items():
        label = (f"{result['precision']}{' + compile' if result['compile'] else ''} (main.py)"
                 if name == "settings" else "fp32 eager (reference settings)")
        print(f"{label:<34} {result['utt_per_s']:>8.1f} {result['peak_gib']:>9.2f} GiB {result['warmup_s']:>8.1f}s")
    if "fp32 eager" in runs:
        print(f"speed-up over fp32 eager: {first['utt_per_s'] / runs['fp32 eager']['utt_per_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()

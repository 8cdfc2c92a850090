"""Training with torchrun: two CPU processes (gloo) on a tiny LA-layout dataset.

A tiny RawNet2 is used because it has BatchNorm (synchronised here) and no dropout, whose masks
no two set-ups could share. The same global batch (2 processes x 4 against 1 process x 8), the
same seed and SGD make the weights equal up to float rounding (measured: at most 1.8e-7 after
two and three epochs, 2.4e-7 for the SWA weights); the test allows 1e-5. SGD, because Adam turns
the rounding noise of gradients that are zero in exact arithmetic (convolution biases followed
by BatchNorm) into steps of about the learning rate in any run: with Adam those biases differed
by up to 2.8e-3 between the two set-ups after two epochs, every other weight by at most 1.7e-4.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import main as main_module
from tests.conftest import REPO, TINY_RAWNET2, make_config, write_split

SGD = {"optimizer": "sgd", "base_lr": 0.01, "momentum": 0.9, "scheduler": "none"}
TOLERANCE = 1e-5


def torchrun(*args: str) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node 2 main.py ARGS`` on CPU, one thread per process."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(REPO / "main.py"), *args, "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finished(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return out


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (torchrun puts its workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One process with batch 8 and two with batch 4, three epochs each, same seed."""
    root = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    write_split(root / "LA", "train", "T", 8, rng, corrupt=True)
    write_split(root / "LA", "dev", "D", 4, rng)
    write_split(root / "LA", "eval", "E", 4, rng)
    # The reference's class weights: TOLERANCE was measured with them (with the balanced default the
    # larger spoof gradients make the float32 rounding of the two set-ups drift to about 3e-5).
    common = {"num_epochs": 3, "model_config": TINY_RAWNET2, "optim_config": SGD, "sync_batchnorm": True,
              "class_weights": "reference"}
    two = make_config(root, root / "LA", "two.conf", batch_size=4, **common)
    one = make_config(root, root / "LA", "one.conf", batch_size=8, **common)
    process = torchrun("--config", str(two), "--output_dir", str(root / "two"))
    torch.set_num_threads(1)
    main_module.main(["--config", str(one), "--output_dir", str(root / "one"), "--device", "cpu"])
    stdout = finished(process)
    return {"root": root, "config": two, "stdout": stdout,
            "one": next((root / "one").iterdir()), "two": list((root / "two").iterdir())}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_two_processes_train_as_one_with_the_same_global_batch(runs):
    assert len(runs["two"]) == 1  # one run folder, written by rank 0
    two, one = runs["two"][0], runs["one"]
    training = json.loads((two / "eval_report.json").read_text())["training"]
    assert training["world_size"] == 2 and training["batch_size_per_process"] == 4
    assert training["effective_batch_size"] == 8 and training["sync_batchnorm"] is True
    assert json.loads((one / "eval_report.json").read_text())["training"]["world_size"] == 1
    assert runs["stdout"].count("epoch 1: train loss") == 1  # rank 0 alone prints

    # After epochs 2 and 3 (4 and 6 SGD steps, a corrupt training file skipped on one rank):
    for name, epoch in (("checkpoint.prev.pth", 2), ("checkpoint.pth", 3)):
        a, b = weights(one / name), weights(two / name)
        assert torch.load(two / name, weights_only=True)["epoch"] == epoch
        gap = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        assert gap < TOLERANCE, (name, gap)
    # SWA: the same average, its BatchNorm statistics re-estimated over the same global batches
    a, b = (load_file(run / "weights/swa.safetensors") for run in (one, two))
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) < TOLERANCE
    # the weights moved between the two compared points by far more than the tolerance
    a, b = weights(one / "checkpoint.prev.pth"), weights(one / "checkpoint.pth")
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) > 100 * TOLERANCE
    rows = [list(csv.DictReader(open(run / "metrics.csv"))) for run in (one, two)]
    for row_one, row_two in zip(*rows):
        assert abs(float(row_one["train_loss"]) - float(row_two["train_loss"])) < TOLERANCE
        assert row_one["dev_eer"] == row_two["dev_eer"] and row_two["n_skipped"] == "1"
    # dev and eval scoring, split between the ranks, gathered every trial
    assert len((two / "eval_scores.txt").read_text().splitlines()) == 8


def test_two_process_run_killed_after_its_first_epoch_resumes(runs):
    out = runs["root"] / "killed"
    process = torchrun("--config", str(runs["config"]), "--output_dir", str(out))
    deadline = time.time() + 600
    while not list(out.glob("*/checkpoint.pth")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    for pid in descendants(process.pid):
        os.kill(pid, signal.SIGKILL)
    process.communicate()
    run_dir = next(out.iterdir())
    assert torch.load(run_dir / "checkpoint.pth", weights_only=True)["epoch"] == 1
    assert not (run_dir / "eval_report.json").exists()

    resumed = torchrun("--resume", str(run_dir))
    stdout = finished(resumed)
    assert "after epoch 1" in stdout
    reference = runs["two"][0]
    assert json.loads((run_dir / "eval_report.json").read_text())["training"]["world_size"] == 2
    a = load_file(reference / "weights/final.safetensors")
    b = load_file(run_dir / "weights/final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # exactly the uninterrupted two-process run
    assert (reference / "eval_scores.txt").read_text() == (run_dir / "eval_scores.txt").read_text()
    assert [r["epoch"] for r in csv.DictReader(open(run_dir / "metrics.csv"))] == ["1", "2", "3"]

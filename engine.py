"""The one training loop, driven by ``main.py`` (countermeasures) and ``train_ser.py`` (SER models).

A recipe describes what is specific to it as a :class:`Task` (its loss on a batch, its
validation, what to do at a new best epoch); :func:`fit` does the rest the same way for
everyone: epochs with progress bars, mixed precision, optimiser and schedule steps, model
selection on the validation value, early stopping, ``metrics.csv``, and a checkpoint after every
epoch from which ``--resume`` continues exactly as an uninterrupted run would.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from checkpoint import CHECKPOINT, PREVIOUS, restore_rng_state, rng_state, save_checkpoint
from config import ConfigError
from data_utils import Batch, SkipReport

METRICS_CSV = "metrics.csv"


@dataclass
class Validation:
    """The result of validating after an epoch: CSV columns, the value models are selected on,
    and the words of the epoch's log line."""

    columns: dict
    value: float
    text: str


class Task(Protocol):
    """What a recipe tells :func:`fit`."""

    model: nn.Module

    def loss(self, batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, logits) of a training batch; run under the loop's autocast."""

    def start_epoch(self, epoch: int) -> None:
        """Called before an epoch's training (e.g. to unfreeze layers)."""

    def validate(self, epoch: int) -> Validation:
        """Evaluate the model after an epoch's training."""

    def improves(self, value: float, best: float | None) -> bool:
        """Whether ``value`` is a new best (``best`` is None before the first epoch)."""

    def new_best(self, epoch: int, row: dict) -> None:
        """Keep the new best model; may add columns to the epoch's ``row``."""

    def extra_state(self) -> dict:
        """Task state that a checkpoint must carry (e.g. the SWA average)."""

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""


@dataclass
class FitResult:
    rows: list[dict]
    best: float | None
    stopped_early: bool


def new_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir`` for a new run; a folder that already holds a run is never overwritten."""
    if (run_dir / CHECKPOINT).exists() or (run_dir / PREVIOUS).exists():
        raise ConfigError(f"{run_dir} already holds a run: continue it with --resume {run_dir} "
                          "or choose another --comment/--output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """One row per epoch; columns that only some epochs have are left empty in the others."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def train_one_epoch(task: Task, loader, optimizer, scheduler, scaler: torch.amp.GradScaler, device: torch.device,
                    mixed_precision: bool, skips: SkipReport, desc: str) -> dict:
    """One pass over ``loader``: mean training loss and accuracy of the epoch."""
    task.model.train()
    losses, correct, seen = [], 0, 0
    progress = tqdm(loader, desc=desc, unit="batch", leave=False)
    for batch in progress:
        skips.add(batch.failures)
        if not batch.utt_ids:
            continue
        with torch.autocast(device.type, dtype=torch.float16, enabled=mixed_precision and device.type == "cuda"):
            loss, logits = task.loss(batch, device)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        losses.append(loss.item())
        correct += int((logits.detach().argmax(dim=-1).cpu() == batch.labels).sum())
        seen += len(batch.labels)
        progress.set_postfix(loss=f"{np.mean(losses):.4f}")
    if not seen:
        raise ValueError("no training batch could be loaded (every file was skipped)")
    return {"train_loss": float(np.mean(losses)), "train_accuracy": correct / seen}


def fit(task: Task, loader, optimizer, scheduler, *, run_dir: Path, epochs: int, seed: int,
        generator: torch.Generator, device: torch.device, skips: SkipReport, mixed_precision: bool = False,
        patience: int | None = None, resume: dict | None = None) -> FitResult:
    """Train ``task.model`` for ``epochs`` (fewer when the validation value has not improved for
    ``patience`` epochs), checkpointing after every epoch; ``resume`` is a checkpoint to continue."""
    scaler = torch.amp.GradScaler(device.type, enabled=mixed_precision and device.type == "cuda")
    start, best, stale, rows = 0, None, 0, []
    if resume:
        task.model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        task.load_extra_state(resume["task"])
        restore_rng_state(resume["rng"], generator)
        start, best, stale, rows = resume["epoch"], resume["best"], resume["stale"], resume["rows"]
        tqdm.write(f"resuming {run_dir} after epoch {start}")

    stopped_early = False
    for epoch in tqdm(range(start + 1, epochs + 1), desc="epochs", unit="epoch", initial=start, total=epochs):
        if patience is not None and stale >= patience:
            stopped_early = True
            tqdm.write(f"early stop: the validation value has not improved for {patience} epochs")
            break
        started = time.time()
        task.start_epoch(epoch)
        row = {"epoch": epoch, **train_one_epoch(task, loader, optimizer, scheduler, scaler, device,
                                                  mixed_precision, skips, f"epoch {epoch}/{epochs}")}
        validation = task.validate(epoch)
        improved = task.improves(validation.value, best)
        row.update(validation.columns, lr=optimizer.param_groups[0]["lr"], new_best=int(improved))
        if improved:
            best, stale = validation.value, 0
            task.new_best(epoch, row)
        else:
            stale += 1
        row.update(n_skipped=len(skips), seconds=round(time.time() - started, 1))
        rows.append(row)
        tqdm.write(f"epoch {epoch}: train loss {row['train_loss']:.5f}  {validation.text}"
                   f"{'  (best)' if improved else ''}")
        write_metrics_csv(run_dir / METRICS_CSV, rows)
        save_checkpoint({
            "model": task.model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "task": task.extra_state(),
            "rng": rng_state(generator), "epoch": epoch, "seed": seed, "best": best, "stale": stale, "rows": rows,
        }, run_dir)
    return FitResult(rows, best, stopped_early)

"""The one training loop, driven by ``main.py`` (countermeasures) and ``train_ser.py`` (SER models).

A recipe describes what is specific to it as a :class:`Task` (its loss on a batch, its
validation, what to do at a new best epoch); :func:`fit` does the rest the same way for
everyone: epochs with progress bars, precision (bf16 / fp16 with gradient scaling / fp32),
``torch.compile``, gradient accumulation, DistributedDataParallel under torchrun (optionally with
synchronised BatchNorm), optimiser and schedule steps, model selection on the validation value,
early stopping, ``metrics.csv``, TensorBoard, the training-curve PNG, and a checkpoint after
every epoch from which ``--resume`` continues exactly as an uninterrupted run would.

Losses are sums over the batch with their total weight beside them (:class:`StepLoss`): the
optimiser step divides the gradients by the weight of the whole effective batch, summed over the
accumulated micro-batches and the ranks, so that N processes with batch B, or N accumulation
steps of batch B, take the same step as one process with batch N x B, class weights included.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from data_utils import Batch, SkipReport
from emospoof.core.checkpoint import CHECKPOINT, PREVIOUS, restore_rng_state, rng_state, save_checkpoint
from emospoof.core.config import ConfigError, str_to_bool
from emospoof.core.errors import InputValueError
from emospoof.reports.plots import plot_training_curves
from emospoof.training import distributed
from emospoof.training.acceleration import (PRECISIONS, autocast, check_precision, first_call_timed, grad_scaler,
                                            resolve_precision)

METRICS_CSV = "metrics.csv"
CURVES_PNG = "training_curves.png"
TENSORBOARD_DIR = "tensorboard"
# Config keys of the loop, shared by the countermeasure and SER schemas (docs/config.md).
TRAINING_KEYS = {"precision", "compile", "grad_accum_steps", "sync_batchnorm"}


class StepLoss(NamedTuple):
    """A batch's loss as a sum of per-sample (weighted) losses, the sum of those weights (the batch
    mean is ``total / weight``), and the logits."""

    total: torch.Tensor
    weight: torch.Tensor
    logits: torch.Tensor


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor | None = None
                           ) -> StepLoss:
    """Cross-entropy (class-weighted when ``class_weight`` is given) as a :class:`StepLoss`."""
    total = F.cross_entropy(logits.float(), labels, weight=class_weight, reduction="sum")
    weight = class_weight[labels].sum() if class_weight is not None else total.new_full((), len(labels))
    return StepLoss(total, weight, logits)


@dataclass
class Validation:
    """The result of validating after an epoch: CSV columns, the value models are selected on,
    the words of the epoch's log line, and a second value that may break a tie on ``value``
    (None: none; the task's ``improves`` decides how)."""

    columns: dict
    value: float
    text: str
    tie_break: float | None = None


class Task(Protocol):
    """What a recipe tells :func:`fit`. ``model`` is trained and checkpointed; a task whose loss
    needs more than ``model.forward`` may also have ``train_module``, a module owning the same
    parameters whose forward does all of it: the module a step runs (and DDP wraps)."""

    model: nn.Module

    def loss(self, net: nn.Module, batch: Batch) -> StepLoss:
        """The loss of a training batch already on the device, computed with ``net`` (the model
        as it runs: wrapped in DDP, compiled); called under the loop's autocast."""

    def start_epoch(self, epoch: int) -> None:
        """Called before an epoch's training (e.g. to unfreeze layers)."""

    def validate(self, epoch: int) -> Validation:
        """Evaluate the model after an epoch's training (the same result on every rank)."""

    def improves(self, validation: Validation, best: Validation | None) -> bool:
        """Whether ``validation`` is a new best against the best epoch's (None before the first
        epoch; after a resume it holds only ``value`` and ``tie_break``)."""

    def new_best(self, epoch: int, row: dict) -> None:
        """Keep the new best model; may add columns to the epoch's ``row``."""

    def extra_state(self) -> dict:
        """Task state that a checkpoint must carry (e.g. the SWA average)."""

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""


@dataclass(frozen=True)
class TrainSettings:
    """How the loop runs: ``precision`` resolved for the device (bf16, fp16, fp32)."""

    precision: str = "fp32"
    compile: bool = False
    grad_accum_steps: int = 1
    sync_batchnorm: bool = False
    tensorboard: bool = False


def validate_training_keys(config: dict) -> None:
    """Check the loop's config keys (:data:`TRAINING_KEYS`)."""
    check_precision(config.get("precision", "auto"))
    for key in ("compile", "sync_batchnorm"):
        str_to_bool(config.get(key, False), key)
    steps = config.get("grad_accum_steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"config key 'grad_accum_steps': expected a positive integer, got {steps!r}")


def apply_overrides(config: dict, precision: str | None, compile_model: bool) -> None:
    """Command-line ``--precision`` / ``--compile`` replace the config's values (and are saved
    with the run's config, so ``--resume`` keeps them)."""
    if precision:
        config["precision"] = check_precision(precision, "--precision")
    if compile_model:
        config["compile"] = True


def _check_tensorboard() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401  (optional dependency)
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None


def seed_value(text: str) -> int:
    """A ``--seed``: numpy's generators take no negative seed nor one of more than 32 bits."""
    seed = int(text) if text.lstrip("-").isdigit() else -1
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"{text}: a seed is a whole number from 0 to 2**32 - 1")
    return seed


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """``--seed``, ``--precision``, ``--compile`` and ``--tensorboard`` of ``main.py`` and ``train_ser.py``."""
    parser.add_argument("--seed", type=seed_value, default=1234)
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="bf16, fp16 (with gradient scaling) or fp32 (TF32 off); default: the config's "
                             "'precision', else auto (bf16 on GPUs of compute capability 8.0+ such as A100/H100, "
                             "fp16 on older ones such as V100/T4, fp32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (training and scoring)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log to TensorBoard in RUN_DIR/tensorboard (needs the tensorboard package)")


def train_settings(config: dict, device: torch.device, tensorboard: bool = False) -> TrainSettings:
    """The loop's settings from the config; ``tensorboard`` is checked to be usable at once."""
    if tensorboard:
        _check_tensorboard()
    return TrainSettings(resolve_precision(config.get("precision", "auto"), device),
                         str_to_bool(config.get("compile", False)), config.get("grad_accum_steps", 1),
                         str_to_bool(config.get("sync_batchnorm", False)), tensorboard)


def settings_summary(settings: TrainSettings, batch_size: int) -> dict:
    """What a report records about how the run was trained."""
    world = distributed.world_size()
    return {"world_size": world, "batch_size_per_process": batch_size,
            "grad_accum_steps": settings.grad_accum_steps,
            "effective_batch_size": batch_size * world * settings.grad_accum_steps,
            "precision": settings.precision, "compile": settings.compile,
            "sync_batchnorm": settings.sync_batchnorm and world > 1}


@dataclass
class FitResult:
    """The epochs' rows, the best epoch's validation value, and whether patience ran out."""

    rows: list[dict]
    best: float | None
    stopped_early: bool


def best_from_checkpoint(state: dict) -> Validation | None:
    """The best epoch's validation as a checkpoint keeps it: ``best`` (its value, a float) and
    ``best_tie_break`` (absent from checkpoints written before ties were broken: None)."""
    if state["best"] is None:
        return None
    return Validation({}, state["best"], "", state.get("best_tie_break"))


def new_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir`` for a new run; a folder that already holds a run is never overwritten."""
    if (run_dir / CHECKPOINT).exists() or (run_dir / PREVIOUS).exists():
        raise ConfigError(f"{run_dir} already holds a run: continue it with --resume {run_dir} "
                          "or choose another --comment/--output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def create_run(run_dir: Path, config: dict) -> None:
    """A new run folder holding the run's config; under torchrun rank 0 creates it and the
    others wait (and all stop with its error when it cannot)."""
    def create() -> None:
        new_run_dir(run_dir)
        (run_dir / "config.conf").write_text(json.dumps(config, indent=4))
    distributed.on_main(create)


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """One row per epoch; columns that only some epochs have are left empty in the others."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


class TensorBoardLog:
    """Scalars for TensorBoard in ``run_dir/tensorboard``: loss and learning rate per optimiser
    step, every numeric ``metrics.csv`` column per epoch."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR))

    def step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trainer:
    """The training steps of :func:`fit`: the model as it runs (synchronised BatchNorm, DDP,
    torch.compile), autocast and loss scaling, gradient accumulation and the optimiser step.
    ``benchmarks/bench_train.py`` times this same code."""

    def __init__(self, task: Task, optimizer, scheduler, device: torch.device, settings: TrainSettings,
                 skips: SkipReport, log: TensorBoardLog | None = None) -> None:
        self.task, self.optimizer, self.scheduler, self.device = task, optimizer, scheduler, device
        self.settings, self.skips, self.log = settings, skips, log
        self.scaler = grad_scaler(device, settings.precision)
        self.net: nn.Module | None = None
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        self._trainable: tuple[int, ...] = ()
        # The summed loss is back-propagated divided by the loader's batch size, so that float16
        # gradients have a batch mean's magnitude; the optimiser step multiplies it back.
        self._unit: float | None = None
        if settings.sync_batchnorm:
            distributed.convert_sync_batchnorm(task.model, device)
        self._micro_step = self._forward_backward
        if settings.compile:
            self._micro_step = first_call_timed(self._forward_backward, "the first training step")

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):  # empty when saved by a bf16/fp32 run
            self.scaler.load_state_dict(state["scaler"])

    def _prepare(self) -> None:
        """(Re)build the running model when the trainable parameters changed (a recipe may
        unfreeze layers): DDP only synchronises the parameters that were trainable when it
        was built."""
        module = getattr(self.task, "train_module", self.task.model)
        trainable = tuple(id(p) for p in module.parameters() if p.requires_grad)
        if self.net is not None and trainable == self._trainable:
            return
        self._trainable = trainable
        self.net = distributed.wrap(module, self.device)
        self._ddp = self.net if self.net is not module else None
        if self.settings.compile:
            self.net = torch.compile(self.net)

    def _forward_backward(self, batch: Batch, synchronise: bool) -> StepLoss:
        with self._ddp.no_sync() if self._ddp is not None and not synchronise else nullcontext():
            with autocast(self.device, self.settings.precision):
                loss = self.task.loss(self.net, batch)
            self.scaler.scale(loss.total / self._unit).backward()
        return loss

    def _optimizer_step(self, weight: torch.Tensor, synchronised: bool) -> None:
        """Gradients / weight of the effective batch (all ranks), then the optimiser step."""
        parameters = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not synchronised:
            distributed.average_gradients(parameters)
        self.scaler.unscale_(self.optimizer)
        if parameters:
            factor = distributed.world_size() * self._unit / distributed.sum_over_ranks(weight.clone())
            torch._foreach_mul_([p.grad for p in parameters], factor)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run_epoch(self, loader, desc: str) -> dict:
        """One pass over ``loader``: the epoch's training loss (weighted mean over its samples)
        and accuracy, over all ranks."""
        self._prepare()
        self.task.model.train()
        # the same on every rank and in every epoch, so that a resumed run rounds as the original
        self._unit = self._unit or float(getattr(loader, "batch_size", None) or max(len(b.labels) for b in loader))
        accumulate = self.settings.grad_accum_steps
        # loss sum, weight sum, correct: on the device, so that no step waits for the GPU
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        step_weight = torch.zeros((), device=self.device)
        pending, seen, last = 0, 0, len(loader)
        progress = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not distributed.is_main())
        for number, batch in enumerate(progress, start=1):
            self.skips.add(batch.failures)
            if not distributed.all_ranks(bool(batch.utt_ids)):  # every rank takes part in every step
                continue
            batch = batch.to(self.device)
            pending += 1
            synchronise = pending == accumulate or number == last
            loss = self._micro_step(batch, synchronise)
            step_weight += loss.weight.detach()
            correct = (loss.logits.detach().argmax(dim=-1) == batch.labels).sum()
            totals += torch.stack([loss.total.detach(), loss.weight.detach(), correct]).double()
            seen += len(batch.labels)
            if synchronise:
                self._after_step(step_weight, loss, progress)
                step_weight, pending = torch.zeros((), device=self.device), 0
        if pending:  # the epoch's last batch was skipped: step with what was accumulated
            self._optimizer_step(step_weight, False)
        counts = torch.cat([totals, totals.new_full((1,), seen)])
        loss_sum, weight, correct, seen = distributed.sum_over_ranks(counts).tolist()
        if not seen:
            raise InputValueError("no training batch could be loaded (every file was skipped)")
        return {"train_loss": loss_sum / weight, "train_accuracy": correct / seen}

    def _after_step(self, weight: torch.Tensor, loss: StepLoss, progress) -> None:
        self._optimizer_step(weight, True)
        step = self.scheduler.last_epoch
        if self.log is not None:  # reading the loss waits for the GPU: only when logging it
            self.log.step(step, (loss.total / loss.weight).item(), self.optimizer.param_groups[0]["lr"])
        if step % 25 == 0:
            progress.set_postfix(loss=f"{(loss.total / loss.weight).item():.4f}")


def _restore_rank_rng(resume: dict, generator: torch.Generator) -> None:
    """This rank's random streams as the checkpoint saved them."""
    states = resume.get("rng_per_rank") or [resume["rng"]]
    if len(states) != distributed.world_size():
        tqdm.write(f"note: the run was saved by {len(states)} process(es) and continues with "
                   f"{distributed.world_size()}: it will not repeat an uninterrupted run exactly")
    restore_rng_state(states[distributed.rank()] if len(states) == distributed.world_size() else states[0],
                      generator)


def fit(task: Task, loader, optimizer, scheduler, *, run_dir: Path, epochs: int, seed: int,
        generator: torch.Generator, device: torch.device, skips: SkipReport,
        settings: TrainSettings = TrainSettings(), patience: int | None = None,
        resume: dict | None = None) -> FitResult:
    """Train ``task.model`` for ``epochs`` (fewer when the validation value has not improved for
    ``patience`` epochs), checkpointing after every epoch; ``resume`` is a checkpoint to continue.
    Under torchrun every rank calls this; rank 0 alone writes files."""
    log = TensorBoardLog(run_dir) if settings.tensorboard and distributed.is_main() else None
    trainer = Trainer(task, optimizer, scheduler, device, settings, skips, log)
    start, best, stale, rows = 0, None, 0, []
    if resume:
        task.model.load_state_dict(resume["model"])
        trainer.load_state_dict(resume)
        task.load_extra_state(resume["task"])
        _restore_rank_rng(resume, generator)
        start, best, stale, rows = resume["epoch"], best_from_checkpoint(resume), resume["stale"], resume["rows"]
        tqdm.write(f"resuming {run_dir} after epoch {start}")
    else:
        distributed.seed_for_rank(seed)

    stopped_early = False
    for epoch in tqdm(range(start + 1, epochs + 1), desc="epochs", unit="epoch", initial=start, total=epochs,
                      disable=not distributed.is_main()):
        if patience is not None and stale >= patience:
            stopped_early = True
            tqdm.write(f"early stop: the validation value has not improved for {patience} epochs")
            break
        started = time.time()
        task.start_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        row = {"epoch": epoch, **trainer.run_epoch(loader, f"epoch {epoch}/{epochs}")}
        for failures in distributed.all_gather(sorted(skips.reasons.items())):
            skips.add(failures)  # files skipped by any rank
        validation = task.validate(epoch)
        improved = task.improves(validation, best)
        row.update(validation.columns, lr=optimizer.param_groups[0]["lr"], new_best=int(improved))
        if improved:
            best, stale = validation, 0
            task.new_best(epoch, row)
        else:
            stale += 1
        row.update(n_skipped=len(skips), seconds=round(time.time() - started, 1))
        rows.append(row)
        tqdm.write(f"epoch {epoch}: train loss {row['train_loss']:.5f}  {validation.text}"
                   f"{'  (best)' if improved else ''}")
        streams = distributed.all_gather(rng_state(generator))
        if distributed.is_main():
            write_metrics_csv(run_dir / METRICS_CSV, rows)
            if log is not None:
                log.epoch(row)
            save_checkpoint({
                "model": task.model.state_dict(), **trainer.state_dict(), "task": task.extra_state(),
                "rng": streams[0], "rng_per_rank": streams, "epoch": epoch, "seed": seed,
                "best": None if best is None else best.value,
                "best_tie_break": None if best is None else best.tie_break,
                "stale": stale, "rows": rows,
            }, run_dir)
    if distributed.is_main():
        plot_training_curves(rows, run_dir / CURVES_PNG)
        if log is not None:
            log.close()
    return FitResult(rows, None if best is None else best.value, stopped_early)

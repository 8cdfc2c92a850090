"""Several processes training one model: ``torchrun ... main.py`` (or ``train_ser.py``) with
``DistributedDataParallel``.

torchrun starts one process per GPU (or per CPU share) and tells each its rank through the
environment; :func:`init` joins them into a process group (NCCL on GPUs, gloo on CPUs). Every
process then runs the same recipe on its own share of the data: the training loader deals out
the trials (``data_utils.make_loader``), gradients are averaged by DDP, dev and eval scoring is
split across the processes and gathered back to the full trial list (``emospoof.scoring.windows.score_windows``),
and only rank 0 writes checkpoints, logs and reports (the others write to a throwaway folder,
:func:`output_dir`, and print nothing to stdout). Without torchrun everything here is a no-op
for a single process.
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as collectives
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from emospoof.core.config import ConfigError
from emospoof.core.errors import InputError

T = TypeVar("T")
_state: dict = {"cpu_group": None, "scratch": None}


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group when started by torchrun (NCCL for CUDA, gloo for CPU) and return
    this process's device (``cuda:LOCAL_RANK`` on GPUs); without torchrun, ``device`` unchanged."""
    if not launched_by_torchrun() or active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        # Objects (scores, RNG states, flags) travel over gloo so the host never waits for the GPU.
        _state["cpu_group"] = dist.new_group(backend="gloo")
    else:
        dist.init_process_group("gloo")
    if not is_main():  # one copy of every message: rank 0's (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")
    return device


def shutdown() -> None:
    """Leave the process group and remove this process's throwaway folder."""
    if active():
        dist.destroy_process_group()
    _state["cpu_group"] = None
    if _state["scratch"]:
        shutil.rmtree(_state["scratch"], ignore_errors=True)
        _state["scratch"] = None


def output_dir(run_dir: Path) -> Path:
    """Where this process writes files: ``run_dir`` on rank 0; on the other ranks, whose reports
    would be identical copies, a throwaway folder removed by :func:`shutdown`."""
    if is_main():
        return run_dir
    if _state["scratch"] is None:
        _state["scratch"] = tempfile.mkdtemp(prefix=f"emospoof-rank{rank()}-")
    return Path(_state["scratch"])


def barrier() -> None:
    if active():
        dist.barrier(group=_state["cpu_group"])


def all_gather(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order (picklable objects, sent over a CPU group)."""
    if not active():
        return [obj]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, obj, group=_state["cpu_group"])
    return gathered


def all_ranks(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank; every rank gets the same answer."""
    return all(all_gather(bool(flag)))


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over the ranks, on its device (no host synchronisation)."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def on_main(fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` run by rank 0 alone (creating the run folder, writing a shared file); every
    rank returns its result, or raises the input error (``emospoof.core.errors.InputError``) it
    raised, so that no rank waits for one that stopped. Any other exception is a bug: rank 0 stops
    with its traceback, and torchrun stops the others."""
    if not active():
        return fn(*args)
    outcome: list = [None]
    if is_main():
        try:
            outcome = [("ok", fn(*args))]
        except InputError as err:
            outcome = [(type(err).__name__, str(err))]
    dist.broadcast_object_list(outcome, src=0, group=_state["cpu_group"])
    kind, value = outcome[0]
    if kind == "ok":
        return value
    raise (ConfigError if kind == "ConfigError" else InputError)(value)


def shard(items: list[T]) -> list[T]:
    """This rank's share of ``items`` (every world-size-th one), for scoring in parallel."""
    return items[rank()::world_size()]


def seed_for_rank(seed: int) -> None:
    """Give each rank its own stream for dropout and other draws of the training step; the
    model itself was built from the common seed (DDP also broadcasts rank 0's weights)."""
    if world_size() > 1:
        stream = int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0])
        random.seed(stream)
        np.random.seed(stream)
        torch.manual_seed(stream)


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the batch of all ranks together, for
    DDP on CPUs (gloo), where ``torch.nn.SyncBatchNorm`` refuses to run. The sums travel through
    differentiable all-reduces, so the gradient is that of the whole batch too (Ioffe & Szegedy,
    2015, over the global batch). Outside training, or in one process, it is plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input with a channel dimension, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active() and world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x if x.dtype in (torch.float32, torch.float64) else x.float()  # statistics in float32 at least
        count = torch.tensor([values.numel() / values.shape[1]], dtype=values.dtype, device=values.device)
        totals = collectives.all_reduce(torch.cat([values.sum(dims), count]), "sum", dist.group.WORLD)
        n = totals[-1]
        mean = totals[:-1] / n
        centred = values - mean.view(shape)
        var = collectives.all_reduce(centred.pow(2).sum(dims), "sum", dist.group.WORLD) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` made to normalise over the global batch, in place and keeping
    its parameters and buffers (so optimisers and state dicts are unaffected): torch's
    SyncBatchNorm on GPUs, :class:`GlobalBatchNorm` on CPUs."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and not isinstance(child, GlobalBatchNorm):
                twin = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
                twin.weight, twin.bias = child.weight, child.bias
                twin.running_mean, twin.running_var = child.running_mean, child.running_var
                twin.num_batches_tracked = child.num_batches_tracked
                twin.train(child.training)
                setattr(parent, name, twin)
    return model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks. Parameters that a step
    may leave unused (LayerDrop in wav2vec 2.0 models, frozen branches) are looked for, at the
    cost of one walk over the autograd graph per step."""
    if world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Average gradients over the ranks by hand, for gradients DDP did not synchronise."""
    if world_size() == 1:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= world_size()


def average_batchnorm_statistics(modules: Iterable[nn.Module]) -> None:
    """Running means and variances of the BatchNorm layers among ``modules`` averaged over the
    ranks (each estimated them on its own share of the data, e.g. SWA's BatchNorm update).

    A plain mean of the variances, with no between-rank term: SWA's update (momentum None) keeps
    the average of per-batch statistics, so one process over all the batches would hold the mean
    of every batch's variance -- which, the ranks having the same number of batches, is the mean
    of the ranks' running variances. Adding the spread of the ranks' means would count a variance
    a single process never does."""
    if world_size() == 1:
        return
    for module in modules:
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var):
                dist.all_reduce(buffer)
                buffer /= world_size()

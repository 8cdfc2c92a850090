"""The one scoring path: windows of many files batched through a model.

``main.py`` (dev scoring during training, ``--eval``), ``inference.py`` (scoring a folder) and
``train_ser.py`` (SER evaluation and prediction) all score through :func:`score_windows`: loader
workers decode files and cut them into windows (``data_utils.TrialDataset``), the windows of
consecutive files are packed into fixed-size batches for the model, and each file gets back the
outputs of its own windows. A file that cannot be used is reported once and left out; the run goes on.
Under torchrun the ranks score a share of the files each and every rank gets all the outputs.

A *forward* is any function from a (batch, samples) window tensor to a (batch, outputs) NumPy
array: eager PyTorch on any device (:func:`torch_forward`), the CPU-optimised AASIST
(:func:`threaded_cpu_forward` over ``models.layers.fused.optimise_for_cpu``) or an onnxruntime session
(``emospoof.scoring.onnx.onnx_forward``).
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from data_utils import NB_SAMP, LoadedTrial, SkipReport, Trial, TrialDataset, default_num_workers
from emospoof.core.config import str_to_bool
from emospoof.core.labels import cm_scores
from emospoof.training import distributed
from emospoof.training.acceleration import autocast, compiled, resolve_precision
from models.layers.fused import optimise_for_cpu
from models.layers.replicas import shared_copy

# forward(windows, utterance_inputs=None) -> outputs: the inputs (one row per window) are what a
# model needs beside the audio, e.g. the emotion input of the window's utterance.
Forward = Callable[..., np.ndarray]
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
Preprocess = Callable[[np.ndarray], np.ndarray]


def cm_logits(model: nn.Module, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of a countermeasure, whose forward returns ``(embedding, logits)``; ``extra`` is the
    emotion input of each window's utterance, for the models that take one."""
    return model(x)[1] if extra is None else model(x, emotion=extra)[1]


def torch_forward(model: nn.Module, device: torch.device,
                  logits_of: Callable[[nn.Module, torch.Tensor], torch.Tensor] = cm_logits,
                  precision: str | None = None, compile_model: bool = False) -> Forward:
    """Logits of a batch of windows in inference mode, under the autocast of ``precision``
    (None: the device's default, ``emospoof.training.acceleration.resolve_precision``), through torch.compile
    when ``compile_model``."""
    precision = resolve_precision(precision, device)
    run = compiled(model) if compile_model else model

    def forward(x: torch.Tensor, extra: torch.Tensor | None = None) -> np.ndarray:
        with torch.inference_mode(), autocast(device, precision):
            x = x.to(device, non_blocking=True)
            logits = logits_of(run, x) if extra is None else logits_of(run, x, extra.to(device, non_blocking=True))
            return logits.float().cpu().numpy()
    return forward


def threaded_cpu_forward(model: nn.Module, threads: int) -> Forward:
    """Logits of a batch of windows, the windows shared among ``threads`` Python threads that each
    run torch single-threaded.

    The fused blocks issue many small operations; with OpenMP threads each one ends in a barrier,
    and on a busy machine (other processes on the cores) those barriers made a 2-thread run up to
    10x slower than a 1-thread one here. Threads that own whole windows never wait for each other.

    Each running thread holds a replica of ``model`` of its own (``models.layers.replicas``: the
    module objects copied, the weights shared), so a module that keeps something of a call on
    itself (the HF SER's pooled classifier input) never hands it to another thread's call.
    """
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    free: SimpleQueue[nn.Module] = SimpleQueue()  # the replicas no thread is using
    for replica in [model] + [shared_copy(model) for _ in range(threads - 1)]:
        free.put(replica)

    def one(x: torch.Tensor, extra: torch.Tensor | None) -> np.ndarray:
        replica = free.get()
        try:
            with torch.inference_mode():
                return cm_logits(replica, x, extra).numpy()
        finally:
            free.put(replica)

    def forward(x: torch.Tensor, extra: torch.Tensor | None = None) -> np.ndarray:
        torch.set_num_threads(1)  # process-wide; set on every call in case someone changed it
        if pool is None or len(x) == 1:
            return one(x, extra)
        parts = min(threads, len(x))
        extras = [None] * parts if extra is None else extra.tensor_split(parts)
        return np.concatenate(list(pool.map(one, x.tensor_split(parts), extras)))
    return forward


@dataclass
class ScoringRun:
    """Per utterance id: the outputs of its windows (n_windows, n_outputs) and its duration; the
    trials that could not be scored with the reason; totals."""

    outputs: dict[str, np.ndarray]
    durations: dict[str, float]
    errors: list[tuple[Trial, str]]
    n_windows: int
    seconds: float


def _keep_as_is(item: LoadedTrial) -> LoadedTrial:
    return item


def score_windows(trials: list[Trial], forward: Forward, nb_samp: int, mode: str = "full", hop: int | None = None,
                  batch_size: int = 32, num_workers: int = 0, skips: SkipReport | None = None,
                  progress: bool = True, desc: str = "scoring", reject_silent: bool = False,
                  augment: Augment | None = None, preprocess: Preprocess | None = None,
                  utterance_inputs: Mapping[str, np.ndarray] | None = None) -> ScoringRun:
    """Outputs of every window of every trial (``mode`` ``first`` or ``full``, as in
    ``TrialDataset``), ``batch_size`` windows per forward call whichever files they come from;
    ``preprocess`` conditions each recording as it is read, then ``augment`` (an eval condition)
    transforms each utterance, the same way every time; ``utterance_inputs`` (utterance id ->
    vector) are handed to ``forward`` beside each of the utterance's windows."""
    local = distributed.shard(trials)  # under torchrun each rank scores its share
    dataset = TrialDataset(local, nb_samp, mode, hop, reject_silent=reject_silent, augment=augment,
                           preprocess=preprocess, utterance_inputs=utterance_inputs)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_keep_as_is)
    started = time.perf_counter()
    parts: dict[str, list[np.ndarray]] = {}
    durations: dict[str, float] = {}
    errors: list[tuple[Trial, str]] = []
    queue: deque[list] = deque()  # [utt_id, windows, next window to score, utterance input]
    queued = n_windows = 0
    bar = tqdm(total=len(local), unit="file", desc=desc, disable=not progress or not distributed.is_main(), leave=False)

    def run_batch() -> None:
        nonlocal queued, n_windows
        chunks, extras, owners, finished = [], [], [], 0
        room = batch_size
        while queue and room:
            entry = queue[0]
            take = min(room, len(entry[1]) - entry[2])
            chunks.append(entry[1][entry[2]:entry[2] + take])
            if entry[3] is not None:
                extras.append(entry[3].expand(take, -1))
            owners.append((entry[0], take))
            entry[2] += take
            room -= take
            if entry[2] == len(entry[1]):
                queue.popleft()
                finished += 1
        outputs = forward(torch.cat(chunks), torch.cat(extras)) if extras else forward(torch.cat(chunks))
        offset = 0
        for utt_id, count in owners:
            parts[utt_id].append(outputs[offset:offset + count])
            offset += count
        bar.update(finished)
        queued -= len(outputs)
        n_windows += len(outputs)

    for item in loader:
        if item.windows is None:
            errors.append((item.trial, item.reason))
            bar.update(1)
            continue
        parts[item.trial.utt_id] = []
        durations[item.trial.utt_id] = item.duration_s
        queue.append([item.trial.utt_id, item.windows, 0, item.utterance_input])
        queued += len(item.windows)
        while queued >= batch_size:
            run_batch()
    while queued:
        run_batch()
    bar.close()
    outputs = {utt_id: np.concatenate(chunks) for utt_id, chunks in parts.items()}
    ranks = distributed.all_gather((outputs, durations, errors, n_windows))
    run = ScoringRun({utt: out for part in ranks for utt, out in part[0].items()},
                     {utt: seconds for part in ranks for utt, seconds in part[1].items()},
                     [error for part in ranks for error in part[2]], sum(part[3] for part in ranks),
                     time.perf_counter() - started)
    skips = skips if skips is not None else SkipReport(tqdm.write)
    skips.add([(str(trial.path), reason) for trial, reason in run.errors])
    return run


def scoring_forward(model: nn.Module, device: torch.device, precision: str | None = None,
                    compile_model: bool = False, threads: int | None = None, fuse: bool = True) -> tuple[Forward, str]:
    """The forward a countermeasure scores with, and its description: on CPU in fp32 without
    compile, its fused twin (``models.layers.fused``; with ``threads``, windows shared among that
    many Python threads, :func:`threaded_cpu_forward`); otherwise eager or compiled PyTorch under
    the autocast of ``precision``. ``main.py`` and ``inference.py`` both build theirs here, so a
    run's scores and a folder's are made the same way. ``fuse`` False: the plain eager model."""
    model.eval()
    precision = resolve_precision(precision, device)
    if fuse and device.type == "cpu" and precision == "fp32" and not compile_model:
        fused = optimise_for_cpu(model)
        if threads:
            return threaded_cpu_forward(fused, threads), f"PyTorch optimised on cpu, {threads} thread(s)"
        return torch_forward(fused, device, precision=precision), "PyTorch optimised on cpu"
    kind = "compiled" if compile_model else "eager"
    return torch_forward(model, device, precision=precision, compile_model=compile_model), \
        f"PyTorch {kind} on {device}, {precision}"


def score_trials(model: nn.Module, trials: list[Trial], config: dict, device: torch.device,
                 skips: SkipReport, desc: str, augment: Augment | None = None,
                 preprocess: Preprocess | None = None,
                 utterance_inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """A countermeasure's score of each trial (``emospoof.core.labels.cm_scores``: bona fide minus
    spoof logit), averaged over the windows in ``"full"`` eval mode (``eval_mode`` and ``eval_hop`` of the config),
    in the config's ``precision``, compiled with ``compile``. On CPU in fp32 the model runs as its
    optimised twin (``models.layers.fused``), as ``inference.py`` runs it."""
    model.eval()
    forward, _ = scoring_forward(model, device, config.get("precision"), str_to_bool(config.get("compile", False)))
    run = score_windows(trials, forward, config["model_config"].get("nb_samp", NB_SAMP),
                        config.get("eval_mode", "first"), config.get("eval_hop"), config["batch_size"],
                        config.get("num_workers", default_num_workers()), skips, desc=desc, augment=augment,
                        preprocess=preprocess, utterance_inputs=utterance_inputs)
    return {utt_id: float(cm_scores(outputs).mean()) for utt_id, outputs in run.outputs.items()}

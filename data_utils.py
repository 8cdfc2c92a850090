"""Audio loading, windows, the one dataset (``TrialDataset``) and the loaders built on it; the
protocol and corpus readers live in ``emospoof/corpora/``.

A file that cannot be used (missing, empty, corrupt, non-finite) never stops a run: the dataset
hands back a failure record, the collate function separates it from the batch, and the caller
reports it (``SkipReport``). An augmentation that fails does stop it, with its traceback.
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from emospoof.core.config import ConfigError
from emospoof.core.errors import InputError

SAMPLE_RATE = 16000
NB_SAMP = 64600  # ~4 s, the AASIST reference window
# Extensions of the containers libsndfile reads; a listed file it still cannot decode is reported,
# and files with other extensions (text, images, ...) are not audio and are ignored.
AUDIO_EXTENSIONS = {".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".voc"}


class AudioError(InputError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as float32 mono at ``sample_rate``: channels are averaged and other rates
    resampled (soxr, high quality), so no file is ever silently misread."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for corrupt input
        detail = str(err).splitlines()[0].replace(f"Error opening {str(path)!r}: ", "")
        raise AudioError(path, f"unreadable audio ({detail})") from None
    if audio.shape[0] == 0:
        raise AudioError(path, "empty audio (0 samples)")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if not np.isfinite(audio).all():
        raise AudioError(path, "audio contains NaN or infinite samples")
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(audio)


def tile_to_length(x: np.ndarray, length: int) -> np.ndarray:
    """First ``length`` samples, repeating a shorter clip end to end (reference ``pad``)."""
    if len(x) >= length:
        return x[:length]
    return np.tile(x, length // len(x) + 1)[:length]


def random_crop(x: np.ndarray, length: int) -> np.ndarray:
    """A random ``length``-sample window, or the tiled clip when it is not longer than that."""
    if len(x) <= length:
        return tile_to_length(x, length)
    start = np.random.randint(0, len(x) - length + 1)
    return x[start:start + length]


def sliding_windows(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Overlapping windows covering the whole clip, shape (n_windows, length).

    A clip no longer than one window gives one tiled window; the last window is aligned to the
    end of the clip so that no sample is left out.
    """
    if len(x) <= length:
        return tile_to_length(x, length)[None]
    return np.stack([x[s:s + length] for s in window_starts(len(x), length, hop)])


def window_starts(n_samples: int, length: int, hop: int) -> list[int]:
    """First sample of each window ``sliding_windows`` cuts from a clip of ``n_samples``."""
    if n_samples <= length:
        return [0]
    starts = list(range(0, n_samples - length + 1, hop))
    if starts[-1] != n_samples - length:
        starts.append(n_samples - length)
    return starts


@dataclass(frozen=True)
class Trial:
    """One utterance of a protocol. ``label`` is ``emospoof.core.labels.BONAFIDE_INDEX`` (1) for bona
    fide speech, ``SPOOF_INDEX`` (0) for a spoof; ``conditions``
    holds the corpus's other labels as (factor, value) pairs, e.g. ``(("codec", "alaw"),)``."""

    utt_id: str
    path: Path
    label: int
    attack: str = "-"
    speaker: str = "-"
    emotion: str = "-"
    conditions: tuple[tuple[str, str], ...] = ()


class LoadedTrial(NamedTuple):
    """What the dataset hands back for one trial: its windows, or the reason it cannot be used, and
    the trial's utterance-level input when the dataset has one (e.g. its emotion input)."""

    windows: torch.Tensor | None
    trial: Trial
    reason: str | None = None
    duration_s: float = 0.0
    utterance_input: torch.Tensor | None = None


@dataclass
class Batch:
    """Windows of the utterances that loaded; ``counts[i]`` windows belong to ``utt_ids[i]``;
    ``utterance_input`` holds each window's utterance-level input (one row per window) when the
    dataset has one."""

    x: torch.Tensor
    labels: torch.Tensor
    utt_ids: list[str]
    counts: list[int]
    failures: list[tuple[str, str]]
    utterance_input: torch.Tensor | None = None

    def pin_memory(self) -> "Batch":
        """Called by a loader with ``pin_memory``: page-locked tensors copy to a GPU asynchronously."""
        extra = None if self.utterance_input is None else self.utterance_input.pin_memory()
        return replace(self, x=self.x.pin_memory(), labels=self.labels.pin_memory(), utterance_input=extra)

    def to(self, device: torch.device) -> "Batch":
        """The batch's tensors on ``device``, copied without blocking the host (from pinned memory)."""
        extra = None if self.utterance_input is None else self.utterance_input.to(device, non_blocking=True)
        return replace(self, x=self.x.to(device, non_blocking=True), labels=self.labels.to(device, non_blocking=True),
                       utterance_input=extra)


def read_trial_audio(path: Path) -> tuple[np.ndarray | None, str | None]:
    """A trial's audio, or None and the reason it cannot be used: the one reader of every pass over
    trials (scoring, training, utterance-level inputs), so a bad file is skipped the same way in
    each and one bad file never stops a run."""
    try:
        if path.is_file() and path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        return load_audio(path), None
    except AudioError as err:
        return None, err.reason
    except Exception as err:  # e.g. a resampler failure on a malformed file
        return None, f"cannot be read ({type(err).__name__}: {err})"


class TrialDataset(Dataset):
    """Audio of ``trials`` cut for the model; the one dataset of training, evaluation and scoring.

    mode ``"train"``: one random ``nb_samp`` crop; ``"first"``: the first ``nb_samp`` samples
    (reference evaluation); ``"full"``: overlapping windows over the whole utterance, ``hop``
    samples apart. A file that cannot be used comes back with its reason instead of windows;
    ``reject_silent`` also refuses all-zero audio (scoring it would say nothing about the file).
    An exception raised by the augmentation is not caught: it stops the run.

    ``preprocess(audio)`` (``emospoof.augment.preprocess``) conditions every whole recording as it
    is read, before anything else, the same way in every mode. ``utterance_inputs`` (utterance id
    -> vector, e.g. the emotion input computed once per file on the whole utterance) travel with
    every crop and window of their file; a trial without one cannot be used.

    ``augment(audio, rng)`` (``emospoof.augment.pipeline.Augmentation``) transforms the training crop, or
    in the other modes the whole utterance before it is cut. An augmentation with
    ``before_crop`` and ``after_crop`` methods has steps that change the duration (prosody,
    silence): in training those run on the whole utterance before the random crop, so that the
    crop keeps ``nb_samp`` samples and the changes reach it as they would in a real recording,
    and the others on the crop. Its NumPy generator is seeded with
    (``seed``, epoch, index of the trial): the draws do not depend on the number of loader
    workers or on which worker loads a file, differ between epochs (:meth:`set_epoch`), and a
    resumed run repeats those of the uninterrupted one.
    """

    def __init__(self, trials: list[Trial], nb_samp: int = NB_SAMP, mode: str = "first",
                 hop: int | None = None, reject_silent: bool = False,
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 seed: int = 0, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                 utterance_inputs: Mapping[str, np.ndarray] | None = None) -> None:
        if mode not in ("train", "first", "full"):
            raise ValueError(f"unknown dataset mode {mode!r}")
        self.trials = trials
        self.nb_samp = nb_samp
        self.mode = mode
        self.hop = hop or nb_samp // 2
        self.reject_silent = reject_silent
        self.augment = augment
        self.preprocess = preprocess
        self.utterance_inputs = utterance_inputs
        self.seed = seed % 2**64
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of ``epoch`` (``SeededItems`` sets it in each loader worker's copy)."""
        self.epoch = epoch

    def augmented(self, audio: np.ndarray, index: int) -> np.ndarray:
        """The whole utterance, or in training the random crop, augmented; one generator per
        item serves the steps before the crop and those after it."""
        crop = self.mode == "train"
        if self.augment is None:
            return random_crop(audio, self.nb_samp) if crop else audio
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if not crop:
            return self.augment(audio, rng)
        if hasattr(self.augment, "before_crop"):
            return self.augment.after_crop(random_crop(self.augment.before_crop(audio, rng), self.nb_samp), rng)
        return self.augment(random_crop(audio, self.nb_samp), rng)

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, index: int) -> LoadedTrial:
        trial = self.trials[index]
        extra = None
        if self.utterance_inputs is not None:
            if trial.utt_id not in self.utterance_inputs:
                return LoadedTrial(None, trial, "no utterance-level input (its audio could not be read when those "
                                                "inputs were computed)")
            extra = torch.as_tensor(self.utterance_inputs[trial.utt_id], dtype=torch.float32)
        audio, reason = read_trial_audio(trial.path)
        if audio is None:
            return LoadedTrial(None, trial, reason)
        duration = len(audio) / SAMPLE_RATE
        if self.preprocess is not None:
            audio = self.preprocess(audio)
        if self.reject_silent and not np.any(audio):
            return LoadedTrial(None, trial, "silent audio (every sample is zero)", duration)
        # Not caught: a failing augmentation is a bug or a broken setup, not a bad file, and
        # skipping every file it fails on would train on a silently shrunken set.
        audio = self.augmented(audio, index)
        if self.mode == "full":
            windows = sliding_windows(audio, self.nb_samp, self.hop)
        else:  # the training crop already has nb_samp samples
            windows = tile_to_length(audio, self.nb_samp)[None]
        return LoadedTrial(torch.from_numpy(np.ascontiguousarray(windows)), trial, None, duration, extra)


def collate_trials(items: Iterable[LoadedTrial]) -> Batch:
    loaded = [item for item in items if item.windows is not None]
    failures = [(str(item.trial.path), item.reason) for item in items if item.windows is None]
    extra = None
    if loaded and loaded[0].utterance_input is not None:
        extra = torch.cat([item.utterance_input.expand(len(item.windows), -1) for item in loaded])
    return Batch(
        x=torch.cat([item.windows for item in loaded]) if loaded else torch.empty(0, 0),
        labels=torch.tensor([item.trial.label for item in loaded], dtype=torch.long),
        utt_ids=[item.trial.utt_id for item in loaded],
        counts=[len(item.windows) for item in loaded],
        failures=failures,
        utterance_input=extra,
    )


def default_num_workers() -> int:
    """Half the cores, at most 8, shared among the processes torchrun starts on this machine:
    decoding keeps up with the model without starving it of threads."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 2) // 2 // processes))


@contextmanager
def seeded_random_state(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's global generators seeded with ``seed`` inside the block and
    put back as they were after it, so an item's random draws depend on the item alone."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)  # the CPU generator only: a GPU's streams are left alone
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class EpochSampler(Sampler):
    """The trials of one epoch for this process, each as ``(index, epoch)``.

    When shuffling, the order is a permutation drawn from ``seed + epoch`` (``set_epoch``), padded
    by repeating its start to a multiple of the number of processes and dealt round-robin to them,
    as torch's DistributedSampler does; so the batches of N processes together hold exactly the
    trials of one process's N-times-larger batch. The epoch travels with the index because loader
    workers that persist across epochs never see the sampler's state.
    """

    def __init__(self, n_items: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n_items, self.shuffle, self.seed = n_items, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n_items // self.world_size)

    def epoch_order(self) -> list[int]:
        """The trials of this epoch, in order, before they are dealt to the processes."""
        if self.shuffle:
            return torch.randperm(self.n_items, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        return list(range(self.n_items))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order()
        total = len(self) * self.world_size
        order = (order * -(-total // max(1, len(order))))[:total]
        return iter([(index, self.epoch) for index in order[self.rank:total:self.world_size]])


class GroupBalancedSampler(EpochSampler):
    """Like :class:`EpochSampler`, but each epoch draws every group equally often: the epoch's
    ``n_items`` draws are split evenly among the groups (the remainder to groups chosen at random),
    and a group's members are drawn as a random permutation, repeated for a small group and cut
    short for a large one, so within a group every member is drawn as evenly as possible. Drawn
    from ``seed + epoch`` alone, so every process and a resumed run draw the same."""

    def __init__(self, groups: list[int], seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(len(groups), True, seed, rank, world_size)
        self.members = [np.flatnonzero(np.asarray(groups) == g) for g in sorted(set(groups))]

    def epoch_order(self) -> list[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        quota = np.full(len(self.members), self.n_items // len(self.members))
        quota[rng.permutation(len(self.members))[:self.n_items % len(self.members)]] += 1
        drawn = []
        for members, count in zip(self.members, quota):
            cycles = -(-count // len(members))
            drawn.append(np.concatenate([rng.permutation(members) for _ in range(cycles)])[:count])
        return rng.permutation(np.concatenate(drawn)).tolist()


class SeededItems(Dataset):
    """``dataset[index]`` with every random draw (crop, augmentation) seeded from ``(seed, epoch,
    index)``: the same item gets the same crop whichever process, worker or batch loads it, and a
    resumed run loads exactly what an uninterrupted one would."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        if hasattr(self.dataset, "set_epoch"):  # the worker's copy learns the epoch with the index
            self.dataset.set_epoch(epoch)
        with seeded_random_state(int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])):
            return self.dataset[index]


def _seed_worker(worker_id: int, rank: int = 0) -> None:
    """Each loader worker of each rank gets its own streams (torch's worker seed is the same on
    every rank, whose loaders are seeded alike)."""
    seed = int(np.random.SeedSequence([torch.initial_seed() % 2**32, rank]).generate_state(1)[0])
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def make_loader(dataset: TrialDataset, batch_size: int, shuffle: bool, num_workers: int, seed: int = 0,
                rank: int = 0, world_size: int = 1, generator: torch.Generator | None = None,
                balance_groups: list[int] | None = None) -> DataLoader:
    """Batches of whole utterances (``collate_trials``) for training: this rank's share of each
    epoch (:class:`EpochSampler`, or :class:`GroupBalancedSampler` over ``balance_groups``, one
    group index per trial; the loop calls ``set_epoch``), random draws seeded per item
    (:class:`SeededItems`), workers that persist across epochs and prefetch, pinned memory on
    GPU machines. When shuffling, the last incomplete batch is dropped if there is more than one."""
    sampler = (GroupBalancedSampler(balance_groups, seed, rank, world_size) if balance_groups is not None
               else EpochSampler(len(dataset), shuffle, seed, rank, world_size))
    workers = {"persistent_workers": True, "prefetch_factor": 4} if num_workers > 0 else {}
    return DataLoader(
        SeededItems(dataset, seed),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=shuffle and len(sampler) > batch_size,
        num_workers=num_workers,
        collate_fn=collate_trials,
        worker_init_fn=partial(_seed_worker, rank=rank),
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        **workers,
    )


class SkipReport:
    """Files that could not be used: each is warned about once and counted."""

    def __init__(self, warn: Callable[[str], None] = print) -> None:
        self.reasons: dict[str, str] = {}
        self.warn = warn

    def add(self, failures: list[tuple[str, str]]) -> None:
        for path, reason in failures:
            if path not in self.reasons:
                self.reasons[path] = reason
                self.warn(f"warning: skipped {path}: {reason}")

    def __len__(self) -> int:
        return len(self.reasons)

    def write(self, path: Path) -> None:
        with open(path, "w") as handle:
            handle.write("path\treason\n")
            for file, reason in sorted(self.reasons.items()):
                handle.write(f"{file}\t{reason}\n")


def audio_files_under(folder: Path) -> list[Path]:
    """Audio files under ``folder`` at any depth, recognised by extension (``AUDIO_EXTENSIONS``), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def find_audio_files(folder: Path, option: str = "--test_dir") -> list[Path]:
    """Audio files under ``folder`` (recursively, by extension), relative to it and sorted;
    ``option`` names the command-line option in the error."""
    if not folder.exists():
        raise ConfigError(f"{option}: folder not found: {folder}")
    if not folder.is_dir():
        raise ConfigError(f"{option}: not a folder: {folder}")
    files = [p.relative_to(folder) for p in audio_files_under(folder)]
    if not files:
        raise ConfigError(f"{option}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under {folder}")
    return files

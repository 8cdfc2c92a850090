"""Audio loading, windows, the one dataset (``TrialDataset``) and the loaders built on it; the
protocol and corpus readers live in ``corpora/``.

A file that cannot be used (missing, empty, corrupt, non-finite) never stops a run: the dataset
hands back a failure record, the collate function separates it from the batch, and the caller
reports it (``SkipReport``).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import DataLoader, Dataset

from config import ConfigError

SAMPLE_RATE = 16000
NB_SAMP = 64600  # ~4 s, the AASIST reference window
# Extensions of the containers libsndfile reads; a listed file it still cannot decode is reported,
# and files with other extensions (text, images, ...) are not audio and are ignored.
AUDIO_EXTENSIONS = {".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".voc"}


class AudioError(Exception):
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
    """One utterance of a protocol. ``label`` is 1 for bona fide, 0 for spoof; ``conditions``
    holds the corpus's other labels as (factor, value) pairs, e.g. ``(("codec", "alaw"),)``."""

    utt_id: str
    path: Path
    label: int
    attack: str = "-"
    speaker: str = "-"
    emotion: str = "-"
    conditions: tuple[tuple[str, str], ...] = ()


class LoadedTrial(NamedTuple):
    """What the dataset hands back for one trial: its windows, or the reason it cannot be used."""

    windows: torch.Tensor | None
    trial: Trial
    reason: str | None = None
    duration_s: float = 0.0


@dataclass
class Batch:
    """Windows of the utterances that loaded; ``counts[i]`` windows belong to ``utt_ids[i]``."""

    x: torch.Tensor
    labels: torch.Tensor
    utt_ids: list[str]
    counts: list[int]
    failures: list[tuple[str, str]]


class TrialDataset(Dataset):
    """Audio of ``trials`` cut for the model; the one dataset of training, evaluation and scoring.

    mode ``"train"``: one random ``nb_samp`` crop; ``"first"``: the first ``nb_samp`` samples
    (reference evaluation); ``"full"``: overlapping windows over the whole utterance, ``hop``
    samples apart. A file that cannot be used comes back with its reason instead of windows;
    ``reject_silent`` also refuses all-zero audio (scoring it would say nothing about the file).

    ``augment(audio, rng)`` (``augment.pipeline.Augmentation``) transforms the training crop, or
    in the other modes the whole utterance before it is cut. Its NumPy generator is seeded with
    (``seed``, epoch, index of the trial): the draws do not depend on the number of loader
    workers or on which worker loads a file, differ between epochs (:meth:`set_epoch`), and a
    resumed run repeats those of the uninterrupted one.
    """

    def __init__(self, trials: list[Trial], nb_samp: int = NB_SAMP, mode: str = "first",
                 hop: int | None = None, reject_silent: bool = False,
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 seed: int = 0) -> None:
        if mode not in ("train", "first", "full"):
            raise ValueError(f"unknown dataset mode {mode!r}")
        self.trials = trials
        self.nb_samp = nb_samp
        self.mode = mode
        self.hop = hop or nb_samp // 2
        self.reject_silent = reject_silent
        self.augment = augment
        self.seed = seed % 2**64
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of ``epoch`` (loader workers copy the dataset when an epoch starts)."""
        self.epoch = epoch

    def augmented(self, audio: np.ndarray, index: int) -> np.ndarray:
        if self.augment is None:
            return audio
        return self.augment(audio, np.random.default_rng([self.seed, self.epoch, index]))

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, index: int) -> LoadedTrial:
        trial = self.trials[index]
        try:
            if trial.path.is_file() and trial.path.stat().st_size == 0:
                return LoadedTrial(None, trial, "empty file (0 bytes)")
            audio = load_audio(trial.path)
        except AudioError as err:
            return LoadedTrial(None, trial, err.reason)
        except Exception as err:  # e.g. a resampler failure: one bad file must not stop the run
            return LoadedTrial(None, trial, f"cannot be read ({type(err).__name__}: {err})")
        duration = len(audio) / SAMPLE_RATE
        if self.reject_silent and not np.any(audio):
            return LoadedTrial(None, trial, "silent audio (every sample is zero)", duration)
        if self.mode == "train":
            audio = random_crop(audio, self.nb_samp)
        try:
            audio = self.augmented(audio, index)
        except Exception as err:  # e.g. a codec that fails on this clip: one file must not stop the run
            return LoadedTrial(None, trial, f"augmentation failed ({type(err).__name__}: {err})", duration)
        if self.mode == "full":
            windows = sliding_windows(audio, self.nb_samp, self.hop)
        else:  # the training crop already has nb_samp samples
            windows = tile_to_length(audio, self.nb_samp)[None]
        return LoadedTrial(torch.from_numpy(np.ascontiguousarray(windows)), trial, None, duration)


def collate_trials(items: Iterable[LoadedTrial]) -> Batch:
    loaded = [item for item in items if item.windows is not None]
    failures = [(str(item.trial.path), item.reason) for item in items if item.windows is None]
    return Batch(
        x=torch.cat([item.windows for item in loaded]) if loaded else torch.empty(0, 0),
        labels=torch.tensor([item.trial.label for item in loaded], dtype=torch.long),
        utt_ids=[item.trial.utt_id for item in loaded],
        counts=[len(item.windows) for item in loaded],
        failures=failures,
    )


def default_num_workers() -> int:
    """Half the cores, at most 8: decoding keeps up with the model without starving it of threads."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: TrialDataset, batch_size: int, shuffle: bool, num_workers: int,
                generator: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
    """Batches of whole utterances (``collate_trials``), each worker seeded from the loader's RNG."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_trials,
        worker_init_fn=_seed_worker,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
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


# The five emotions of the emotional TTS set, the class names of the SER models' "tts5" mapping;
# the emotional set's folders hold .flac or .wav files.
EMOTIONS = ("angry", "happy", "neutral", "sad", "surprised")
AUDIO_SUFFIXES = (".flac", ".wav")


def find_audio_files(folder: Path, option: str = "--test_dir") -> list[Path]:
    """Audio files under ``folder`` (recursively, by extension), relative to it and sorted;
    ``option`` names the command-line option in the error."""
    if not folder.exists():
        raise ConfigError(f"{option}: folder not found: {folder}")
    if not folder.is_dir():
        raise ConfigError(f"{option}: not a folder: {folder}")
    files = sorted(p.relative_to(folder) for p in folder.rglob("*")
                   if p.suffix.lower() in AUDIO_EXTENSIONS and not p.is_dir())
    if not files:
        raise ConfigError(f"{option}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under {folder}")
    return files

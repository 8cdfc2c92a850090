"""Deterministic preprocessing of whole recordings, the same in training, evaluation and
``inference.py``: trim leading and trailing silence with an energy voice-activity detector, then
set the loudness.

Why: the devkit's files were prepared that way (its README: 25 ms frames, a threshold 35 dB under
the 95th-percentile frame level, 80 ms margins, 5 ms fades; RMS at -26 dBFS with a soft limiter),
and a detector trained on them learns that untrimmed, quieter or louder genuine speech is not
what bona fide looks like -- the silence shortcut of ASVspoof 2019 (Müller et al., "Speech is
Silver, Silence is Golden: What do ASVspoof-trained Models Really Learn?", ASVspoof 2021
workshop). ``trim_normalise`` brings any recording to that form before it is scored.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from data_utils import SAMPLE_RATE
from emospoof.core.config import ConfigError

PREPROCESSING = ("none", "trim_normalise")
FRAME_S, HOP_S = 0.025, 0.010
THRESHOLD_BELOW_P95_DB = 35.0
MARGIN_S = 0.080
FADE_S = 0.005
TARGET_DBFS = -26.0
LIMIT_FROM = 0.8  # the soft limiter leaves samples below this magnitude untouched


def frame_levels_db(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Level of each 25 ms frame (10 ms hop) in dB relative to full scale."""
    frame, hop = int(FRAME_S * sample_rate), int(HOP_S * sample_rate)
    if len(audio) < frame:
        return np.array([10 * np.log10(np.mean(audio.astype(np.float64) ** 2) + 1e-12)])
    starts = np.arange(0, len(audio) - frame + 1, hop)
    power = np.array([np.mean(audio[s:s + frame].astype(np.float64) ** 2) for s in starts])
    return 10 * np.log10(power + 1e-12)


def trim_silence(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The recording from its first to its last active frame (level within 35 dB of the
    95th-percentile frame level), 80 ms margins kept, 5 ms fades at the cuts; a recording with no
    active frame comes back as it was."""
    levels = frame_levels_db(audio, sample_rate)
    active = np.flatnonzero(levels > np.percentile(levels, 95) - THRESHOLD_BELOW_P95_DB)
    if active.size == 0:
        return audio
    hop, frame, margin = int(HOP_S * sample_rate), int(FRAME_S * sample_rate), int(MARGIN_S * sample_rate)
    start = max(0, active[0] * hop - margin)
    end = min(len(audio), active[-1] * hop + frame + margin)
    trimmed = audio[start:end].astype(np.float32, copy=True)
    fade = min(int(FADE_S * sample_rate), len(trimmed) // 2)
    if fade and start > 0:
        trimmed[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
    if fade and end < len(audio):
        trimmed[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return trimmed


def normalise_loudness(audio: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """RMS set to ``target_dbfs``; samples above 0.8 of full scale are bent smoothly towards 1
    (a tanh knee) instead of clipping. Silence stays silence."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if rms == 0:
        return audio
    scaled = audio.astype(np.float64) * 10 ** ((target_dbfs - 20 * np.log10(rms)) / 20)
    magnitude = np.abs(scaled)
    over = magnitude > LIMIT_FROM
    headroom = 1 - LIMIT_FROM
    magnitude[over] = LIMIT_FROM + headroom * np.tanh((magnitude[over] - LIMIT_FROM) / headroom)
    return (np.sign(scaled) * magnitude).astype(np.float32)


def trim_normalise(audio: np.ndarray) -> np.ndarray:
    """Silence trimmed, then the loudness set (16 kHz audio)."""
    return normalise_loudness(trim_silence(audio))


def build_preprocess(name: str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The preprocessing called ``name`` (None or ``none``: nothing)."""
    check_preprocess(name, "preprocess")
    return trim_normalise if name == "trim_normalise" else None


def check_preprocess(name: object, where: str) -> None:
    if name is not None and name not in PREPROCESSING:
        raise ConfigError(f"config key '{where}': expected one of {', '.join(PREPROCESSING)}, got {name!r}")

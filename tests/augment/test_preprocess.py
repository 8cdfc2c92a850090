"""Preprocessing of whole recordings (trim_normalise): silence trimmed to the speech with the
documented margins, loudness set, the limiter, and the reader applying it to every set."""
from __future__ import annotations

import numpy as np
import pytest

from emospoof.augment.preprocess import (FADE_S, MARGIN_S, TARGET_DBFS, build_preprocess, normalise_loudness,
                                         trim_normalise, trim_silence)
from emospoof.core.config import ConfigError

RATE = 16000


def padded_tone(lead_s: float, tone_s: float, tail_s: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(tone_s * RATE)) / RATE
    tone = level * np.sin(2 * np.pi * 220 * t)
    silence = lambda s: 1e-5 * rng.standard_normal(int(s * RATE))  # noqa: E731 (a room's noise floor)
    return np.concatenate([silence(lead_s), tone, silence(tail_s)]).astype(np.float32)


def test_trimming_keeps_the_speech_and_the_margins():
    audio = padded_tone(1.0, 0.8, 1.5)
    trimmed = trim_silence(audio)
    expected = 0.8 + 2 * MARGIN_S
    assert abs(len(trimmed) / RATE - expected) < 0.04  # within one frame and one hop (frames straddle the edges)
    assert np.max(np.abs(trimmed)) == pytest.approx(0.1, rel=0.01)  # the tone is all there
    fade = int(FADE_S * RATE)
    assert abs(trimmed[0]) < 1e-6 and abs(trimmed[-1]) < 1e-6 and len(trimmed) > 2 * fade


def test_already_trimmed_and_silent_audio_are_left_alone():
    tone = padded_tone(0.0, 0.8, 0.0)
    assert len(trim_silence(tone)) == len(tone)
    silence = np.zeros(8000, np.float32)
    assert np.array_equal(trim_silence(silence), silence)
    assert np.array_equal(normalise_loudness(silence), silence)


def test_loudness_is_set_and_peaks_are_bent_not_clipped():
    quiet = padded_tone(0.0, 1.0, 0.0, level=0.01)
    out = normalise_loudness(quiet)
    assert 20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2))) == pytest.approx(TARGET_DBFS, abs=0.01)
    spiky = np.zeros(16000, np.float32)
    spiky[::400] = 1.0  # RMS -26 dBFS puts these peaks far above full scale
    limited = normalise_loudness(spiky)
    assert np.max(np.abs(limited)) < 1.0 and np.max(np.abs(limited)) > 0.8


def test_trim_normalise_makes_differently_recorded_copies_alike():
    """The same speech with more silence around it and 12 dB quieter comes out nearly the same."""
    a = trim_normalise(padded_tone(0.2, 0.8, 0.2))
    b = trim_normalise(padded_tone(1.2, 0.8, 0.9, level=0.025, seed=1))
    assert abs(len(a) - len(b)) <= 0.02 * RATE
    n = min(len(a), len(b))
    assert np.sqrt(np.mean((a[:n] - b[:n]) ** 2)) < 0.1 * np.sqrt(np.mean(a ** 2))


def test_the_switch():
    assert build_preprocess(None) is None and build_preprocess("none") is None
    assert build_preprocess("trim_normalise") is trim_normalise
    with pytest.raises(ConfigError, match="preprocess.*trim_normalise"):
        build_preprocess("vad")

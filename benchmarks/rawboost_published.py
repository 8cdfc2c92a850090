"""A direct transcription of the published RawBoost definition (Tak et al., ICASSP 2022, and the
authors' RawBoost.py in TakHemlata/SSL_Anti-spoofing), written here from that definition for two
uses only: ``bench_augment.py`` times it against ``emospoof.augment.rawboost``, and ``tests/test_augment.py``
checks that the fast implementation gives the same outputs and the same statistics.

It computes as the published code does: one ``scipy.signal.firwin`` design per band, bands
cascaded by ``numpy.convolve``, the gain normalised with ``scipy.signal.freqz`` and every filter
applied sample by sample with ``scipy.signal.lfilter``. The distortion functions take their random
values as arguments (the same ``NotchDraws`` / ``ImpulseDraws`` the fast code draws), and
:func:`published_rawboost` draws them in the published order, one value at a time.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emospoof.augment.rawboost import SERIES, ImpulseDraws, NotchDraws, RawBoostParams, normalise


def published_notch(centres, widths, taps, gain_db: float, sample_rate: int) -> np.ndarray:
    """One notch filter: a band-stop ``firwin`` per band, convolved together, scaled to the gain
    over the peak of ``freqz``."""
    b = np.ones(1)
    for centre, width, n_taps in zip(centres, widths, taps):
        low, high = centre - width / 2, centre + width / 2
        low = 1e-3 if low <= 0 else low
        high = sample_rate / 2 - 1e-3 if high >= sample_rate / 2 else high
        b = np.convolve(signal.firwin(int(n_taps), [low, high], window="hamming", fs=sample_rate), b)
    _, response = signal.freqz(b, 1, fs=sample_rate)
    return 10 ** (gain_db / 20) * b / np.abs(response).max()


def published_filter(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``lfilter`` over the signal padded with len(b) + 1 zeros, cut from half that padding on."""
    pad = len(b) + 1
    y = signal.lfilter(b, 1, np.pad(x, (0, pad)))
    return y[pad // 2:len(y) - pad // 2]


def published_convolutive(x: np.ndarray, draws: NotchDraws, sample_rate: int) -> np.ndarray:
    y = np.zeros(len(x))
    for i in range(len(draws.gain_db)):
        b = published_notch(draws.centre_hz[i], draws.width_hz[i], draws.taps[i], draws.gain_db[i], sample_rate)
        y = y + published_filter(x ** (i + 1), b)
    return normalise(y - np.mean(y))


def published_impulsive(x: np.ndarray, draws: ImpulseDraws, gain: float) -> np.ndarray:
    y = x.copy()
    y[draws.positions] = x[draws.positions] + gain * x[draws.positions] * draws.factors
    return normalise(y)


def published_coloured(x: np.ndarray, noise: np.ndarray, draws: NotchDraws, snr_db: float,
                       sample_rate: int) -> np.ndarray:
    b = published_notch(draws.centre_hz[0], draws.width_hz[0], draws.taps[0], draws.gain_db[0], sample_rate)
    coloured = normalise(published_filter(noise, b), always=True)
    return x + coloured / np.linalg.norm(coloured) * np.linalg.norm(x) / 10.0 ** (0.05 * snr_db)


def published_draw_notch(rng: np.random.Generator, params: RawBoostParams, gain: tuple[float, float]) -> NotchDraws:
    """Per band: centre, width and length, then the gain, one value at a time as published."""
    centres, widths, taps = [], [], []
    for _ in range(params.n_bands):
        centres.append(rng.uniform(*params.centre_hz))
        widths.append(rng.uniform(*params.bandwidth_hz))
        n_taps = int(rng.uniform(*params.coeffs))
        taps.append(n_taps + 1 if n_taps % 2 == 0 else n_taps)
    return NotchDraws(np.array([centres]), np.array([widths]), np.array([taps]),
                      np.array([gain[0] + (gain[1] - gain[0]) * rng.random()]))


def published_rawboost(x: np.ndarray, algo: int, rng: np.random.Generator,
                       params: RawBoostParams = RawBoostParams(), sample_rate: int = 16000) -> np.ndarray:
    """RawBoost algorithm ``algo`` as published, every random value drawn in the published order."""
    (g_min, g_max), (b_min, b_max) = params.gain_db, params.nonlinear_bias_db

    def convolutive(y):
        parts = [published_draw_notch(rng, params, (g_min, g_max) if i == 0 else (g_min - b_min, g_max - b_max))
                 for i in range(params.n_filters)]
        draws = NotchDraws(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                             ("centre_hz", "width_hz", "taps", "gain_db")))
        return published_convolutive(y, draws, sample_rate)

    def impulsive(y):
        count = int(len(y) * (rng.uniform(0, params.impulse_percent) / 100))
        positions = rng.permutation(len(y))[:count]
        factors = (2 * rng.random(count) - 1) * (2 * rng.random(count) - 1)
        return published_impulsive(y, ImpulseDraws(positions, factors), params.impulse_gain)

    def coloured(y):
        noise = rng.normal(0, 1, len(y))
        draws = published_draw_notch(rng, params, params.gain_db)
        return published_coloured(y, noise, draws, rng.uniform(*params.snr_db), sample_rate)

    x = np.asarray(x, dtype=np.float64)
    if algo == 8:
        return normalise(convolutive(x) + impulsive(x))
    for step in SERIES[algo]:
        x = (convolutive, impulsive, coloured)[step - 1](x)
    return x

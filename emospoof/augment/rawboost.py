"""RawBoost data boosting (Tak, Kamble, Patino, Todisco, Evans, "RawBoost: A Raw Data Boosting
and Augmentation Method applied to Automatic Speaker Verification Anti-Spoofing", ICASSP 2022).

Three distortions and their combinations (``algo`` 1-8): (1) linear and non-linear convolutive
noise, (2) impulsive signal-dependent noise, (3) stationary signal-independent coloured noise,
(4) 1+2+3 in series, (5) 1+2, (6) 1+3, (7) 2+3, (8) 1 and 2 in parallel. The defaults of
:class:`RawBoostParams` are the published ones, and every random value is drawn from the same
distribution as in the published definition (the authors' code), including its quirks: the
non-linear gains are uniform between ``gain - bias`` bounds taken crosswise, filter lengths are
the truncated uniform draw made odd, and filtered signals are read one sample after the filter's
centre.

What differs is only how it is computed, so that it never limits GPU training: all notch
filters of a draw are designed at once (windowed sinc on a common centred grid), cascaded by
multiplying their spectra, and applied by FFT convolution (the published code filters sample by
sample with ``lfilter``). The random draws are separate from the signal processing
(``draw_*`` / the distortion functions), so tests can feed the same draws to a transcription of
the published definition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import torch

# The distortions each algorithm applies in series (algorithm 8 runs 1 and 2 in parallel).
SERIES = {1: (1,), 2: (2,), 3: (3,), 4: (1, 2, 3), 5: (1, 2), 6: (1, 3), 7: (2, 3)}
FREQZ_POINTS = 512  # the published gain normalisation reads |H| at freqz's default 512 frequencies


@dataclass(frozen=True)
class RawBoostParams:
    """RawBoost's parameters; the defaults are the published ones (the reference code's argument
    names in brackets)."""

    n_filters: int = 5  # order of the (non-)linearity: x, x^2, ... x^N_f  [N_f]
    n_bands: int = 5  # notch bands per filter  [nBands]
    centre_hz: tuple[float, float] = (20.0, 8000.0)  # notch centre frequency  [minF, maxF]
    bandwidth_hz: tuple[float, float] = (100.0, 1000.0)  # notch width  [minBW, maxBW]
    coeffs: tuple[int, int] = (10, 100)  # FIR length of each band  [minCoeff, maxCoeff]
    gain_db: tuple[float, float] = (0.0, 0.0)  # gain of the linear component  [minG, maxG]
    nonlinear_bias_db: tuple[float, float] = (5.0, 20.0)  # linear minus non-linear gain  [min/maxBiasLinNonLin]
    impulse_percent: float = 10.0  # at most this percentage of samples get an impulse  [P]
    impulse_gain: float = 2.0  # impulse gain  [g_sd]
    snr_db: tuple[float, float] = (10.0, 40.0)  # SNR of the coloured noise  [SNRmin, SNRmax]


@dataclass
class NotchDraws:
    """The random values of a bank of notch filters: one row per filter, one column per band."""

    centre_hz: np.ndarray
    width_hz: np.ndarray
    taps: np.ndarray  # odd FIR lengths
    gain_db: np.ndarray  # one per filter


@dataclass
class ImpulseDraws:
    """Where the impulses of algorithm 2 fall and the factor (a product of two uniforms) of each."""

    positions: np.ndarray
    factors: np.ndarray


def normalise(x: np.ndarray, always: bool = False) -> np.ndarray:
    """Divide by the peak when it exceeds 1 (or ``always``), as the published ``normWav``."""
    peak = max(x.max(), -x.min()) if x.size else 0.0
    return x / peak if peak > 0 and (always or peak > 1) else x


def draw_notches(rng: np.random.Generator, params: RawBoostParams, gains: list[tuple[float, float]]) -> NotchDraws:
    """Draws of ``len(gains)`` filters, filter ``i`` with a gain uniform between ``gains[i]``."""
    shape = (len(gains), params.n_bands)
    taps = np.floor(rng.uniform(*params.coeffs, size=shape)).astype(np.int64)
    low, high = np.array(gains, dtype=np.float64).T
    return NotchDraws(
        centre_hz=rng.uniform(*params.centre_hz, size=shape),
        width_hz=rng.uniform(*params.bandwidth_hz, size=shape),
        taps=taps + (taps % 2 == 0),  # band-stop FIR filters need an odd length
        gain_db=low + (high - low) * rng.random(len(gains)),
    )


def notch_filters(draws: NotchDraws, sample_rate: int) -> np.ndarray:
    """Impulse responses (filters, taps) of the drawn notch filters, all centred on the middle tap.

    Each band is a Hamming-windowed band-stop FIR of its own odd length (the windowed-sinc design
    of ``scipy.signal.firwin``, DC gain 1), written on a grid as long as the longest band so that
    all are designed in one vectorised step; the bands of a filter are cascaded by multiplying
    their spectra, and the cascade is scaled to the drawn gain over its peak magnitude at the
    published 512 frequencies.
    """
    nyquist = sample_rate / 2
    low = draws.centre_hz - draws.width_hz / 2
    high = draws.centre_hz + draws.width_hz / 2
    low = np.where(low <= 0, 1e-3, low)[..., None] / nyquist
    high = np.where(high >= nyquist, nyquist - 1e-3, high)[..., None] / nyquist
    half = int(draws.taps.max()) // 2
    m = np.arange(-half, half + 1, dtype=np.float64)
    taps = draws.taps[..., None]
    window = 0.54 + 0.46 * np.cos(2 * np.pi * m / np.maximum(taps - 1, 1))
    # The ideal band-stop low*sinc(low*m) + sinc(m) - high*sinc(high*m), on integer m where
    # sinc(m) is 0 except at the centre: two sines instead of three sincs.
    with np.errstate(divide="ignore", invalid="ignore"):
        band_stop = (np.sin(np.pi * low * m) - np.sin(np.pi * high * m)) / (np.pi * m)
    band_stop[..., half] = (1 + low - high)[..., 0]
    bands = np.where(np.abs(m) <= (taps - 1) // 2, band_stop * window, 0.0)
    bands /= bands.sum(axis=-1, keepdims=True)

    length = draws.taps.shape[-1] * 2 * half + 1
    n_fft = 2 * FREQZ_POINTS * -(-length // (2 * FREQZ_POINTS))
    cascade = scipy.fft.rfft(bands, n_fft).prod(axis=-2)
    peak = np.abs(cascade[:, :n_fft // 2:n_fft // (2 * FREQZ_POINTS)]).max(axis=-1)
    filters = scipy.fft.irfft(cascade, n_fft)[:, :length]
    return filters * (10 ** (draws.gain_db / 20) / peak)[:, None]


def filter_powers(x: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """``sum_i filters[i] * x^(i+1)``, as long as ``x``, by overlap-save FFT convolution in
    float32. Output sample ``n`` is the centred (zero-phase) output at ``n + 1``, the alignment of
    the published ``filterFIR``.

    Blocks of at least eight filter lengths are processed one at a time, the powers of ``x``
    formed per block: every array stays small, so no call allocates (and page-faults in) fresh
    memory; that halved the cost on the loaded 2-core machine (measured). scipy's FFT runs on the
    calling thread, so loader workers never wait on each other.
    """
    n, length = len(x), filters.shape[-1]
    block = 1 << max(8 * length - 1, 1023).bit_length()
    hop = block - length + 1
    lead = length - 2 - (length - 1) // 2  # zeros before x[0] in the first block
    spectra = scipy.fft.rfft(filters.astype(np.float32), block)
    chunk = np.empty((len(filters), block), dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, hop):  # a loop over blocks (18 for a 4-s clip and the default filters)
        first = start - lead
        chunk[0] = 0
        chunk[0, max(-first, 0):min(n - first, block)] = x[max(first, 0):first + block]
        for i in range(1, len(chunk)):
            np.multiply(chunk[i - 1], chunk[0], out=chunk[i])
        y = scipy.fft.irfft((scipy.fft.rfft(chunk) * spectra).sum(axis=0), block)
        count = min(hop, n - start)
        out[start:start + count] = y[length - 1:length - 1 + count]
    return out


def convolutive_noise(x: np.ndarray, draws: NotchDraws, sample_rate: int) -> np.ndarray:
    """Algorithm 1: ``x^i`` through filter ``i`` (i = 1 .. N_f), summed, mean removed, peak-limited."""
    y = filter_powers(x, notch_filters(draws, sample_rate))
    y -= y.mean()
    return normalise(y)


def impulsive_noise(x: np.ndarray, draws: ImpulseDraws, gain: float) -> np.ndarray:
    """Algorithm 2: ``x[p] + gain * x[p] * factor`` at the drawn positions, peak-limited."""
    y = x.copy()
    y[draws.positions] = x[draws.positions] + gain * x[draws.positions] * draws.factors
    return normalise(y)


def coloured_noise(x: np.ndarray, noise: np.ndarray, draws: NotchDraws, snr_db: float,
                   sample_rate: int) -> np.ndarray:
    """Algorithm 3: ``noise`` through the drawn notch filter, added at ``snr_db`` to ``x``."""
    coloured = filter_powers(noise, notch_filters(draws, sample_rate))
    # Not np.linalg.norm: BLAS threads stall loader workers on a busy machine.
    noise_norm = np.sqrt(np.square(coloured).sum())
    if noise_norm == 0:
        return x
    return x + coloured * np.float32(np.sqrt(np.square(x).sum()) / noise_norm / 10 ** (0.05 * snr_db))


def draw_convolutive(rng: np.random.Generator, params: RawBoostParams) -> NotchDraws:
    """Filter 1 (linear) has gain ``gain_db``; the non-linear ones ``gain_db`` minus the bias,
    uniform between (min gain - min bias) and (max gain - max bias), as published."""
    (g_min, g_max), (b_min, b_max) = params.gain_db, params.nonlinear_bias_db
    return draw_notches(rng, params, [(g_min, g_max)] + [(g_min - b_min, g_max - b_max)] * (params.n_filters - 1))


def draw_impulses(rng: np.random.Generator, n_samples: int, params: RawBoostParams) -> ImpulseDraws:
    """A uniform fraction in [0, P] % of the samples, chosen uniformly without replacement."""
    count = int(n_samples * rng.uniform(0, params.impulse_percent) / 100)
    positions = rng.choice(n_samples, size=count, replace=False)
    return ImpulseDraws(positions, (2 * rng.random(count) - 1) * (2 * rng.random(count) - 1))


class RawBoost:
    """One RawBoost algorithm (1-8) as an augmentation step: ``rawboost(x, rng)``."""

    def __init__(self, algo: int, params: RawBoostParams = RawBoostParams(), sample_rate: int = 16000) -> None:
        if algo not in range(1, 9):
            raise ValueError(f"RawBoost algorithm must be 1-8, got {algo!r}")
        self.algo, self.params, self.sample_rate = algo, params, sample_rate

    def convolutive(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return convolutive_noise(x, draw_convolutive(rng, self.params), self.sample_rate)

    def impulsive(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return impulsive_noise(x, draw_impulses(rng, len(x), self.params), self.params.impulse_gain)

    def coloured(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # White noise from torch's sampler, seeded from ``rng``: 3x faster than NumPy's here,
        # and serial (no thread to wait for).
        seed = int(rng.integers(2**63))
        noise = torch.randn(len(x), generator=torch.Generator().manual_seed(seed)).numpy()
        draws = draw_notches(rng, self.params, [self.params.gain_db])
        return coloured_noise(x, noise, draws, rng.uniform(*self.params.snr_db), self.sample_rate)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            return x
        if self.algo == 8:
            y = normalise(self.convolutive(x, rng) + self.impulsive(x, rng))
        else:
            y = x
            for step in SERIES[self.algo]:
                y = (self.convolutive, self.impulsive, self.coloured)[step - 1](y, rng)
        return y.astype(np.float32, copy=False)

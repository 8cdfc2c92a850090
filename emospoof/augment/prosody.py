"""Prosody augmentation: pitch, tempo, loudness and spectral tilt, the acoustic correlates of
vocal arousal (Banse & Scherer, "Acoustic profiles in vocal emotion expression", J. Personality
and Social Psychology 70(3), 1996: angry, happy and surprised speech is higher, faster, louder
and has more high-frequency energy than calm speech). A countermeasure that has seen genuine and
spoofed speech under all of them alike cannot take a raised pitch or a flatter spectrum as a
mark of either class.

- **Tempo** (duration factor, pitch kept): WSOLA, the waveform-similarity overlap-add of
  Verhelst & Roelands ("An overlap-add technique based on waveform similarity (WSOLA) for high
  quality time-scale modification of speech", ICASSP 1993). 32-ms Hann frames are laid down
  every 16 ms of output; each is read from the input near its nominal place (output time over
  the factor), shifted by up to +-8 ms to where the input looks most like the natural
  continuation of the frame laid down before it (normalised cross-correlation), so that the
  waveforms overlap in phase.
- **Pitch** (semitones, duration kept): the audio is stretched by the pitch ratio, then
  resampled (soxr) by that ratio back to its duration, which moves every frequency by it.
  Formants move with the pitch, as in any resampling pitch shift; at +-3 semitones (+-19 %) the
  move stays within the spread of vocal-tract lengths across adult speakers.
- **Tempo and pitch together** take one stretch, by the product of the duration factor and the
  pitch ratio, and one resampling.
- **Spectral tilt** (dB per octave): a zero-phase gain, linear in octaves from 1 kHz
  (``tilt * log2(f / 1 kHz)`` dB; constant below 62.5 Hz, four octaves down), applied by FFT to
  the audio padded against wrap-around, then the RMS restored.
- **Loudness** (gain in dB): never drives a peak past full scale (:func:`gain_within_full_scale`).

The step (``ProsodyStep``) applies all four on each use, each value uniform in its configured
range, drawn in that order from the generator the pipeline passes (seeded per run, epoch and
file); a sub-change whose range is one neutral number (0 semitones, tempo 1, 0 dB) is not
computed. It changes the duration, so in training it runs on the whole utterance before the
random crop (``emospoof.augment.pipeline.UTTERANCE_STEPS``). It never sees the label.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soxr
from scipy import fft

from data_utils import SAMPLE_RATE

FRAME = 512  # 32 ms at 16 kHz: two or more pitch periods of any voice above 62.5 Hz
HOP = FRAME // 2  # output hop; Hann frames at 50 % overlap add up to one
TOLERANCE = 128  # +-8 ms: one whole pitch period (down to 62.5 Hz) to align within
DECIMATION = 4  # the coarse search runs at 4 kHz, then +-DECIMATION samples are searched at 16 kHz
WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / FRAME)).astype(np.float32)  # periodic Hann
TILT_PIVOT_HZ = 1000.0
TILT_FLOOR_HZ = 62.5
TILT_PAD = 2048  # samples of zeros after the audio: the tilt's impulse response does not wrap around


def wsola(x: np.ndarray, factor: float) -> np.ndarray:
    """``x`` stretched in time by ``factor`` (``round(factor * len(x))`` samples: > 1 slower,
    < 1 faster), its pitch kept (WSOLA, Verhelst & Roelands 1993; see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    n_out = int(round(len(x) * factor))
    if factor == 1 or len(x) == 0 or n_out == 0:
        return x.copy() if factor == 1 else np.zeros(n_out, dtype=np.float32)
    n_frames = -(-n_out // HOP) + 1
    # Frame k is centred on output sample k*HOP and read near input sample k*HOP/factor.
    pad = FRAME + TOLERANCE + DECIMATION
    nominal = pad - FRAME // 2 + np.round(np.arange(n_frames) * (HOP / factor)).astype(np.int64)
    length = max(pad + len(x), int(nominal[-1]) + HOP + FRAME + TOLERANCE + 2 * DECIMATION) + pad
    length += -length % DECIMATION
    padded = np.zeros(length, dtype=np.float32)
    padded[pad:pad + len(x)] = x
    starts = aligned_starts(padded, nominal)
    frames = padded[starts[:, None] + np.arange(FRAME)] * WINDOW
    blocks = np.zeros((n_frames + 1, HOP), dtype=np.float32)
    blocks[:-1] += frames[:, :HOP]
    blocks[1:] += frames[:, HOP:]
    return blocks.ravel()[HOP:HOP + n_out].copy()


def aligned_starts(padded: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """The start of each frame in ``padded``: within ``TOLERANCE`` of its nominal start, where
    the frame best matches the natural continuation of the frame before (the input that followed
    it, ``HOP`` samples on). Each choice depends on the one before, so this is a loop; it is
    cheap because its coarse search runs on a 4-times decimated copy (block means) and only
    +-``DECIMATION`` samples around the coarse answer are searched at the full rate."""
    d, frame_d, tol_d = DECIMATION, FRAME // DECIMATION, TOLERANCE // DECIMATION
    coarse = padded.reshape(-1, d).mean(axis=1)
    floor = 1e-10 * FRAME
    window_energy = sliding_energy(padded, FRAME)  # of the FRAME samples from each start
    silent = window_energy < floor
    inverse_norm = (1 / np.sqrt(window_energy + floor)).astype(np.float32)
    inverse_norm_d = (1 / np.sqrt(sliding_energy(coarse, frame_d) + floor)).astype(np.float32)
    nominal = nominal.tolist()  # Python integers: the loop does scalar arithmetic only
    starts = list(nominal)
    for k in range(1, len(nominal)):
        template = starts[k - 1] + HOP
        if silent[template]:  # nothing to align to
            continue
        lowest, highest = nominal[k] - TOLERANCE, nominal[k] + TOLERANCE
        # Coarse: candidates within the tolerance, on the decimated copy.
        t_d, low_d = template // d, lowest // d
        scores = np.correlate(coarse[low_d:low_d + 2 * tol_d + frame_d], coarse[t_d:t_d + frame_d], "valid")
        scores *= inverse_norm_d[low_d:low_d + len(scores)]
        guess = (low_d + int(scores.argmax())) * d + template - t_d * d
        # Fine: the full rate around the coarse answer, within the tolerance.
        low, high = max(guess - d, lowest), min(guess + d, highest)
        if high < low:
            low = high = min(max(guess, lowest), highest)
        scores = np.correlate(padded[low:high + FRAME], padded[template:template + FRAME], "valid")
        scores *= inverse_norm[low:high + 1]
        starts[k] = low + int(scores.argmax())
    return np.array(starts, dtype=np.int64)


def sliding_energy(x: np.ndarray, length: int) -> np.ndarray:
    """Energy of the ``length`` samples from each start (float64 cumulative sums)."""
    total = np.concatenate(([0.0], np.cumsum(np.square(x, dtype=np.float64))))
    return total[length:] - total[:-length]


def change_tempo_and_pitch(x: np.ndarray, tempo: float = 1.0, semitones: float = 0.0) -> np.ndarray:
    """``x`` lasting ``tempo`` times as long (pitch kept) with its pitch moved by ``semitones``:
    one WSOLA stretch by ``tempo * ratio``, then soxr resampling by the pitch ratio."""
    ratio = 2.0 ** (semitones / 12.0)
    y = wsola(x, tempo * ratio)
    if ratio != 1:
        y = soxr.resample(y, SAMPLE_RATE * ratio, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(y, dtype=np.float32)


@lru_cache(maxsize=32)
def octaves_from_pivot(n_fft: int) -> np.ndarray:
    """log2(f / 1 kHz) at each rfft bin of ``n_fft`` points, frequencies below 62.5 Hz held there."""
    freqs = fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    return np.log2(np.maximum(freqs, TILT_FLOOR_HZ) / TILT_PIVOT_HZ).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def tilt_spectrum(x: np.ndarray, db_per_octave: float) -> np.ndarray:
    """``x`` through a zero-phase gain of ``db_per_octave`` dB per octave around 1 kHz, then
    scaled back to its RMS."""
    if db_per_octave == 0 or len(x) == 0:
        return x
    n_fft = fft.next_fast_len(len(x) + TILT_PAD, real=True)
    gain = np.exp(octaves_from_pivot(n_fft) * np.float32(db_per_octave * np.log(10) / 20))
    y = fft.irfft(fft.rfft(x, n_fft) * gain, n_fft)[:len(x)]
    before, after = rms(x), rms(y)
    return (y * (before / after) if after > 0 else y).astype(np.float32)


def gain_within_full_scale(x: np.ndarray, gain_db: float) -> np.ndarray:
    """``x`` times ``gain_db``, except that a gain never drives the peak past full scale (1): a
    louder voice is recorded at most at full scale, and clipping would be a distortion of its
    own. A gain that would is lowered to the headroom; a negative gain always applies."""
    if gain_db == 0 or len(x) == 0:
        return x
    gain = 10.0 ** (gain_db / 20)
    peak = float(np.abs(x).max())
    if gain > 1 and peak > 0:
        gain = min(gain, max(1.0, 1.0 / peak))
    return (x * np.float32(gain)).astype(np.float32)


@dataclass(frozen=True)
class ProsodyParams:
    """Ranges ``(low, high)`` of the uniform draws; a range of one neutral value turns its
    sub-change off."""

    pitch_semitones: tuple[float, float] = (-3.0, 3.0)
    tempo: tuple[float, float] = (0.85, 1.15)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)


class ProsodyStep:
    """Pitch, tempo, spectral tilt and loudness, each value drawn on every use (in the order
    pitch, tempo, tilt, gain), then applied: tempo and pitch, tilt, gain."""

    def __init__(self, params: ProsodyParams = ProsodyParams()) -> None:
        self.params = params

    def draw(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """(semitones, tempo, tilt in dB per octave, gain in dB)."""
        p = self.params
        return (rng.uniform(*p.pitch_semitones), rng.uniform(*p.tempo), rng.uniform(*p.tilt_db_per_octave),
                rng.uniform(*p.gain_db))

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        semitones, tempo, tilt, gain = self.draw(rng)
        if semitones != 0 or tempo != 1:
            x = change_tempo_and_pitch(x, tempo, semitones)
        return gain_within_full_scale(tilt_spectrum(x, tilt), gain)

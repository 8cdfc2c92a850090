"""Channel augmentation: codec round trips through libsndfile, telephone band-limiting, additive
noise from a folder of recordings at a random SNR (MUSAN-style) and reverberation with impulse
responses from a folder (RIR). Each step is a callable ``step(x, rng) -> y`` that keeps the
length and the alignment of ``x`` (float32, 16 kHz).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr

from data_utils import SAMPLE_RATE, find_audio_files, tile_to_length
from emospoof.core.config import ConfigError

MAX_CODEC_LAG = 1600  # 100 ms: decoders that keep their delay are re-aligned within this


@dataclass(frozen=True)
class Codec:
    """A libsndfile codec: container, subtype, the rate it runs at, and the default range of
    libsndfile's compression level (0 = best quality) for codecs that have one."""

    format: str
    subtype: str
    sample_rate: int = SAMPLE_RATE
    compression: tuple[float, float] | None = None
    bitrate_mode: str | None = None


# Default compression ranges chosen for realistic bit rates at 16 kHz (measured, docs/augmentation.md):
# MP3 CBR 84-17 kbit/s, Opus 86-21 kbit/s, Vorbis 81-35 kbit/s on speech. G.711 and GSM 6.10 run at 8 kHz.
CODECS = {
    "mp3": Codec("MP3", "MPEG_LAYER_III", compression=(0.5, 0.95), bitrate_mode="CONSTANT"),
    "opus": Codec("OGG", "OPUS", compression=(0.7, 0.95)),
    "vorbis": Codec("OGG", "VORBIS", compression=(0.0, 1.0)),
    "mulaw": Codec("WAV", "ULAW", sample_rate=8000),
    "alaw": Codec("WAV", "ALAW", sample_rate=8000),
    "gsm": Codec("WAV", "GSM610", sample_rate=8000),
}


def codec_supported(name: str) -> bool:
    """Whether the installed libsndfile can write ``name`` (MP3 needs libsndfile >= 1.1)."""
    codec = CODECS[name]
    return codec.format in sf.available_formats() and codec.subtype in sf.available_subtypes(codec.format)


def align(reference: np.ndarray, decoded: np.ndarray, max_lag: int = MAX_CODEC_LAG) -> np.ndarray:
    """``decoded`` shifted by the lag (within ``max_lag``) that best matches ``reference`` and cut
    or zero-padded to its length: a decoder that keeps its delay or padding stays aligned."""
    n = len(reference)
    n_fft = 1 << (n + len(decoded) - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(decoded, n_fft) * np.conj(np.fft.rfft(reference, n_fft)), n_fft)
    lags = np.r_[0:max_lag + 1, -max_lag:0]
    lag = int(lags[np.argmax(correlation[lags])])
    out = np.zeros(n, dtype=np.float32)
    part = decoded[max(lag, 0):max(lag, 0) + n - max(-lag, 0)]
    out[max(-lag, 0):max(-lag, 0) + len(part)] = part
    return out


def codec_round_trip(x: np.ndarray, name: str, level: float | None = None) -> np.ndarray:
    """``x`` (16 kHz) encoded with codec ``name`` at compression ``level`` in memory and decoded
    again, at the codec's own rate (resampled with soxr around 8-kHz codecs) and aligned to ``x``."""
    codec = CODECS[name]
    peak = max(1.0, float(np.abs(x).max()) if len(x) else 1.0)  # encoders clip above full scale
    signal = x / peak
    if codec.sample_rate != SAMPLE_RATE:
        signal = soxr.resample(signal, SAMPLE_RATE, codec.sample_rate, quality="HQ")
    options = {} if codec.compression is None else {"compression_level": float(level)}
    if codec.bitrate_mode:
        options["bitrate_mode"] = codec.bitrate_mode
    buffer = io.BytesIO()
    sf.write(buffer, signal, codec.sample_rate, format=codec.format, subtype=codec.subtype, **options)
    buffer.seek(0)
    decoded, rate = sf.read(buffer, dtype="float32")
    if rate != SAMPLE_RATE:
        decoded = soxr.resample(decoded, rate, SAMPLE_RATE, quality="HQ")
    return align(x, decoded) * np.float32(peak)


class CodecStep:
    """One codec drawn uniformly from ``codecs`` (name -> compression range or None), its
    compression level uniform in that range."""

    def __init__(self, codecs: dict[str, tuple[float, float] | None]) -> None:
        self.codecs = codecs
        self.names = sorted(codecs)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        name = self.names[rng.integers(len(self.names))]
        levels = self.codecs[name]
        return codec_round_trip(x, name, None if levels is None else rng.uniform(*levels))


def band_limit(x: np.ndarray, low_hz: float, high_hz: float, transition_hz: float = 100.0) -> np.ndarray:
    """Zero-phase band-pass (raised-cosine edges ``transition_hz`` wide outside the band), by FFT
    over the clip padded so that the edges do not wrap around."""
    n_fft = 1 << (len(x) + 2048 - 1).bit_length()
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    distance = np.maximum(low_hz - freqs, freqs - high_hz) / transition_hz  # <= 0 inside the band
    gain = np.where(distance <= 0, 1.0, 0.5 * (1 + np.cos(np.pi * np.clip(distance, 0, 1))))
    return np.fft.irfft(np.fft.rfft(x, n_fft) * gain, n_fft)[:len(x)].astype(np.float32)


class TelephoneStep:
    """Telephone band-limiting (300-3400 Hz by default)."""

    def __init__(self, band_hz: tuple[float, float]) -> None:
        self.band_hz = band_hz

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return band_limit(x, *self.band_hz)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


class AudioFolder:
    """The audio files of a folder named by config key ``key``; files libsndfile cannot open
    are reported once with ``warn`` and left out."""

    def __init__(self, folder: str | Path, key: str, warn: Callable[[str], None] = print) -> None:
        folder = Path(folder)
        self.files = []
        for relative in find_audio_files(folder, f"config key '{key}'"):
            try:
                info = sf.info(str(folder / relative))
            except Exception as err:  # libsndfile raises several types for corrupt input
                reason = str(err).splitlines()[0]
                warn(f"warning: config key '{key}': skipped {folder / relative}: unreadable audio ({reason})")
                continue
            if info.frames > 0:
                self.files.append(str(folder / relative))
        if not self.files:
            raise ConfigError(f"config key '{key}': no readable audio file in {folder}")

    def read(self, rng: np.random.Generator, length: int | None = None) -> np.ndarray:
        """A random file as 16-kHz mono, or a random ``length``-sample stretch of one (tiled
        when the file is shorter); only the stretch needed is read."""
        with sf.SoundFile(self.files[rng.integers(len(self.files))]) as handle:
            frames = handle.frames
            if length is not None:
                needed = math.ceil(length * handle.samplerate / SAMPLE_RATE)
                handle.seek(int(rng.integers(max(frames - needed, 0) + 1)))
                frames = min(needed, frames)
            audio = handle.read(frames, dtype="float32", always_2d=True).mean(axis=1)
            if handle.samplerate != SAMPLE_RATE:
                audio = soxr.resample(audio, handle.samplerate, SAMPLE_RATE, quality="HQ")
        return audio if length is None else tile_to_length(audio, length)


class NoiseStep:
    """A stretch of a recording from a folder added at an SNR uniform in ``snr_db``."""

    def __init__(self, folder: AudioFolder, snr_db: tuple[float, float]) -> None:
        self.folder, self.snr_db = folder, snr_db

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = self.folder.read(rng, len(x))
        snr = rng.uniform(*self.snr_db)
        noise_power = power(noise)
        if noise_power == 0:
            return x
        return (x + noise * np.sqrt(power(x) / (noise_power * 10 ** (snr / 10)))).astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with the impulse response, cut from its direct path (the RIR's peak) so
    it stays aligned, and scaled back to the power of ``x``."""
    n_fft = 1 << (len(x) + len(rir) - 1).bit_length()
    direct = int(np.argmax(np.abs(rir)))
    y = np.fft.irfft(np.fft.rfft(x, n_fft) * np.fft.rfft(rir, n_fft), n_fft)[direct:direct + len(x)]
    reverberant_power = power(y)
    if reverberant_power == 0:
        return x
    return (y * np.sqrt(power(x) / reverberant_power)).astype(np.float32)


class ReverbStep:
    """Reverberation with an impulse response drawn from a folder."""

    def __init__(self, folder: AudioFolder) -> None:
        self.folder = folder

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return reverberate(x, self.folder.read(rng))

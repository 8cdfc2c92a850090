"""Cost of the training-data augmentation on one thread, per 64 600-sample (about 4-s) clip.

    python benchmarks/bench_augment.py [--json] [--clips 64] [--published_clips 16]

RawBoost algorithms 1-8 (``emospoof.augment.rawboost``) are timed on ``--clips`` speech-like clips, and
the transcription of the published definition (``benchmarks/rawboost_published.py``: scipy
``firwin`` per band and ``lfilter``) on the first ``--published_clips`` of them; each is timed twice,
in turn, and the faster repeat kept; the speed-up is the ratio of their mean CPU times on the same
clips. Then each codec round trip, the telephone band, noise from
a folder and reverberation from a folder of impulse responses (generated here, in a temporary
folder). Reported: mean CPU milliseconds per clip (the cost itself; on a loaded machine the wall
time also counts the waits for other processes, and is reported beside it for RawBoost), with the
load average before and after. The utterance-level steps, whose cost grows with the utterance
they run on, are reported in CPU milliseconds per second of input audio: each prosody sub-change
alone (its default range, the others neutral), all four together (the default step), and the
silence step (its defaults). ``--json`` prints one JSON line.
"""
from __future__ import annotations

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"  # one thread, before numpy and torch start theirs

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rawboost_published import published_rawboost  # noqa: E402

from data_utils import NB_SAMP, SAMPLE_RATE
from emospoof.augment.channel import (CODECS, AudioFolder, CodecStep, NoiseStep, ReverbStep, TelephoneStep,
                                      codec_supported)
from emospoof.augment.prosody import ProsodyParams, ProsodyStep
from emospoof.augment.rawboost import RawBoost
from emospoof.augment.silence import SilenceStep


def speech_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """A clip with a gliding harmonic voice, syllable-rate amplitude modulation and a noise floor."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 6) * t)) ** 2
    clip = envelope * voice + 0.05 * rng.standard_normal(n)
    return (0.5 * clip / np.abs(clip).max()).astype(np.float32)


def timed(run) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``run()``. The CPU time of this one-thread process is the
    cost itself; on a loaded machine the wall time adds the waits for the other processes."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def mean_ms(step, clips: np.ndarray, rng: np.random.Generator) -> float:
    """Mean CPU milliseconds of ``step`` per clip."""
    cpu, _ = timed(lambda: [step(clip, rng) for clip in clips])
    return 1000 * cpu / len(clips)


def time_rawboost(clips: np.ndarray, n_published: int, seed: int, repeats: int = 2) -> dict[str, dict]:
    """Mean CPU and wall ms per clip of the fast RawBoost on every clip and of the published one
    on the first ``n_published``, and the speed-up on those. Each algorithm is timed ``repeats``
    times, the two implementations in turn, and the faster repeat of each is kept (the least
    noisy estimate of the cost on a shared machine)."""
    times = {"fast_cpu": {}, "fast_wall": {}, "published_cpu": {}, "published_wall": {}, "speedup": {}}
    for algo in range(1, 9):
        step = RawBoost(algo)
        runs = {"fast": [], "published": []}
        for repeat in range(repeats):
            rng = np.random.default_rng([seed, repeat])
            step(clips[-1], rng)  # warm-up: FFT plans, first allocations
            runs["fast"].append([timed(lambda: step(clip, rng)) for clip in clips])
            published_rawboost(clips[-1], algo, rng)
            runs["published"].append([timed(lambda: published_rawboost(clip, algo, rng))
                                      for clip in clips[:n_published]])
        best = {name: min(samples, key=lambda s: np.mean(s, axis=0)[0]) for name, samples in runs.items()}
        for name, samples in best.items():
            if samples:
                cpu, wall = np.mean(samples, axis=0) * 1000
                times[f"{name}_cpu"][str(algo)], times[f"{name}_wall"][str(algo)] = round(cpu, 3), round(wall, 3)
        if best["published"]:
            ratio = np.mean(best["published"], axis=0)[0] / np.mean(best["fast"][:n_published], axis=0)[0]
            times["speedup"][str(algo)] = round(float(ratio), 1)
    return times


def time_utterance_steps(clips: np.ndarray, rng: np.random.Generator) -> tuple[dict[str, float], float]:
    """CPU ms per second of input audio of each prosody sub-change alone, of all of them (the
    default step) and of the silence step (best of two repeats, after a warm-up call)."""
    neutral = {"pitch_semitones": (0.0, 0.0), "tempo": (1.0, 1.0), "gain_db": (0.0, 0.0),
               "tilt_db_per_octave": (0.0, 0.0)}
    default = ProsodyParams()
    steps = {name: ProsodyStep(ProsodyParams(**{**neutral, key: getattr(default, key)}))
             for name, key in (("pitch", "pitch_semitones"), ("tempo", "tempo"), ("gain", "gain_db"),
                               ("tilt", "tilt_db_per_octave"))}
    steps["all"] = ProsodyStep(default)
    steps["silence"] = SilenceStep()
    seconds = clips.shape[1] / SAMPLE_RATE
    times = {}
    for name, step in steps.items():
        step(clips[0], rng)
        times[name] = round(min(mean_ms(step, clips, rng) for _ in range(2)) / seconds, 3)
    silence = times.pop("silence")
    return times, silence


def write_folders(root: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """Ten 10-s noise recordings and ten 0.5-s impulse responses (exponentially decaying noise
    after a direct path, RT60 0.2-0.8 s)."""
    noise_dir, rir_dir = root / "noise", root / "rir"
    noise_dir.mkdir()
    rir_dir.mkdir()
    for i in range(10):
        sf.write(noise_dir / f"noise{i}.wav", (0.1 * rng.standard_normal(10 * SAMPLE_RATE)).astype(np.float32),
                 SAMPLE_RATE)
        t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
        rir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rng.uniform(0.2, 0.8))
        rir[:80] = 0
        rir[80] = 3 * np.abs(rir).max()
        sf.write(rir_dir / f"rir{i}.wav", (rir / np.abs(rir).max()).astype(np.float32), SAMPLE_RATE)
    return noise_dir, rir_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--published_clips", type=int, default=16, help="clips timed with the published code")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    clips = np.stack([speech_like(rng, NB_SAMP) for _ in range(args.clips)])
    load_before = os.getloadavg()

    rawboost = time_rawboost(clips, args.published_clips, args.seed)
    fast, published = rawboost["fast_cpu"], rawboost["published_cpu"]
    codec_clips = clips[:max(1, args.clips // 4)]
    codecs = {name: round(mean_ms(CodecStep({name: spec.compression}), codec_clips, rng), 2)
              for name, spec in CODECS.items() if codec_supported(name)}
    with tempfile.TemporaryDirectory() as tmp:
        noise_dir, rir_dir = write_folders(Path(tmp), rng)
        noise = mean_ms(NoiseStep(AudioFolder(noise_dir, "noise"), (5.0, 20.0)), clips, rng)
        rir = mean_ms(ReverbStep(AudioFolder(rir_dir, "rir")), clips, rng)
    telephone = mean_ms(TelephoneStep((300.0, 3400.0)), clips, rng)
    prosody, silence = time_utterance_steps(clips, rng)

    result = {
        "clip_samples": NB_SAMP, "clips": args.clips, "threads": 1,
        "rawboost_ms_per_clip": fast,
        "published_rawboost_ms_per_clip": published, "published_clips": args.published_clips,
        "rawboost_speedup": rawboost["speedup"],
        "rawboost_wall_ms_per_clip": rawboost["fast_wall"],
        "published_rawboost_wall_ms_per_clip": rawboost["published_wall"],
        "codec_ms_per_clip": codecs, "codec_clips": len(codec_clips),
        "telephone_ms_per_clip": round(telephone, 3), "noise_ms_per_clip": round(noise, 3),
        "rir_ms_per_clip": round(rir, 3),
        "prosody_ms_per_second": prosody, "silence_ms_per_second": silence,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.clips} clips of {NB_SAMP} samples, one thread; load average {result['load_average_before']} "
          f"-> {result['load_average_after']}")
    for algo in fast:
        line = f"  RawBoost {algo}: {fast[algo]:7.2f} ms"
        if algo in published:
            line += f"   published {published[algo]:7.1f} ms   x{result['rawboost_speedup'][algo]}"
        print(line)
    for name, ms in codecs.items():
        print(f"  codec {name:7s} {ms:7.1f} ms")
    print(f"  telephone  {telephone:7.2f} ms\n  noise      {noise:7.2f} ms\n  rir        {rir:7.2f} ms")
    print("per second of input audio:")
    for name, ms in prosody.items():
        print(f"  prosody {name:6s} {ms:7.2f} ms")
    print(f"  silence        {silence:7.2f} ms")


if __name__ == "__main__":
    main()

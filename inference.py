"""Score every audio file under a folder with a countermeasure, or export it to ONNX.

    python inference.py --config config/AASIST.conf --test_dir DIR [--output_file scores.tsv]
    python inference.py --config config/AASIST.conf --export-onnx AASIST.onnx
    python inference.py --config config/AASIST.conf --onnx AASIST.onnx --test_dir DIR

Each file is cut into overlapping windows of the model's length (a shorter clip is tiled, as in
training), the windows of many files are batched together, and a file's score is the mean of its
window scores (bona fide minus spoof logit). Files that cannot be scored are listed in an errors
file and the run goes on. Exit code: 0 every file scored, 1 some files failed (listed in the errors
file), 2 the run could not start (bad config, folder, weights or download).
"""
from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import json
import math
import sys
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import download_weights
from data_utils import (
    NB_SAMP,
    SAMPLE_RATE,
    AudioError,
    default_num_workers,
    load_audio,
    sliding_windows,
    window_starts,
)
from evaluation import compute_eer
from models.blocks import ResidualBlock
from utils import ConfigError, build_model, load_config, load_weights, select_device

# Extensions of the containers libsndfile reads; a listed file it still cannot decode becomes an
# error row, and files with other extensions (text, images, ...) are not audio and are ignored.
AUDIO_EXTENSIONS = {".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".voc"}
# Per-chunk working set of a fused residual block, to stay in the CPU caches. Measured here (1 MB L2
# per core): 0.5-4 MB ran within noise of each other, 256 KB was slower (more Python per window).
CHUNK_BYTES = 1 << 20
OUTPUT_COLUMNS = ("path", "score", "p_bonafide", "decision", "duration_s")

Forward = Callable[[torch.Tensor], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Faster CPU inference for the AASIST family


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (eval-mode BatchNorm is affine)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    return weight.detach().clone(), (bias * scale + shift).detach().clone()


def _time_major(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, freq, time) kernel -> (out, in, time, freq), for maps stored time-first."""
    return weight.detach().transpose(2, 3).contiguous(memory_format=torch.channels_last)


def _as_conv_input(rows: torch.Tensor) -> torch.Tensor:
    """(time, freq, channel) memory seen as a channels-last (1, channel, time, freq) batch."""
    return rows.permute(2, 0, 1).unsqueeze(0)


def _as_rows(conv_output: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_as_conv_input``: a channels-last (1, C, T, F) tensor as (T, F, C)."""
    return conv_output[0].permute(1, 2, 0)


class FusedResidualBlock(nn.Module):
    """Inference-only twin of ``models.blocks.ResidualBlock``, much faster on CPU.

    The eager block writes six full-length maps per window (about 60 MB each for a 4-s window in
    AASIST's first block) and reads them back; about half of its time goes to that memory traffic
    and its page faults rather than to arithmetic (profiled). Here ``bn2`` is folded into
    ``conv1`` (Ioffe & Szegedy, 2015: in eval mode BatchNorm is a per-channel affine map), and the
    block runs over time chunks small enough to stay in cache. The map is kept time-major (time, freq, channel) so that a chunk, its halo and
    its output are contiguous slabs. Outputs equal the eager block's up to float rounding.
    """

    HALO = 2  # conv1 and conv2 each read one time step on either side

    def __init__(self, block: ResidualBlock, chunk_bytes: int = CHUNK_BYTES) -> None:
        super().__init__()
        weight, bias = fold_batchnorm(block.conv1, block.bn2)
        self.register_buffer("w1", _time_major(weight))
        self.register_buffer("b1", bias)
        self.register_buffer("w2", _time_major(block.conv2.weight))
        self.register_buffer("b2", block.conv2.bias.detach().clone())
        downsample = getattr(block, "conv_downsample", None)
        self.register_buffer("wd", None if downsample is None else _time_major(downsample.weight))
        self.register_buffer("bd", None if downsample is None else downsample.bias.detach().clone())
        self.pool = block.pool.kernel_size[1] if isinstance(block.pool, nn.MaxPool2d) else 1
        self.chunk_bytes = chunk_bytes

    @staticmethod
    def supports(block: nn.Module) -> bool:
        """Whether ``block`` has the layer geometry this twin implements."""
        if not isinstance(block, ResidualBlock):
            return False
        convs = [(block.conv1, (2, 3), (1, 1)), (block.conv2, (2, 3), (0, 1))]
        if hasattr(block, "conv_downsample"):
            convs.append((block.conv_downsample, (1, 3), (0, 1)))
        for conv, kernel, padding in convs:
            if (conv.kernel_size, conv.padding, conv.stride, conv.dilation, conv.groups) != (
                    kernel, padding, (1, 1), (1, 1), 1) or conv.bias is None:
                return False
        pool = block.pool
        if isinstance(pool, nn.Identity):
            return True
        return (isinstance(pool, nn.MaxPool2d) and isinstance(pool.kernel_size, tuple)
                and pool.kernel_size[0] == 1 and pool.stride == pool.kernel_size
                and pool.padding == 0 and pool.dilation == 1 and not pool.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, freq, length = x.shape
        out_length = length // self.pool
        out = x.new_empty((batch, out_length, freq, self.w1.shape[0]))
        padded = x.new_zeros((length + 2 * self.HALO, freq, channels))
        for index in range(batch):
            padded[self.HALO:-self.HALO] = x[index].permute(2, 1, 0)
            self._one_map(padded, out[index], length)
        return out.permute(0, 3, 2, 1)

    def _one_map(self, padded: torch.Tensor, out: torch.Tensor, length: int) -> None:
        """One window: ``padded`` is its (time + 4, freq, channel) input with zero halo rows."""
        freq = padded.shape[1]
        rows = max(self.pool, self.chunk_bytes // (4 * self.w1.shape[0] * (freq + 1)) // self.pool * self.pool)
        used = out.shape[0] * self.pool  # MaxPool drops the last length % pool steps
        for start in range(0, used, rows):
            stop = min(start + rows, used)
            hidden = F.conv2d(_as_conv_input(padded[start:stop + 4]), self.w1, self.b1, padding=(0, 1))
            F.selu(hidden, inplace=True)
            # conv2 zero-pads the activation, not the input, at both ends of the map.
            if start == 0:
                hidden[:, :, 0] = 0
            if stop == length:
                hidden[:, :, -1] = 0
            y = _as_rows(F.conv2d(hidden, self.w2, self.b2))
            if self.wd is None:
                y += padded[start + 2:stop + 2]
            else:
                y += _as_rows(F.conv2d(_as_conv_input(padded[start + 1:stop + 3]), self.wd, self.bd))
            steps = (stop - start) // self.pool
            torch.amax(y.reshape(steps, self.pool, -1), dim=1,
                       out=out[start // self.pool:stop // self.pool].view(steps, -1))


def optimise_for_cpu(model: nn.Module, chunk_bytes: int = CHUNK_BYTES) -> nn.Module:
    """A copy of ``model`` for CPU inference: every AASIST residual block replaced by its fused,
    chunked twin and the rest in channels-last memory format (2-4x faster 2-D convolutions)."""
    fast = copy.deepcopy(model).eval()
    for parent in list(fast.modules()):
        for name, child in list(parent.named_children()):
            if FusedResidualBlock.supports(child):
                setattr(parent, name, FusedResidualBlock(child, chunk_bytes))
    return fast.to(memory_format=torch.channels_last)


def torch_forward(model: nn.Module, device: torch.device) -> Forward:
    """Logits (batch, 2) of a batch of windows; float16 autocast on CUDA as in ``main.py``."""
    def forward(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16,
                                                    enabled=device.type == "cuda"):
            return model(x.to(device))[1].float().cpu().numpy()
    return forward


def threaded_cpu_forward(model: nn.Module, threads: int) -> Forward:
    """Logits of a batch of windows, the windows shared among ``threads`` Python threads that each
    run torch single-threaded.

    The fused blocks issue many small operations; with OpenMP threads each one ends in a barrier,
    and on a busy machine (other processes on the cores) those barriers made a 2-thread run up to
    10x slower than a 1-thread one here. Threads that own whole windows never wait for each other.
    """
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def one(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model(x)[1].numpy()

    def forward(x: torch.Tensor) -> np.ndarray:
        torch.set_num_threads(1)  # process-wide; set on every call in case someone changed it
        if pool is None or len(x) == 1:
            return one(x)
        return np.concatenate(list(pool.map(one, x.tensor_split(min(threads, len(x))))))
    return forward


# ---------------------------------------------------------------------------------------------
# ONNX


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(waveform)[1]


def export_onnx(model: nn.Module, path: Path, nb_samp: int) -> float | None:
    """Write ``model`` as ONNX (input ``waveform`` (batch, nb_samp), output ``logits``) and return
    the largest logit difference to PyTorch on a random window, or None without onnxruntime."""
    if importlib.util.find_spec("onnx") is None:  # torch's exporter serialises through it
        raise ConfigError("ONNX export needs the onnx package: pip install onnx onnxruntime")
    # Export must trace eval mode: in training mode dropout and batch statistics would be baked in.
    wrapper = _LogitsOnly(model).eval()
    example = torch.randn(2, nb_samp, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # Node counts of the graph pools become constants: right, as the window length is fixed.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(wrapper, (example,), str(path), input_names=["waveform"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"waveform": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as err:  # the exporter raises many types; any of them means "cannot export"
        raise ConfigError(f"this model cannot be exported to ONNX ({str(err).splitlines()[0]})") from None
    try:
        forward, _ = onnx_forward(path, threads=None)
    except ConfigError:
        return None
    check = example[:1]  # another batch size than traced: the batch axis must really be dynamic
    with torch.inference_mode():
        expected = wrapper(check).numpy()
    return float(np.abs(forward(check) - expected).max())


def onnx_forward(path: Path, threads: int | None) -> tuple[Forward, int]:
    """An onnxruntime CPU session as a forward function, and the window length it expects."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("--onnx needs onnxruntime: pip install onnxruntime") from None
    if not path.is_file():
        raise ConfigError(f"ONNX model not found: {path}")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise ConfigError(f"{path}: not a loadable ONNX model ({str(err).splitlines()[0]})") from None
    waveform = session.get_inputs()[0]
    if len(waveform.shape) != 2 or not isinstance(waveform.shape[1], int):
        raise ConfigError(f"{path}: expected an input of shape (batch, samples), found {waveform.shape}")

    def forward(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {waveform.name: x.numpy()})[0]
    return forward, waveform.shape[1]


# ---------------------------------------------------------------------------------------------
# Files and windows


def find_audio_files(test_dir: Path) -> list[Path]:
    """Audio files under ``test_dir`` (recursively), relative to it and sorted."""
    if not test_dir.exists():
        raise ConfigError(f"--test_dir: folder not found: {test_dir}")
    if not test_dir.is_dir():
        raise ConfigError(f"--test_dir: not a folder: {test_dir}")
    files = sorted(p.relative_to(test_dir) for p in test_dir.rglob("*")
                   if p.suffix.lower() in AUDIO_EXTENSIONS and not p.is_dir())
    if not files:
        raise ConfigError(f"--test_dir: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under {test_dir}")
    return files


@dataclass
class LoadedFile:
    index: int
    windows: torch.Tensor | None
    duration_s: float
    reason: str | None = None


class AudioFolder(Dataset):
    """Windows of each file, or the reason it cannot be scored; runs in loader workers."""

    def __init__(self, root: Path, files: list[Path], nb_samp: int, hop: int) -> None:
        self.root, self.files, self.nb_samp, self.hop = root, files, nb_samp, hop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> LoadedFile:
        path = self.root / self.files[index]
        try:
            if path.stat().st_size == 0:
                return LoadedFile(index, None, 0.0, "empty file (0 bytes)")
            audio = load_audio(path)
        except AudioError as err:
            return LoadedFile(index, None, 0.0, err.reason)
        except Exception as err:  # e.g. a resampler failure: one bad file must not stop the run
            return LoadedFile(index, None, 0.0, f"cannot be read ({type(err).__name__}: {err})")
        duration = len(audio) / SAMPLE_RATE
        if not np.any(audio):
            return LoadedFile(index, None, duration, "silent audio (every sample is zero)")
        windows = sliding_windows(audio, self.nb_samp, self.hop)
        return LoadedFile(index, torch.from_numpy(np.ascontiguousarray(windows)), duration)


def _keep_as_is(item: LoadedFile) -> LoadedFile:
    return item


@dataclass
class FileScores:
    path: str
    duration_s: float
    windows: list[float] = field(default_factory=list)


@dataclass
class ScoringRun:
    scored: list[FileScores]
    errors: list[tuple[str, str]]
    n_windows: int
    seconds: float


def score_files(root: Path, files: list[Path], forward: Forward, nb_samp: int, hop: int,
                batch_size: int, num_workers: int, warn: Callable[[str], None] = tqdm.write,
                progress: bool = True) -> ScoringRun:
    """Window scores (bona fide minus spoof logit) of every file, batching windows across files
    while loader workers decode the next files."""
    loader = DataLoader(AudioFolder(root, files, nb_samp, hop), batch_size=None, shuffle=False,
                        num_workers=num_workers, collate_fn=_keep_as_is)
    started = time.perf_counter()
    results: dict[int, FileScores] = {}
    errors: list[tuple[str, str]] = []
    queue: deque[list] = deque()  # [file index, windows, next window to score]
    queued = n_windows = 0
    bar = tqdm(total=len(files), unit="file", desc="scoring", disable=not progress)

    def run_batch(limit: int) -> None:
        nonlocal queued, n_windows
        parts, owners, finished = [], [], 0
        while queue and sum(len(p) for p in parts) < limit:
            entry = queue[0]
            take = min(limit - sum(len(p) for p in parts), len(entry[1]) - entry[2])
            parts.append(entry[1][entry[2]:entry[2] + take])
            owners.append((entry[0], take))
            entry[2] += take
            if entry[2] == len(entry[1]):
                queue.popleft()
                finished += 1
        logits = forward(torch.cat(parts))
        bar.update(finished)
        window_scores = (logits[:, 1] - logits[:, 0]).astype(np.float64)
        offset = 0
        for index, count in owners:
            results[index].windows.extend(window_scores[offset:offset + count].tolist())
            offset += count
        queued -= len(window_scores)
        n_windows += len(window_scores)

    for item in loader:
        path = files[item.index].as_posix()
        if item.reason is not None:
            errors.append((path, item.reason))
            warn(f"warning: {path}: {item.reason}")
            bar.update(1)
            continue
        results[item.index] = FileScores(path, item.duration_s)
        queue.append([item.index, item.windows, 0])
        queued += len(item.windows)
        while queued >= batch_size:
            run_batch(batch_size)
    while queued:
        run_batch(batch_size)
    bar.close()
    scored = sorted(results.values(), key=lambda r: r.path)
    return ScoringRun(scored, sorted(errors), n_windows, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Scores, thresholds and output


AGGREGATES = {"mean": np.mean, "min": np.min, "max": np.max}


def threshold_file(model_file: Path) -> Path:
    """Where a threshold calibrated for ``model_file`` is stored: beside it."""
    return model_file.with_name(model_file.name + ".threshold.json")


def stored_threshold(model_file: Path) -> float | None:
    path = threshold_file(model_file)
    if not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text())["threshold"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: expected JSON with a numeric 'threshold'") from None


def read_labels(path: Path) -> dict[str, str]:
    """``path``-or-``file`` -> ``key`` (bonafide/spoof) from a tab-separated file with a header."""
    if not path.is_file():
        raise ConfigError(f"--calibrate: labels file not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = reader.fieldnames or []
        name = next((c for c in ("path", "file") if c in columns), None)
        if name is None or "key" not in columns:
            raise ConfigError(f"{path}: expected a header with 'path' (or 'file') and 'key' columns")
        labels = {}
        for number, row in enumerate(reader, start=2):
            if row["key"] not in ("bonafide", "spoof"):
                raise ConfigError(f"{path}:{number}: key must be bonafide or spoof, got {row['key']!r}")
            labels[row[name]] = row["key"]
    return labels


def calibrate(scores: dict[str, float], labels: dict[str, str], labels_path: Path) -> dict:
    """The equal-error-rate threshold of the labelled files' scores."""
    bonafide = [s for p, s in scores.items() if labels.get(p) == "bonafide"]
    spoof = [s for p, s in scores.items() if labels.get(p) == "spoof"]
    if not bonafide or not spoof:
        raise ConfigError(f"{labels_path}: calibration needs scored bona fide and spoof files "
                          f"(found {len(bonafide)} bona fide, {len(spoof)} spoof among the scored files)")
    eer, threshold = compute_eer(bonafide, spoof)
    return {"threshold": threshold, "eer_percent": 100 * eer, "n_bonafide": len(bonafide),
            "n_spoof": len(spoof), "labels": str(labels_path)}


def sigmoid(x: float) -> float:
    """Softmax probability of the bona fide class from the logit difference, overflow-safe."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def file_score(result: FileScores, aggregate: str) -> float:
    """The file's score as written out (6 decimals), so decisions and calibration use exactly the
    numbers a reader sees."""
    return round(float(AGGREGATES[aggregate](result.windows)), 6)


def output_rows(scored: list[FileScores], aggregate: str, threshold: float) -> list[dict]:
    rows = []
    for result in scored:
        score = file_score(result, aggregate)
        rows.append({"path": result.path, "score": score, "p_bonafide": float(f"{sigmoid(score):.6g}"),
                     "decision": "bonafide" if score > threshold else "spoof",
                     "duration_s": round(result.duration_s, 3)})
    return rows


def _open_text(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    # File names that are not valid UTF-8 are written escaped rather than failing the run.
    return open(path, "w", newline="", encoding="utf-8", errors="backslashreplace")


def write_rows(path: Path, rows: list[dict], columns: tuple[str, ...], fmt: str) -> None:
    with _open_text(path) as handle:
        if fmt == "json":
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in rows)


def window_rows(scored: list[FileScores], nb_samp: int, hop: int) -> list[dict]:
    rows = []
    for result in scored:
        n_samples = round(result.duration_s * SAMPLE_RATE)
        for number, (start, score) in enumerate(zip(window_starts(n_samples, nb_samp, hop), result.windows)):
            rows.append({"path": result.path, "window": number, "start_s": round(start / SAMPLE_RATE, 3),
                         "end_s": round(min(start + nb_samp, n_samples) / SAMPLE_RATE, 3),
                         "score": round(score, 6)})
    return rows


# ---------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON config of the model (as for main.py)")
    parser.add_argument("--test_dir", type=Path, help="folder of audio files, searched recursively")
    parser.add_argument("--output_file", type=Path, default=Path("scores.tsv"), help="default: scores.tsv")
    parser.add_argument("--errors_file", type=Path,
                        help="files that could not be scored (default: <output_file>.errors.tsv)")
    parser.add_argument("--format", choices=["tsv", "json"], default="tsv", help="json: one object per line")
    parser.add_argument("--weights", type=Path, help="state dict to score with (default: the config's model_path)")
    parser.add_argument("--offline", action="store_true", help="never download missing official weights")
    parser.add_argument("--batch_size", type=int, help="windows per forward pass (default: the config's)")
    parser.add_argument("--hop", type=int, help="samples between windows (default: eval_hop or half a window)")
    parser.add_argument("--aggregate", choices=sorted(AGGREGATES), default="mean",
                        help="how window scores make a file score (default: mean)")
    parser.add_argument("--window_scores", type=Path, help="also write every window's score to this file")
    parser.add_argument("--threshold", type=float,
                        help="decision threshold on the score (default: the calibrated one stored "
                             "with the weights, else 0)")
    parser.add_argument("--calibrate", type=Path, metavar="LABELS",
                        help="labels TSV (path/file, key) for the scored files: store their EER "
                             "threshold with the weights and use it")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--eager", action="store_true", help="plain eager fp32 model on CPU (no fusion)")
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default: torch's)")
    parser.add_argument("--num_workers", type=int, help="audio-decoding processes (default: the config's)")
    parser.add_argument("--export-onnx", "--export_onnx", dest="export_onnx", type=Path, metavar="PATH",
                        help="export the model to ONNX and exit")
    parser.add_argument("--onnx", type=Path, metavar="PATH", help="score with this ONNX model (onnxruntime)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.export_onnx and not args.test_dir:
        parser.error("--test_dir is required (or --export-onnx PATH)")
    for name in ("batch_size", "hop", "threads", "num_workers"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "num_workers" else 1):
            parser.error(f"--{name} must be positive")
    return args


def resolve_weights(args: argparse.Namespace, config: dict) -> Path:
    """The weights file, downloaded first when it is a missing official checkpoint."""
    if args.weights is None and not config.get("model_path"):
        raise ConfigError("no weights: pass --weights PATH or set model_path in the config")
    weights = args.weights or Path(config["model_path"])
    entry = download_weights.entry_for_path(weights)
    if weights.is_file() or entry is None:
        return weights
    command = f"python download_weights.py --model {entry.name} --output_dir {weights.parent}"
    if args.offline:
        raise ConfigError(f"model weights not found: {weights} (--offline: fetch them with `{command}`)")
    tqdm.write(f"{weights} not found: downloading the official {entry.name} weights from {entry.url}")
    try:
        download_weights.fetch_weights(entry, weights, progress=not args.no_progress)
    except download_weights.DownloadError as err:
        raise ConfigError(f"{err} (or run `{command}` later)") from None
    tqdm.write(f"saved {weights} (sha256 verified)")
    return weights


def load_model(args: argparse.Namespace, config: dict, device: torch.device) -> nn.Module:
    model = build_model(config["model_config"]).to(device)
    load_weights(model, resolve_weights(args, config), device)
    return model.eval()


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.threads and (args.eager or args.export_onnx):
        torch.set_num_threads(args.threads)
    nb_samp = config["model_config"].get("nb_samp", NB_SAMP)

    if args.export_onnx:
        model = load_model(args, config, torch.device("cpu"))
        difference = export_onnx(model, args.export_onnx, nb_samp)
        check = "" if difference is None else f"; onnxruntime vs PyTorch: max |logit difference| {difference:.2e}"
        print(f"exported {config['model_config']['architecture']} to {args.export_onnx} "
              f"(input 'waveform' (batch, {nb_samp}), output 'logits'){check}")
        weights_threshold = threshold_file(args.weights or Path(config["model_path"]))
        if weights_threshold.is_file():
            threshold_file(args.export_onnx).write_text(weights_threshold.read_text())
        return 0

    files = find_audio_files(args.test_dir)
    if args.onnx:
        forward, nb_samp = onnx_forward(args.onnx, args.threads)
        model_file = args.onnx
        backend = "onnxruntime"
    else:
        device = select_device(args.device)
        model = load_model(args, config, device)
        if device.type == "cpu" and not args.eager:
            forward = threaded_cpu_forward(optimise_for_cpu(model), args.threads or torch.get_num_threads())
        else:
            forward = torch_forward(model, device)
        model_file = args.weights or Path(config["model_path"])
        backend = f"PyTorch {'eager' if args.eager or device.type != 'cpu' else 'optimised'} on {device}"
    hop = args.hop or config.get("eval_hop") or nb_samp // 2
    batch_size = args.batch_size or config["batch_size"]
    num_workers = args.num_workers if args.num_workers is not None else config.get("num_workers", default_num_workers())
    tqdm.write(f"scoring {len(files)} file(s) under {args.test_dir} with {model_file} ({backend}), "
               f"{nb_samp}-sample windows every {hop} samples")

    run_result = score_files(args.test_dir, files, forward, nb_samp, hop, batch_size, num_workers,
                             progress=not args.no_progress)
    threshold, source = args.threshold, "--threshold"
    if args.calibrate:
        file_scores = {r.path: file_score(r, args.aggregate) for r in run_result.scored}
        calibration = calibrate(file_scores, read_labels(args.calibrate), args.calibrate)
        threshold_file(model_file).write_text(json.dumps(calibration, indent=2) + "\n")
        tqdm.write(f"calibrated threshold {calibration['threshold']:.6f} (EER {calibration['eer_percent']:.2f} % "
                   f"on {calibration['n_bonafide']} bona fide / {calibration['n_spoof']} spoof files), "
                   f"stored in {threshold_file(model_file)}")
        if threshold is None:
            threshold, source = calibration["threshold"], "calibrated now"
    if threshold is None:
        threshold, source = stored_threshold(model_file), str(threshold_file(model_file))
    if threshold is None:
        threshold, source = 0.0, "default"

    rows = output_rows(run_result.scored, args.aggregate, threshold)
    write_rows(args.output_file, rows, OUTPUT_COLUMNS, args.format)
    errors_file = args.errors_file or args.output_file.with_name(args.output_file.stem + ".errors.tsv")
    write_rows(errors_file, [{"path": p, "reason": r} for p, r in run_result.errors], ("path", "reason"), "tsv")
    if args.window_scores:
        write_rows(args.window_scores, window_rows(run_result.scored, nb_samp, hop),
                   ("path", "window", "start_s", "end_s", "score"), args.format)

    audio_s = sum(r.duration_s for r in run_result.scored)
    seconds = run_result.seconds
    tqdm.write(f"scored {len(rows)} file(s), {run_result.n_windows} window(s), {audio_s:.1f} s of audio in "
               f"{seconds:.1f} s ({len(files) / seconds:.2f} files/s, real-time factor {seconds / max(audio_s, 1e-9):.3f}); "
               f"threshold {threshold:g} ({source})")
    tqdm.write(f"scores: {args.output_file}")
    if run_result.errors:
        tqdm.write(f"{len(run_result.errors)} file(s) could not be scored, listed in {errors_file}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

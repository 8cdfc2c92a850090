"""Scoring a folder of audio with a countermeasure, as ``inference.py`` runs it: weights (fetched
when a missing official checkpoint), the scoring backend (optimised CPU, eager, CUDA or ONNX),
file scores, decisions against a threshold calibrated on labelled files, and the output files.

A file's score is the aggregate (mean by default) of its window scores, each the bona fide minus
the spoof logit, so it reads as log-odds: ``p_bonafide`` is its sigmoid.
"""
from __future__ import annotations

import argparse
import codecs
import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from data_utils import NB_SAMP, SAMPLE_RATE, SkipReport, Trial, default_num_workers, find_audio_files, window_starts
from emospoof.augment.preprocess import build_preprocess
from emospoof.cm.config import load_config
from emospoof.cm.emotion_calibrated import calibrated_scores, covariates_of, read_calibration
from emospoof.cm.emotion_inputs import emotion_inputs, takes_utterance_emotion
from emospoof.cm.thresholds import run_threshold
from emospoof.core.checkpoint import load_weights, weights_file
from emospoof.core.config import ConfigError, str_to_bool
from emospoof.core.labels import BONAFIDE, CM_KEYS, SPOOF, cm_scores
from emospoof.downloads.http import DownloadError
from emospoof.downloads.registry import entry_for_path, fetch_weights
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.operating_point import accepted
from emospoof.scoring.onnx import export_onnx, onnx_forward
from emospoof.scoring.windows import ScoringRun, score_windows, scoring_forward
from emospoof.training.acceleration import resolve_precision, set_tf32
from models import build_model
from utils import select_device

OUTPUT_COLUMNS = ("path", "score", "p_bonafide", "decision", "duration_s")


@dataclass
class FileScores:
    path: str
    duration_s: float
    windows: list[float]


def file_results(run: ScoringRun) -> list[FileScores]:
    """Each scored file's window scores (bona fide minus spoof logit), sorted by path."""
    return sorted((FileScores(utt_id, run.durations[utt_id],
                              cm_scores(outputs).astype(np.float64).tolist())
                   for utt_id, outputs in run.outputs.items()), key=lambda r: r.path)


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
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # the mark some editors write is not part of the header
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
    columns = reader.fieldnames or []
    name = next((c for c in ("path", "file") if c in columns), None)
    if name is None or "key" not in columns:
        raise ConfigError(f"{path}: expected a header with 'path' (or 'file') and 'key' columns")
    labels = {}
    for row in reader:
        if row["key"] not in CM_KEYS:
            raise ConfigError(f"{path}:{reader.line_num}: key must be bonafide or spoof, got {row['key']!r}")
        labels[row[name]] = row["key"]
    return labels


def calibrate(scores: dict[str, float], labels: dict[str, str], labels_path: Path) -> dict:
    """The equal-error-rate threshold of the labelled files' scores."""
    bonafide = [s for p, s in scores.items() if labels.get(p) == BONAFIDE]
    spoof = [s for p, s in scores.items() if labels.get(p) == SPOOF]
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


def output_rows(scored: list[FileScores], scores: dict[str, float], threshold: float) -> list[dict]:
    """One row per scored file: its score (rounded as written), p_bonafide, the decision at the
    threshold (``metrics.operating_point.accepted``: bona fide above it) and its duration."""
    rows = []
    for result in scored:
        score = round(scores[result.path], 6)
        rows.append({"path": result.path, "score": score, "p_bonafide": float(f"{sigmoid(score):.6g}"),
                     "decision": BONAFIDE if accepted(score, threshold) else SPOOF,
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


def resolve_weights(args: argparse.Namespace, config: dict) -> Path:
    """The weights file, downloaded first when it is a missing official checkpoint."""
    if args.weights is None and not config.get("model_path"):
        raise ConfigError("no weights: pass --weights PATH or set model_path in the config")
    weights = args.weights or Path(config["model_path"])
    entry = entry_for_path(weights)
    if weights.is_file() or entry is None:
        return weights
    command = f"python download_weights.py --model {entry.name} --output_dir {weights.parent}"
    if args.offline:
        raise ConfigError(f"model weights not found: {weights} (--offline: fetch them with `{command}`)")
    tqdm.write(f"{weights} not found: downloading the official {entry.name} weights from {entry.url}")
    try:
        fetch_weights(entry, weights, progress=not args.no_progress)
    except DownloadError as err:
        raise ConfigError(f"{err} (or run `{command}` later)") from None
    tqdm.write(f"saved {weights} (sha256 verified)")
    return weights


def load_model(args: argparse.Namespace, config: dict, device: torch.device) -> nn.Module:
    model = build_model(config["model_config"]).to(device)
    load_weights(model, resolve_weights(args, config), device)
    return model.eval()


@dataclass
class Setting:
    """How the files are scored: the config, the weights, the windows, the preprocessing, the
    precision and compilation, and the threshold when one comes with them (a run's dev EER
    threshold)."""

    config: dict
    weights: Path | None
    mode: str
    preprocess: str | None
    precision: str | None
    compile: bool
    threshold: tuple[float, str] | None = None


def scoring_setting(args: argparse.Namespace) -> Setting:
    """``--run``: the run's config, final weights, eval windows (``eval_mode``), preprocessing,
    precision, compilation and dev EER threshold -- what ``main.py --eval`` applied to the run, so
    the decisions agree (options given on the command line win); otherwise the config given,
    overlapping windows over each whole file, the options, and no threshold yet."""
    if args.run is None:
        config = load_config(args.config)
        return Setting(config, args.weights, "full", args.preprocess or config.get("preprocess"), args.precision,
                       args.compile)
    config = load_config(args.run / "config.conf")
    weights = weights_file(args.run / "weights", "final")
    if not weights.is_file():
        raise ConfigError(f"--run: {args.run} has no final weights ({weights}); is the run finished?")
    needs_threshold = args.threshold is None and not (args.emotion_calibrated or args.export_onnx)
    return Setting(config, weights, config.get("eval_mode", "first"), args.preprocess or config.get("preprocess"),
                   args.precision or config.get("precision"),
                   args.compile or str_to_bool(config.get("compile", False), "compile"),
                   run_threshold(args.run) if needs_threshold else None)


def emotion_calibrated(args: argparse.Namespace, setting: Setting, trials: list[Trial], scores: dict[str, float],
                       device: torch.device) -> tuple[dict[str, float], tuple[float, str]]:
    """The run's emotion-calibrated scores of the files (``--emotion_calibrated``) and its dev threshold."""
    calibration, section, threshold, path = read_calibration(args.run)
    covariates = covariates_of(section, trials, setting.config, device, SkipReport(tqdm.write),
                               build_preprocess(setting.preprocess))
    return calibrated_scores(calibration, scores, covariates), (threshold, f"emotion-calibrated dev EER ({path})")


def run(args: argparse.Namespace) -> int:
    """``inference.py``: export to ONNX, or score the folder and write the output files; the exit
    code is 0 when every file was scored and 1 when some could not be."""
    setting = scoring_setting(args)
    config = setting.config
    args.weights = args.weights or setting.weights
    if args.threads and args.export_onnx:
        torch.set_num_threads(args.threads)
    nb_samp = config["model_config"].get("nb_samp", NB_SAMP)

    if args.export_onnx:
        model = load_model(args, config, torch.device("cpu"))
        if takes_utterance_emotion(model):
            raise ConfigError("ONNX export: this model is conditioned on the emotion of the whole utterance "
                              "(emotion_source 'utterance'), computed per file outside the graph; export a model "
                              "with emotion_source 'window', or score it with inference.py in PyTorch")
        difference = export_onnx(model, args.export_onnx, nb_samp)
        check = "" if difference is None else f"; onnxruntime vs PyTorch: max |logit difference| {difference:.2e}"
        print(f"exported {config['model_config']['architecture']} to {args.export_onnx} "
              f"(input 'waveform' (batch, {nb_samp}), output 'logits'){check}")
        weights_threshold = threshold_file(args.weights or Path(config["model_path"]))
        if weights_threshold.is_file():
            threshold_file(args.export_onnx).write_text(weights_threshold.read_text())
        return 0

    files = find_audio_files(args.test_dir)
    labels = read_labels(args.calibrate) if args.calibrate else None  # before scoring: a bad file stops at once
    trials = [Trial(path.as_posix(), args.test_dir / path, -1) for path in files]
    preprocess = build_preprocess(setting.preprocess)
    skips = SkipReport(tqdm.write)
    inputs, device = None, select_device(args.device)
    if args.onnx:
        forward, nb_samp = onnx_forward(args.onnx, args.threads)
        model_file = args.onnx
        backend = "onnxruntime"
    else:
        precision = resolve_precision(setting.precision, device)
        set_tf32(precision)
        model = load_model(args, config, device)
        inputs = emotion_inputs(model, trials, config, device, skips, preprocess)
        if args.threads:
            torch.set_num_threads(args.threads)
        forward, backend = scoring_forward(model, device, precision, setting.compile, threads=torch.get_num_threads(),
                                           fuse=not args.eager)
        model_file = args.weights or Path(config["model_path"])
    hop = args.hop or config.get("eval_hop") or nb_samp // 2
    batch_size = args.batch_size or config["batch_size"]
    num_workers = args.num_workers if args.num_workers is not None else config.get("num_workers", default_num_workers())
    windows = (f"{nb_samp}-sample windows every {hop} samples" if setting.mode == "full"
               else f"the first {nb_samp} samples")
    tqdm.write(f"scoring {len(files)} file(s) under {args.test_dir} with {model_file} ({backend}), {windows}"
               f"{', ' + setting.preprocess if setting.preprocess not in (None, 'none') else ''}")
    run_result = score_windows(trials, forward, nb_samp, setting.mode, hop, batch_size, num_workers, skips,
                               progress=not args.no_progress, reject_silent=True, preprocess=preprocess,
                               utterance_inputs=inputs)
    scored = file_results(run_result)
    scores = {r.path: file_score(r, args.aggregate) for r in scored}
    errors = sorted((trial.utt_id, reason) for trial, reason in run_result.errors)
    if args.emotion_calibrated:
        scores, setting.threshold = emotion_calibrated(args, setting, trials, scores, device)
        scored = [r for r in scored if r.path in scores]
    threshold, source = args.threshold, "--threshold"
    if args.calibrate:
        calibration = calibrate(scores, labels, args.calibrate)
        threshold_file(model_file).write_text(json.dumps(calibration, indent=2) + "\n")
        tqdm.write(f"calibrated threshold {calibration['threshold']:.6f} (EER {calibration['eer_percent']:.2f} % "
                   f"on {calibration['n_bonafide']} bona fide / {calibration['n_spoof']} spoof files), "
                   f"stored in {threshold_file(model_file)}")
        if threshold is None:
            threshold, source = calibration["threshold"], "calibrated now"
    if threshold is None and setting.threshold is not None:
        threshold, source = setting.threshold
    if threshold is None:
        threshold, source = stored_threshold(model_file), str(threshold_file(model_file))
    if threshold is None:
        threshold, source = 0.0, "default"

    rows = output_rows(scored, scores, threshold)
    write_rows(args.output_file, rows, OUTPUT_COLUMNS, args.format)
    errors_file = args.errors_file or args.output_file.with_name(args.output_file.stem + ".errors.tsv")
    write_rows(errors_file, [{"path": p, "reason": r} for p, r in errors], ("path", "reason"), "tsv")
    if args.window_scores:
        write_rows(args.window_scores, window_rows(scored, nb_samp, hop),
                   ("path", "window", "start_s", "end_s", "score"), args.format)

    audio_s = sum(r.duration_s for r in scored)
    seconds = run_result.seconds
    tqdm.write(f"scored {len(rows)} file(s), {run_result.n_windows} window(s), {audio_s:.1f} s of audio in "
               f"{seconds:.1f} s ({len(files) / seconds:.2f} files/s, real-time factor {seconds / max(audio_s, 1e-9):.3f}); "
               f"threshold {threshold:g} ({source})")
    tqdm.write(f"scores: {args.output_file}")
    if errors:
        tqdm.write(f"{len(errors)} file(s) could not be scored, listed in {errors_file}")
        return 1
    return 0

"""Training, evaluating and applying the speech-emotion-recognition (SER) model of the emotion
branch, as ``train_ser.py`` runs it.

Fine-tuning follows the usual wav2vec 2.0 recipe (Baevski et al., NeurIPS 2020; Pepino et al.,
Interspeech 2021 for emotion): frozen convolutional feature encoder, mean-pooled transformer
output, optional SpecAugment-style time masking (Park et al., Interspeech 2019), class-weighted
cross-entropy, early stopping on dev macro-F1. The training loop is ``engine.fit``. The trained
model is a Hugging Face directory that ``models.ser.SERBranch`` loads with ``"backend": "hf"``.
The eGeMAPS + random-forest baseline is in ``ser_egemaps``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import distributed
from acceleration import set_tf32
from checkpoint import load_checkpoint
from config import ConfigError, check_keys, is_number, read_config, str_to_bool
from data_utils import SAMPLE_RATE, Batch, SkipReport, Trial, TrialDataset, find_audio_files, make_loader
from engine import (CURVES_PNG, METRICS_CSV, TRAINING_KEYS, StepLoss, TrainSettings, Validation, apply_overrides,
                    create_run, fit, settings_summary, train_settings, validate_training_keys,
                    weighted_cross_entropy)
from models.hf_audio import load_hf_audio_model, prepare_waveform, save_with_extractor, tiny_audio_config, waveform_settings
from scoring import score_windows, torch_forward
from ser_data import RAVDESS_EMOTIONS, class_names, class_weights, make_splits, read_ravdess
from ser_egemaps import run_egemaps_rf
from reports import plot_training_curves
from ser_report import classification_report, print_report, write_report
from utils import OPTIM_KEYS, create_optimizer, seed_everything, select_device, trainable_parameters

BACKENDS = ("hf", "egemaps_rf")
COMMON_KEYS = {"backend", "database_path", "split", "train_actors", "dev_actors", "test_actors",
               "test_fraction", "dev_fraction", "emotion_map", "calm", "model_path", "num_workers"}
HF_KEYS = {"ser_path", "scratch", "batch_size", "num_epochs", "optim_config", "crop_seconds",
           "freeze_feature_encoder", "freeze_layers", "freeze_epochs", "class_weights", "mask_time_prob",
           "noise_snr_db", "gain_db", "patience"} | TRAINING_KEYS
# Fields of a randomly initialised model built from a config (``models.ser.tiny_audio_config``).
SCRATCH_KEYS = {"kind", "hidden_size", "layers", "num_attention_heads", "intermediate_size", "conv_dim",
                "conv_kernel", "conv_stride"}
RF_KEYS = {"n_estimators", "min_samples_leaf", "class_weights", "feature_cache"}
MODEL_DIR = "model"


def validate_ser_training_config(config: dict) -> None:
    """Every key and value problem is one ConfigError naming the key."""
    backend = config.get("backend")
    if backend not in BACKENDS:
        raise ConfigError(f"config key 'backend': expected one of {', '.join(BACKENDS)}, got {backend!r}")
    check_keys(config, COMMON_KEYS | (HF_KEYS if backend == "hf" else RF_KEYS), "")
    if "database_path" not in config:
        raise ConfigError("config is missing the required key 'database_path'")
    split = config.get("split", "actor")
    if split not in ("actor", "random"):
        raise ConfigError(f"config key 'split': expected 'actor' or 'random', got {split!r}")
    if split == "actor":
        seen: dict[int, str] = {}
        for key in ("train_actors", "dev_actors", "test_actors"):
            actors = config.get(key)
            if not (isinstance(actors, list) and actors and all(isinstance(a, int) and 1 <= a <= 99 for a in actors)):
                raise ConfigError(f"config key '{key}': expected a non-empty list of actor numbers, got {actors!r}")
            for actor in actors:
                if actor in seen:
                    raise ConfigError(f"config key '{key}': actor {actor} is also in '{seen[actor]}'")
                seen[actor] = key
    for key, default in (("test_fraction", 0.2), ("dev_fraction", 0.1)):
        if not (isinstance(config.get(key, default), (int, float)) and 0 < config.get(key, default) < 0.5):
            raise ConfigError(f"config key '{key}': expected a fraction between 0 and 0.5")
    emotion_map = config.get("emotion_map", "none")
    if isinstance(emotion_map, dict):
        if not emotion_map or not set(emotion_map) <= set(RAVDESS_EMOTIONS) or not all(
                isinstance(name, str) and name for name in emotion_map.values()):
            raise ConfigError(f"config key 'emotion_map': a mapping must send RAVDESS emotions "
                              f"({', '.join(RAVDESS_EMOTIONS)}) to class names, got {emotion_map!r}")
    elif emotion_map not in ("none", "tts5"):
        raise ConfigError(f"config key 'emotion_map': expected 'none' (8 RAVDESS emotions), 'tts5' or a "
                          f"mapping {{RAVDESS emotion: class}}, got {emotion_map!r}")
    if config.get("calm", "neutral") not in ("neutral", "drop"):
        raise ConfigError(f"config key 'calm': expected 'neutral' or 'drop', got {config['calm']!r}")
    str_to_bool(config.get("class_weights", True), "class_weights")
    if backend == "hf":
        validate_hf_keys(config)


def validate_hf_keys(config: dict) -> None:
    for key in ("batch_size", "num_epochs", "optim_config"):
        if key not in config:
            raise ConfigError(f"config is missing the required key '{key}'")
    if ("ser_path" in config) == ("scratch" in config):
        raise ConfigError("config: give exactly one of 'ser_path' (checkpoint to fine-tune) and 'scratch' "
                          "(random model from a config)")
    if "scratch" in config:
        scratch = config["scratch"]
        if not isinstance(scratch, dict):
            raise ConfigError("config key 'scratch': expected an object such as {\"hidden_size\": 64, \"layers\": 2}")
        check_keys(scratch, SCRATCH_KEYS, "scratch.")
        if scratch.get("kind", "wav2vec2") not in ("wav2vec2", "hubert", "wavlm"):
            raise ConfigError(f"config key 'scratch.kind': expected wav2vec2, hubert or wavlm, got {scratch['kind']!r}")
    # ssl_lr (a second learning rate for models.ssl encoders) has no meaning here: one model, one rate.
    check_keys(config["optim_config"], OPTIM_KEYS - {"ssl_lr"}, "optim_config.")
    validate_training_keys(config)
    str_to_bool(config.get("freeze_feature_encoder", True), "freeze_feature_encoder")
    for key in ("noise_snr_db", "gain_db"):
        value = config.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 2 and all(map(is_number, value))
                                      and value[0] <= value[1]):
            raise ConfigError(f"config key '{key}': expected [low, high] or null, got {value!r}")
    mask_time_prob = config.get("mask_time_prob", 0.0)
    if not (is_number(mask_time_prob) and 0 <= mask_time_prob < 1):
        raise ConfigError(f"config key 'mask_time_prob': expected a probability in [0, 1), got {mask_time_prob!r}")


def load_ser_config(path: str | Path) -> dict:
    return read_config(path, validate_ser_training_config)


def build_scratch_model(scratch: dict, names: tuple[str, ...], path: Path, seed: int) -> Path:
    """Write a randomly initialised audio classifier for ``names`` (wav2vec 2.0 / HuBERT / WavLM,
    sizes from ``scratch``) with a 16 kHz normalising feature extractor to ``path``."""
    from transformers import AutoModelForAudioClassification

    fields = {key: tuple(value) if isinstance(value, list) else value for key, value in scratch.items()}
    kind = fields.pop("kind", "wav2vec2")
    torch.manual_seed(seed)
    model_config = tiny_audio_config(kind, fields.pop("hidden_size", 32), fields.pop("layers", 2),
                                     num_labels=len(names), id2label=dict(enumerate(names)),
                                     label2id={name: i for i, name in enumerate(names)}, **fields)
    return save_with_extractor(AutoModelForAudioClassification.from_config(model_config), path)


def load_classifier(path: str | Path, names: tuple[str, ...] | None = None, **overrides):
    """(model, feature extractor) of a Hugging Face audio checkpoint. With ``names``, the
    classification head is for those classes (a fresh one when the checkpoint's labels differ or
    it is a bare encoder); ``overrides`` replace fields of its config (e.g. ``mask_time_prob``)."""
    from transformers import AutoModelForAudioClassification

    if names is not None:
        overrides = {"num_labels": len(names), "ignore_mismatched_sizes": True, "id2label": dict(enumerate(names)),
                     "label2id": {n: i for i, n in enumerate(names)}, **overrides}
    return load_hf_audio_model(str(path), AutoModelForAudioClassification, "SER model", **overrides)


def labels_of(model: nn.Module) -> tuple[str, ...]:
    return tuple(model.config.id2label[i] for i in range(model.config.num_labels))


def model_input(model: nn.Module, extractor, wave: torch.Tensor) -> torch.Tensor:
    """16 kHz waveforms -> the checkpoint's input values, exactly as ``SERBranch`` prepares them."""
    values = prepare_waveform(wave, *waveform_settings(extractor))
    return values.to(next(model.parameters()).device)


def augment(wave: torch.Tensor, config: dict) -> torch.Tensor:
    """Random gain (dB) and white noise at a random SNR (dB), per clip, from the torch RNG.
    Gain only matters for checkpoints that do not normalise their input (``do_normalize``)."""
    if config.get("gain_db"):
        low, high = config["gain_db"]
        wave = wave * 10 ** ((low + (high - low) * torch.rand(len(wave), 1, device=wave.device)) / 20)
    if config.get("noise_snr_db"):
        low, high = config["noise_snr_db"]
        snr = low + (high - low) * torch.rand(len(wave), 1, device=wave.device)
        power = wave.pow(2).mean(dim=1, keepdim=True)
        wave = wave + torch.randn_like(wave) * torch.sqrt(power / 10 ** (snr / 10))
    return wave


def set_lower_layers_trainable(model: nn.Module, n_layers: int, trainable: bool) -> None:
    for layer in model.base_model.encoder.layers[:n_layers]:
        layer.requires_grad_(trainable)


def save_model_dir(model: nn.Module, extractor, path: Path) -> None:
    """The Hugging Face directory the emotion branch loads: config (with id2label), safetensors
    weights and the feature extractor's settings."""
    model.save_pretrained(path, safe_serialization=True)
    extractor.save_pretrained(path)


def clip_probabilities(model: nn.Module, extractor, trials: list[Trial], crop: int, batch_size: int,
                       num_workers: int, skipped: SkipReport, class_weight: torch.Tensor | None = None,
                       precision: str | None = None, compile_model: bool = False
                       ) -> tuple[np.ndarray, list[Trial], float]:
    """Class probabilities of each clip (mean over windows of ``crop`` samples, 50 % overlap),
    the trials that loaded, and the (class-weighted) cross-entropy of those clip probabilities;
    scored in ``precision`` (None: the device's default), compiled with ``compile_model``."""
    model.eval()
    device = next(model.parameters()).device

    def logits_of(net, x: torch.Tensor) -> torch.Tensor:
        return net(input_values=model_input(model, extractor, x)).logits

    forward = torch_forward(model, device, logits_of, precision, compile_model)
    run = score_windows(trials, forward, crop, "full", crop // 2, batch_size, num_workers, skipped, desc="evaluate")
    kept = [t for t in trials if t.utt_id in run.outputs]
    if not kept:
        return np.zeros((0, 0)), kept, float("nan")
    stacked = torch.stack([torch.from_numpy(run.outputs[t.utt_id]).float().softmax(dim=-1).mean(dim=0) for t in kept])
    targets = torch.tensor([t.label for t in kept])
    weight = None if class_weight is None else class_weight.cpu()
    loss = F.nll_loss(stacked.clamp_min(1e-12).log(), targets, weight=weight).item()
    return stacked.numpy(), kept, loss


class SERTask:
    """The engine's task for fine-tuning an audio classifier: class-weighted cross-entropy on
    augmented crops, lower transformer layers frozen for the first epochs, dev macro-F1 for selection."""

    def __init__(self, model: nn.Module, extractor, config: dict, splits: dict[str, list[Trial]], run_dir: Path,
                 weight: torch.Tensor | None, skipped: SkipReport) -> None:
        self.model, self.extractor, self.config, self.splits, self.run_dir = model, extractor, config, splits, run_dir
        self.weight, self.skipped = weight, skipped
        self.names = class_names(config)
        self.crop = round(config.get("crop_seconds", 3.0) * SAMPLE_RATE)

    def loss(self, net: nn.Module, batch: Batch) -> StepLoss:
        logits = net(input_values=model_input(self.model, self.extractor, augment(batch.x, self.config))).logits
        return weighted_cross_entropy(logits, batch.labels, self.weight)

    def start_epoch(self, epoch: int) -> None:
        set_lower_layers_trainable(self.model, self.config.get("freeze_layers", 0),
                                   epoch > self.config.get("freeze_epochs", 0))

    def validate(self, epoch: int) -> Validation:
        probabilities, kept, dev_loss = clip_probabilities(
            self.model, self.extractor, self.splits["dev"], self.crop, self.config["batch_size"],
            self.config.get("num_workers", 0), self.skipped, self.weight, self.config.get("precision"),
            str_to_bool(self.config.get("compile", False)))
        dev = classification_report([t.label for t in kept], probabilities.argmax(axis=1).tolist(), self.names)
        return Validation({"dev_loss": dev_loss, "dev_accuracy": dev["accuracy"], "dev_macro_f1": dev["macro_f1"]},
                          dev["macro_f1"], f"dev accuracy {100 * dev['accuracy']:.1f} %, dev macro-F1 {dev['macro_f1']:.3f}")

    def improves(self, value: float, best: float | None) -> bool:
        return best is None or value > best

    def new_best(self, epoch: int, row: dict) -> None:
        if distributed.is_main():
            save_model_dir(self.model, self.extractor, self.run_dir / MODEL_DIR)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def train_hf(config: dict, splits: dict[str, list[Trial]], run_dir: Path, seed: int, device: torch.device,
             resume: dict | None, settings: TrainSettings = TrainSettings()) -> tuple[nn.Module, object]:
    """Fine-tune with early stopping on dev macro-F1; the best epoch is saved to ``run_dir/model``
    and returned with the feature extractor. A checkpoint after every epoch makes the run resumable."""
    names = class_names(config)
    if "scratch" in config:  # a randomly initialised model built from a config (no download)
        start = distributed.on_main(build_scratch_model, config["scratch"], names, run_dir / "init", seed)
    else:
        start = config["ser_path"]
    model, extractor = load_classifier(start, names, mask_time_prob=config.get("mask_time_prob", 0.05))
    model.to(device)
    if str_to_bool(config.get("freeze_feature_encoder", True)):
        model.freeze_feature_encoder()
    crop = round(config.get("crop_seconds", 3.0) * SAMPLE_RATE)
    batch_size = config["batch_size"]
    generator = torch.Generator().manual_seed(seed)
    train_loader = make_loader(TrialDataset(splits["train"], crop, "train"), batch_size, True,
                               config.get("num_workers", 0), seed, distributed.rank(), distributed.world_size(),
                               generator)
    steps = -(-len(train_loader) // settings.grad_accum_steps) * config["num_epochs"]
    optimizer, scheduler = create_optimizer(trainable_parameters(model), config["optim_config"], steps)
    weight = (class_weights(splits["train"], len(names)).to(device)
              if str_to_bool(config.get("class_weights", True)) else None)
    skipped = SkipReport(tqdm.write)
    task = SERTask(model, extractor, config, splits, run_dir, weight, skipped)
    fit(task, train_loader, optimizer, scheduler, run_dir=run_dir, epochs=config["num_epochs"], seed=seed,
        generator=generator, device=device, skips=skipped, settings=settings,
        patience=config.get("patience", config["num_epochs"]), resume=resume)
    distributed.barrier()  # the best epoch's directory is written by rank 0
    model.load_state_dict(load_classifier(run_dir / MODEL_DIR)[0].state_dict())  # the best dev epoch
    return model, extractor


def report_hf(model: nn.Module, extractor, config: dict, splits: dict[str, list[Trial]], run_dir: Path,
              extra: dict) -> dict:
    """Score dev and test with ``model`` and write the report (and the curves, from metrics.csv)."""
    names = class_names(config)
    crop = round(config.get("crop_seconds", 3.0) * SAMPLE_RATE)
    skipped = SkipReport(tqdm.write)
    reports, kept_splits = {}, dict(splits)
    for name in ("dev", "test"):
        probabilities, kept, _ = clip_probabilities(model, extractor, splits[name], crop, config["batch_size"],
                                                    config.get("num_workers", 0), skipped, None,
                                                    config.get("precision"), str_to_bool(config.get("compile", False)))
        reports[name] = classification_report([t.label for t in kept], probabilities.argmax(axis=1).tolist(), names)
        kept_splits[name] = kept
    print_report("dev", reports["dev"])
    return write_report(distributed.output_dir(run_dir), config, kept_splits, reports, extra, skipped)


def predict_folder(folder: Path, model_dir: Path, output: Path, crop_seconds: float, device: torch.device,
                   precision: str | None = None) -> int:
    """Write ``output`` (TSV: path relative to ``folder``, then the probability of each class);
    unreadable files are warned about and left out. Returns the number of files that failed."""
    files = find_audio_files(folder, "--predict")
    model, extractor = load_classifier(model_dir)
    model.to(device)
    names = labels_of(model)
    trials = [Trial(path.as_posix(), folder / path, 0) for path in files]
    skipped = SkipReport(lambda message: print(message, file=sys.stderr))
    probabilities, kept, _ = clip_probabilities(model, extractor, trials, round(crop_seconds * SAMPLE_RATE), 8, 0,
                                                skipped, None, precision)
    with open(output, "w") as handle:
        handle.write("\t".join(("path", *names)) + "\n")
        for trial, row in zip(kept, probabilities):
            handle.write("\t".join((trial.utt_id, *(f"{p:.6f}" for p in row))) + "\n")
    print(f"{len(kept)} files -> {output}" + (f" ({len(skipped)} could not be read)" if len(skipped) else ""))
    return len(skipped)


def model_dir_from(args: argparse.Namespace, config: dict) -> Path:
    path = args.model or config.get("model_path")
    if not path:
        raise ConfigError("no trained model: give --model DIR or set 'model_path' in the config")
    if not Path(path).is_dir():
        raise ConfigError(f"model directory not found: {path}")
    return Path(path)


def run(args: argparse.Namespace) -> int:
    """``train_ser.py``: predict, evaluate, or train (new or resumed); returns the exit code.
    Started by torchrun, the processes train (and evaluate) together."""
    device = distributed.init(select_device(args.device))
    try:
        return run_on(args, device)
    finally:
        distributed.shutdown()


def run_on(args: argparse.Namespace, device: torch.device) -> int:
    config = load_ser_config(Path(args.resume) / "config.conf" if args.resume else args.config) \
        if (args.config or args.resume) else {}
    apply_overrides(config, args.precision, args.compile)
    if distributed.world_size() > 1 and (args.predict or config.get("backend") == "egemaps_rf"):
        raise ConfigError("--predict and the egemaps_rf backend run in one process: start them with python, "
                          "not torchrun")
    settings = train_settings(config, device, args.tensorboard)
    set_tf32(settings.precision)
    if args.predict:
        crop = args.crop_seconds or config.get("crop_seconds", 3.0)
        return int(predict_folder(Path(args.predict), model_dir_from(args, config), Path(args.output), crop, device,
                                  config.get("precision")) > 0)

    resume = None
    if args.resume:
        run_dir = Path(args.resume)
        resume = load_checkpoint(run_dir, tqdm.write)
    seed = resume["seed"] if resume else args.seed
    seed_everything(seed)
    splits = make_splits(read_ravdess(config["database_path"]), config, seed)
    tqdm.write(", ".join(f"{name}: {len(trials)} clips" for name, trials in splits.items())
               + f"; classes: {', '.join(class_names(config))}")
    if not args.resume:
        suffix = ("_eval" if args.eval else "") + (f"_{args.comment}" if args.comment else "")
        run_dir = Path(args.output_dir) / f"{Path(args.config).stem}{suffix}"
        create_run(run_dir, config)

    if config["backend"] == "egemaps_rf":
        run_egemaps_rf(config, splits, run_dir, seed, Path(args.output_dir))
        return 0
    if args.eval:
        model_dir = model_dir_from(args, config)
        model, extractor = load_classifier(model_dir)
        if labels_of(model) != class_names(config):
            raise ConfigError(f"{model_dir} was trained for the classes {', '.join(labels_of(model))}, "
                              f"the config's emotion_map gives {', '.join(class_names(config))}")
        metrics = model_dir.parent / METRICS_CSV
        if metrics.is_file() and distributed.is_main():  # the model's own training run: redraw its curves here
            with open(metrics, newline="") as handle:
                plot_training_curves(list(csv.DictReader(handle)), run_dir / CURVES_PNG)
        report_hf(model.to(device), extractor, config, splits, run_dir, {"model": str(model_dir)})
        return 0
    started = time.time()
    model, extractor = train_hf(config, splits, run_dir, seed, device, resume, settings)
    report_hf(model, extractor, config, splits, run_dir,
              {"model": str(run_dir / MODEL_DIR), "training_seconds": round(time.time() - started, 1),
               "training": settings_summary(settings, config["batch_size"])})
    return 0

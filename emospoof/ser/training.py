"""Training, evaluating and applying the speech-emotion-recognition (SER) model of the emotion
branch, as ``train_ser.py`` runs it.

The trained backends (``hf``: wav2vec 2.0-family fine-tuning; ``acrnn``: the ACRNN of Chen et al.,
IEEE SPL 2018, on log-Mel features with deltas) share one task on the one training loop
(``emospoof.training.engine.fit``): class-weighted cross-entropy on random crops with gain and noise augmentation,
early stopping on dev macro-F1, the best dev epoch saved as a directory the emotion branch loads.
Fine-tuning follows the usual wav2vec 2.0 recipe (Baevski et al., NeurIPS 2020; Pepino et al.,
Interspeech 2021 for emotion): frozen convolutional feature encoder, mean-pooled transformer
output, optional SpecAugment-style time masking (Park et al., Interspeech 2019). The eGeMAPS
baselines (random forest, linear probe) are in ``emospoof.ser.egemaps``. Training, evaluation and
prediction run in the config's precision; under torchrun the processes train together.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from data_utils import SAMPLE_RATE, Batch, SkipReport, Trial, TrialDataset, find_audio_files, make_loader
from emospoof.core.checkpoint import load_checkpoint
from emospoof.core.config import ConfigError, str_to_bool
from emospoof.core.errors import InputValueError
from emospoof.reports.plots import plot_training_curves
from emospoof.scoring.windows import score_windows, torch_forward
from emospoof.ser.classifiers import ACRNNClassifier, HFClassifier, load_classifier
from emospoof.ser.config import ACRNN_DIMS, load_ser_config
from emospoof.ser.egemaps import run_egemaps_linear, run_egemaps_rf
from emospoof.ser.ravdess import class_names, class_weights, make_splits, read_ravdess
from emospoof.ser.report import classification_report, print_report, write_report
from emospoof.training import distributed
from emospoof.training.acceleration import set_tf32
from emospoof.training.engine import (CURVES_PNG, METRICS_CSV, StepLoss, TrainSettings, Validation, apply_overrides,
                                      create_run, fit, settings_summary, train_settings, weighted_cross_entropy)
from emospoof.training.optim import create_optimizer
from utils import seed_everything, select_device, trainable_parameters

MODEL_DIR = "model"
Classifier = HFClassifier | ACRNNClassifier


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


class WaveLogits(nn.Module):
    """A classifier as one module from 16 kHz waveforms to logits: what training runs (and DDP
    wraps: the whole computation, classification head included, happens in its forward) and what
    scoring compiles. It owns the classifier's model, so it shares its parameters."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.model, self._classifier = classifier.model, classifier

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self._classifier.logits(wave)


def clip_probabilities(classifier: Classifier, trials: list[Trial], crop: int, batch_size: int, num_workers: int,
                       skipped: SkipReport, class_weight: torch.Tensor | None = None, precision: str | None = None,
                       compile_model: bool = False) -> tuple[np.ndarray, list[Trial], float]:
    """Class probabilities of each clip (mean over windows of ``crop`` samples, 50 % overlap),
    the trials that loaded, and the (class-weighted) cross-entropy of those clip probabilities;
    scored in ``precision`` (None: the device's default), compiled with ``compile_model``."""
    classifier.model.eval()
    device = next(classifier.model.parameters()).device
    forward = torch_forward(WaveLogits(classifier), device, lambda net, x: net(x), precision, compile_model)
    run = score_windows(trials, forward, crop, "full", crop // 2, batch_size, num_workers, skipped, desc="evaluate")
    kept = [t for t in trials if t.utt_id in run.outputs]
    if not kept:
        return np.zeros((0, 0)), kept, float("nan")
    stacked = torch.stack([torch.from_numpy(run.outputs[t.utt_id]).float().softmax(dim=-1).mean(dim=0) for t in kept])
    targets = torch.tensor([t.label for t in kept])
    weight = None if class_weight is None else class_weight.cpu()
    loss = F.nll_loss(stacked.clamp_min(1e-12).log(), targets, weight=weight).item()
    return stacked.numpy(), kept, loss


def split_report(name: str, kept: list[Trial], probabilities: np.ndarray, names: tuple[str, ...]) -> dict:
    """The classification report of the clips of split ``name`` that could be scored (``kept``)."""
    if not kept:
        raise InputValueError(f"no clip of the {name} split could be read")
    return classification_report([t.label for t in kept], probabilities.argmax(axis=1).tolist(), names)


class SERTask:
    """The engine's task for an emotion classifier: class-weighted cross-entropy on augmented
    crops, dev macro-F1 for selection, the best epoch saved to ``run_dir/model``."""

    def __init__(self, classifier: Classifier, config: dict, splits: dict[str, list[Trial]], run_dir: Path,
                 weight: torch.Tensor | None, skipped: SkipReport) -> None:
        self.classifier, self.model, self.train_module = classifier, classifier.model, WaveLogits(classifier)
        self.config, self.splits, self.run_dir, self.weight, self.skipped = config, splits, run_dir, weight, skipped
        self.names = class_names(config)
        self.crop = round(config.get("crop_seconds", 3.0) * SAMPLE_RATE)

    def loss(self, net: nn.Module, batch: Batch) -> StepLoss:
        return weighted_cross_entropy(net(augment(batch.x, self.config)), batch.labels, self.weight)

    def start_epoch(self, epoch: int) -> None:
        self.classifier.start_epoch(epoch, self.config)

    def validate(self, epoch: int) -> Validation:
        probabilities, kept, dev_loss = clip_probabilities(
            self.classifier, self.splits["dev"], self.crop, self.config["batch_size"], self.config.get("num_workers", 0),
            self.skipped, self.weight, self.config.get("precision"), str_to_bool(self.config.get("compile", False)))
        dev = split_report("dev", kept, probabilities, self.names)
        return Validation({"dev_loss": dev_loss, "dev_accuracy": dev["accuracy"], "dev_macro_f1": dev["macro_f1"]},
                          dev["macro_f1"], f"dev accuracy {100 * dev['accuracy']:.1f} %, dev macro-F1 {dev['macro_f1']:.3f}")

    def improves(self, validation: Validation, best: Validation | None) -> bool:
        return best is None or validation.value > best.value

    def new_best(self, epoch: int, row: dict) -> None:
        if distributed.is_main():
            self.classifier.save(self.run_dir / MODEL_DIR)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def initial_classifier(config: dict, run_dir: Path, seed: int) -> Classifier:
    """What training starts from: a checkpoint to fine-tune, a randomly initialised model built from
    ``scratch`` (written to ``run_dir/init``), or a new ACRNN."""
    names = class_names(config)
    if config["backend"] == "acrnn":
        return ACRNNClassifier.build(tuple(config.get("acrnn_dims", ACRNN_DIMS)), names, seed)
    start = (distributed.on_main(HFClassifier.build_scratch, config["scratch"], names, run_dir / "init", seed)
             if "scratch" in config else config["ser_path"])
    return HFClassifier.load(start, names, mask_time_prob=config.get("mask_time_prob", 0.05))


def train_classifier(config: dict, splits: dict[str, list[Trial]], run_dir: Path, seed: int, device: torch.device,
                     resume: dict | None, settings: TrainSettings = TrainSettings()) -> Classifier:
    """Train with early stopping on dev macro-F1 and return the best dev epoch (also saved to
    ``run_dir/model``). A checkpoint after every epoch makes the run resumable."""
    names = class_names(config)
    classifier = initial_classifier(config, run_dir, seed)
    classifier.model.to(device)
    classifier.prepare_training(config)
    crop = round(config.get("crop_seconds", 3.0) * SAMPLE_RATE)
    batch_size = config["batch_size"]
    generator = torch.Generator().manual_seed(seed)
    train_loader = make_loader(TrialDataset(splits["train"], crop, "train"), batch_size, True,
                               config.get("num_workers", 0), seed, distributed.rank(), distributed.world_size(),
                               generator)
    steps = -(-len(train_loader) // settings.grad_accum_steps) * config["num_epochs"]
    optimizer, scheduler = create_optimizer(trainable_parameters(classifier.model), config["optim_config"], steps)
    weight = (class_weights(splits["train"], len(names)).to(device)
              if str_to_bool(config.get("class_weights", True)) else None)
    skipped = SkipReport(tqdm.write)
    task = SERTask(classifier, config, splits, run_dir, weight, skipped)
    fit(task, train_loader, optimizer, scheduler, run_dir=run_dir, epochs=config["num_epochs"], seed=seed,
        generator=generator, device=device, skips=skipped, settings=settings,
        patience=config.get("patience", config["num_epochs"]), resume=resume)
    distributed.barrier()  # the best epoch's directory is written by rank 0
    best = load_classifier(run_dir / MODEL_DIR)  # the best dev epoch
    classifier.model.load_state_dict(best.model.state_dict())
    return classifier


def report_classifier(classifier: Classifier, config: dict, splits: dict[str, list[Trial]], run_dir: Path,
                      extra: dict) -> dict:
    """Score dev and test with ``classifier`` and write the report."""
    names = class_names(config)
    crop = round(config.get("crop_seconds", 3.0) * SAMPLE_RATE)
    skipped = SkipReport(tqdm.write)
    reports, kept_splits = {}, dict(splits)
    for name in ("dev", "test"):
        probabilities, kept, _ = clip_probabilities(classifier, splits[name], crop, config["batch_size"],
                                                    config.get("num_workers", 0), skipped, None,
                                                    config.get("precision"), str_to_bool(config.get("compile", False)))
        reports[name] = split_report(name, kept, probabilities, names)
        kept_splits[name] = kept
    print_report("dev", reports["dev"])
    return write_report(distributed.output_dir(run_dir), config, kept_splits, reports, extra, skipped)


def predict_folder(folder: Path, model_dir: Path, output: Path, crop_seconds: float, device: torch.device,
                   precision: str | None = None) -> int:
    """Write ``output`` (TSV: path relative to ``folder``, then the probability of each class);
    unreadable files are warned about and left out. Returns the number of files that failed."""
    files = find_audio_files(folder, "--predict")
    classifier = load_classifier(model_dir)
    classifier.model.to(device)
    trials = [Trial(path.as_posix(), folder / path, 0) for path in files]
    skipped = SkipReport(lambda message: print(message, file=sys.stderr))
    probabilities, kept, _ = clip_probabilities(classifier, trials, round(crop_seconds * SAMPLE_RATE), 8, 0, skipped,
                                                None, precision)
    with open(output, "w") as handle:
        handle.write("\t".join(("path", *classifier.labels)) + "\n")
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
    if distributed.world_size() > 1 and (args.predict or config.get("backend", "").startswith("egemaps")):
        raise ConfigError("--predict and the egemaps backends run in one process: start them with python, "
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
    if config["backend"] == "egemaps_linear":
        run_egemaps_linear(config, splits, run_dir, Path(args.output_dir))
        return 0
    if args.eval:
        model_dir = model_dir_from(args, config)
        classifier = load_classifier(model_dir)
        if classifier.labels != class_names(config):
            raise ConfigError(f"{model_dir} was trained for the classes {', '.join(classifier.labels)}, "
                              f"the config's emotion_map gives {', '.join(class_names(config))}")
        metrics = model_dir.parent / METRICS_CSV
        if metrics.is_file() and distributed.is_main():  # the model's own training run: redraw its curves here
            with open(metrics, newline="") as handle:
                plot_training_curves(list(csv.DictReader(handle)), run_dir / CURVES_PNG)
        classifier.model.to(device)
        report_classifier(classifier, config, splits, run_dir, {"model": str(model_dir)})
        return 0
    started = time.time()
    classifier = train_classifier(config, splits, run_dir, seed, device, resume, settings)
    report_classifier(classifier, config, splits, run_dir,
                      {"model": str(run_dir / MODEL_DIR), "training_seconds": round(time.time() - started, 1),
                       "training": settings_summary(settings, config["batch_size"])})
    return 0

"""Training, evaluating and applying the speech-emotion-recognition (SER) model of the emotion
branch, as ``train_ser.py`` runs it.

The trained backends (``hf``: wav2vec 2.0-family fine-tuning; ``acrnn``: the ACRNN of Chen et al.,
IEEE SPL 2018, on log-Mel features with deltas) share one task on the one training loop
(``engine.fit``): class-weighted cross-entropy on random crops with gain and noise augmentation,
early stopping on dev macro-F1, the best dev epoch saved as a directory the emotion branch loads.
Fine-tuning follows the usual wav2vec 2.0 recipe (Baevski et al., NeurIPS 2020; Pepino et al.,
Interspeech 2021 for emotion): frozen convolutional feature encoder, mean-pooled transformer
output, optional SpecAugment-style time masking (Park et al., Interspeech 2019). The eGeMAPS
baselines (random forest, linear probe) are in ``ser_egemaps``.
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
from tqdm import tqdm

from checkpoint import load_checkpoint
from config import ConfigError, str_to_bool
from data_utils import SAMPLE_RATE, Batch, SkipReport, Trial, TrialDataset, find_audio_files, make_loader
from engine import METRICS_CSV, Validation, fit, new_run_dir
from scoring import score_windows
from ser_config import ACRNN_DIMS, load_ser_config
from ser_data import class_names, class_weights, make_splits, read_ravdess
from ser_egemaps import run_egemaps_linear, run_egemaps_rf
from ser_models import ACRNNClassifier, HFClassifier, load_classifier
from ser_report import CURVES_PNG, classification_report, plot_curves, print_report, write_report
from utils import create_optimizer, seed_everything, select_device, trainable_parameters

MODEL_DIR = "model"
Classifier = HFClassifier | ACRNNClassifier


def augment(wave: torch.Tensor, config: dict) -> torch.Tensor:
    """Random gain (dB) and white noise at a random SNR (dB), per clip, from the torch RNG.
    Gain only matters for checkpoints that do not normalise their input (``do_normalize``)."""
    if config.get("gain_db"):
        low, high = config["gain_db"]
        wave = wave * 10 ** ((low + (high - low) * torch.rand(len(wave), 1)) / 20)
    if config.get("noise_snr_db"):
        low, high = config["noise_snr_db"]
        snr = low + (high - low) * torch.rand(len(wave), 1)
        power = wave.pow(2).mean(dim=1, keepdim=True)
        wave = wave + torch.randn_like(wave) * torch.sqrt(power / 10 ** (snr / 10))
    return wave


def clip_probabilities(classifier: Classifier, trials: list[Trial], crop: int, batch_size: int, num_workers: int,
                       skipped: SkipReport, class_weight: torch.Tensor | None = None
                       ) -> tuple[np.ndarray, list[Trial], float]:
    """Class probabilities of each clip (mean over windows of ``crop`` samples, 50 % overlap),
    the trials that loaded, and the (class-weighted) cross-entropy of those clip probabilities."""
    classifier.model.eval()

    def forward(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return classifier.logits(x).float().cpu().numpy()

    run = score_windows(trials, forward, crop, "full", crop // 2, batch_size, num_workers, skipped, desc="evaluate")
    kept = [t for t in trials if t.utt_id in run.outputs]
    if not kept:
        return np.zeros((0, 0)), kept, float("nan")
    stacked = torch.stack([torch.from_numpy(run.outputs[t.utt_id]).float().softmax(dim=-1).mean(dim=0) for t in kept])
    targets = torch.tensor([t.label for t in kept])
    loss = F.nll_loss(stacked.clamp_min(1e-12).log(), targets, weight=class_weight).item()
    return stacked.numpy(), kept, loss


class SERTask:
    """The engine's task for an emotion classifier: class-weighted cross-entropy on augmented
    crops, dev macro-F1 for selection, the best epoch saved to ``run_dir/model``."""

    def __init__(self, classifier: Classifier, config: dict, splits: dict[str, list[Trial]], run_dir: Path,
                 weight: torch.Tensor | None, skipped: SkipReport) -> None:
        self.classifier, self.model = classifier, classifier.model
        self.config, self.splits, self.run_dir, self.weight, self.skipped = config, splits, run_dir, weight, skipped
        self.names = class_names(config)
        self.crop = round(config.get("crop_seconds", 3.0) * SAMPLE_RATE)

    def loss(self, batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier.logits(augment(batch.x, self.config))
        weight = None if self.weight is None else self.weight.to(logits.device)
        return F.cross_entropy(logits, batch.labels.to(logits.device), weight=weight), logits

    def start_epoch(self, epoch: int) -> None:
        self.classifier.start_epoch(epoch, self.config)

    def validate(self, epoch: int) -> Validation:
        probabilities, kept, dev_loss = clip_probabilities(
            self.classifier, self.splits["dev"], self.crop, self.config["batch_size"], self.config.get("num_workers", 0),
            self.skipped, self.weight)
        dev = classification_report([t.label for t in kept], probabilities.argmax(axis=1).tolist(), self.names)
        return Validation({"dev_loss": dev_loss, "dev_accuracy": dev["accuracy"], "dev_macro_f1": dev["macro_f1"]},
                          dev["macro_f1"], f"dev accuracy {100 * dev['accuracy']:.1f} %, dev macro-F1 {dev['macro_f1']:.3f}")

    def improves(self, value: float, best: float | None) -> bool:
        return best is None or value > best

    def new_best(self, epoch: int, row: dict) -> None:
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
    start = (HFClassifier.build_scratch(config["scratch"], names, run_dir / "init", seed) if "scratch" in config
             else config["ser_path"])
    return HFClassifier.load(start, names, mask_time_prob=config.get("mask_time_prob", 0.05))


def train_classifier(config: dict, splits: dict[str, list[Trial]], run_dir: Path, seed: int, device: torch.device,
                     resume: dict | None) -> Classifier:
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
                               config.get("num_workers", 0), generator, drop_last=len(splits["train"]) > batch_size)
    optimizer, scheduler = create_optimizer(trainable_parameters(classifier.model), config["optim_config"],
                                            config["num_epochs"] * len(train_loader))
    weight = class_weights(splits["train"], len(names)) if str_to_bool(config.get("class_weights", True)) else None
    skipped = SkipReport(tqdm.write)
    task = SERTask(classifier, config, splits, run_dir, weight, skipped)
    result = fit(task, train_loader, optimizer, scheduler, run_dir=run_dir, epochs=config["num_epochs"], seed=seed,
                 generator=generator, device=device, skips=skipped,
                 patience=config.get("patience", config["num_epochs"]), resume=resume)
    plot_curves(result.rows, run_dir / CURVES_PNG)
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
                                                    config.get("num_workers", 0), skipped)
        reports[name] = classification_report([t.label for t in kept], probabilities.argmax(axis=1).tolist(), names)
        kept_splits[name] = kept
    print_report("dev", reports["dev"])
    return write_report(run_dir, config, kept_splits, reports, extra, skipped)


def predict_folder(folder: Path, model_dir: Path, output: Path, crop_seconds: float, device: torch.device) -> int:
    """Write ``output`` (TSV: path relative to ``folder``, then the probability of each class);
    unreadable files are warned about and left out. Returns the number of files that failed."""
    files = find_audio_files(folder, "--predict")
    classifier = load_classifier(model_dir)
    classifier.model.to(device)
    trials = [Trial(path.as_posix(), folder / path, 0) for path in files]
    skipped = SkipReport(lambda message: print(message, file=sys.stderr))
    probabilities, kept, _ = clip_probabilities(classifier, trials, round(crop_seconds * SAMPLE_RATE), 8, 0, skipped)
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
    """``train_ser.py``: predict, evaluate, or train (new or resumed); returns the exit code."""
    config = load_ser_config(Path(args.resume) / "config.conf" if args.resume else args.config) \
        if (args.config or args.resume) else {}
    device = select_device(args.device)
    if args.predict:
        crop = args.crop_seconds or config.get("crop_seconds", 3.0)
        return int(predict_folder(Path(args.predict), model_dir_from(args, config), Path(args.output), crop, device) > 0)

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
        run_dir = new_run_dir(Path(args.output_dir) / f"{Path(args.config).stem}{suffix}")
        (run_dir / "config.conf").write_text(json.dumps(config, indent=4))

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
        if metrics.is_file():  # the model's own training run: redraw its curves beside the report
            with open(metrics, newline="") as handle:
                plot_curves(list(csv.DictReader(handle)), run_dir / CURVES_PNG)
        classifier.model.to(device)
        report_classifier(classifier, config, splits, run_dir, {"model": str(model_dir)})
        return 0
    started = time.time()
    classifier = train_classifier(config, splits, run_dir, seed, device, resume)
    report_classifier(classifier, config, splits, run_dir,
                      {"model": str(run_dir / MODEL_DIR), "training_seconds": round(time.time() - started, 1)})
    return 0

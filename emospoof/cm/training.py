"""Training a countermeasure on ASVspoof 2019 LA, as ``main.py`` runs it.

The recipe follows the AASIST reference: random crops, class-weighted cross-entropy (config key
``class_weights``, default ``balanced``: each class weighted by the inverse of its share of the
training trials, or of the groups a group-balanced sampler draws; ``reference`` is the AASIST
reference's 0.1 spoof / 0.9 bona fide; with group DRO no class weights, and the key is refused:
``emospoof.cm.group_robust``), Adam with a per-step cosine schedule, and stochastic weight
averaging (Izmailov et al., UAI 2018) of every epoch that reaches a new best dev EER. Models are
selected on dev only: ``weights/best.safetensors`` is the epoch with the lowest dev EER, the SWA
average (``swa.safetensors``) is scored on dev too, and the better of the two (SWA on a tie)
becomes ``final.safetensors``, which is then evaluated (``emospoof.cm.evaluation``).
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from data_utils import NB_SAMP, Batch, SkipReport, Trial, TrialDataset, default_num_workers, make_loader
from emospoof.augment.pipeline import build_augmentation
from emospoof.augment.preprocess import build_preprocess
from emospoof.cm.ablations import evaluate_ablations
from emospoof.cm.config import load_config, run_name
from emospoof.cm.data import (check_paths, dev_asv, dev_trials, eval_sets, has_eval_data, resolve_asv_path,
                              track_eval_name, training_trials)
from emospoof.cm.emotion_inputs import emotion_inputs, fit_emotion_statistics, predicted_emotions
from emospoof.cm.evaluation import evaluate_checkpoints, evaluate_eval_set, metrics_for, run_scores
from emospoof.cm.group_robust import GroupDRO, class_weights, group_names
from emospoof.cm.thresholds import DEV_SCORES
from emospoof.core.checkpoint import (LEGACY_SUFFIX, WEIGHTS_SUFFIX, load_checkpoint, load_weights, read_state,
                                      save_weights, weights_file)
from emospoof.core.config import ConfigError, str_to_bool
from emospoof.core.emotions import UNLABELLED
from emospoof.metrics.score_files import AsvScores, write_score_file
from emospoof.scoring.windows import score_trials
from emospoof.training import distributed
from emospoof.training.acceleration import set_tf32
from emospoof.training.engine import (StepLoss, TrainSettings, Validation, apply_overrides, create_run, fit,
                                      settings_summary, train_settings, weighted_cross_entropy)
from emospoof.training.optim import create_optimizer, parameter_groups
from models import build_model
from models.emotion.branch import SERBranch
from utils import count_parameters, seed_everything, select_device, trainable_parameters

# Dev scores of the best epoch and of the final model, in the run folder: the final model's are
# what its evaluation calibrates on.
BEST_DEV_SCORES = "dev_scores_best.txt"
# The run's weight files, safetensors (emospoof.core.checkpoint.save_weights), in its weights/ folder.
BEST, SWA, FINAL = "best", "swa", "final"


class CountermeasureTask:
    """The engine's task for a countermeasure: weighted cross-entropy, dev EER for selection,
    the best epoch saved and averaged into the SWA model."""

    def __init__(self, model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                 dev_trials: list[Trial], dev_asv: AsvScores | None, skips: SkipReport,
                 class_weight: tuple[float, float], dev_inputs: dict | None = None) -> None:
        self.model, self.config, self.device, self.run_dir = model, config, device, run_dir
        self.dev_trials, self.dev_asv, self.skips = dev_trials, dev_asv, skips
        self.dev_inputs = dev_inputs  # utterance-level emotion inputs of the dev trials
        self.dev_scores: dict[str, float] = {}  # of the last validation
        self.preprocess = build_preprocess(config.get("preprocess"))
        self.class_weight = torch.tensor(class_weight, device=device)
        self.frozen_aasist_epochs = config.get("freeze_aasist_epochs", 0)
        self.dro: GroupDRO | None = None  # with group_robust.dro_step, and each trial's group index:
        self.group_of: dict[str, int] = {}
        self.freq_aug = str_to_bool(config.get("freq_aug", False), "freq_aug")
        self.eval_all_best = str_to_bool(config.get("eval_all_best", False), "eval_all_best")
        # No SWA, no copy: for models with a large SSL encoder the average is a second full model.
        self.swa_model = AveragedModel(model) if str_to_bool(config.get("swa", True), "swa") else None

    def loss(self, net: nn.Module, batch: Batch) -> StepLoss:
        extra = {} if batch.utterance_input is None else {"emotion": batch.utterance_input}
        _, logits = net(batch.x, Freq_aug=self.freq_aug, **extra)
        if self.dro is None:
            return weighted_cross_entropy(logits, batch.labels, self.class_weight)
        groups = torch.tensor([self.group_of[utt] for utt in batch.utt_ids], device=logits.device)
        return self.dro.loss(logits, batch.labels, groups)

    def start_epoch(self, epoch: int) -> None:
        """AASIST waits (no gradient, BatchNorm statistics kept) during the first
        ``freeze_aasist_epochs``, while the emotion parts learn; then both train together. (The
        loader's sampler carries the epoch to the crops and augmentation draws.)"""
        if self.frozen_aasist_epochs:
            if epoch <= self.frozen_aasist_epochs:
                self.model.freeze_part("aasist")
            else:
                self.model.thaw_part("aasist")

    def validate(self, epoch: int) -> Validation:
        scores = score_trials(self.model, self.dev_trials, self.config, self.device, self.skips, f"epoch {epoch} dev",
                              preprocess=self.preprocess, utterance_inputs=self.dev_inputs)
        self.dev_scores = scores
        dev = metrics_for(self.dev_trials, scores, self.dev_asv)
        tdcf = dev["min_tdcf"] if dev["min_tdcf"] is not None else float("nan")
        return Validation({"dev_eer": dev["eer"], "dev_min_tdcf": tdcf}, dev["eer"],
                          f"dev EER {dev['eer']:.3f} %  dev min t-DCF {tdcf:.5f}", tie_break=dev["min_tdcf"])

    def improves(self, validation: Validation, best: Validation | None) -> bool:
        """A lower dev EER. Equal EERs are common (130 devkit dev trials give few distinct values):
        a tie keeps the earlier model, unless the run has dev ASV scores and the new epoch's dev
        min t-DCF is strictly lower."""
        if best is None or validation.value < best.value:
            return True
        if validation.value > best.value or validation.tie_break is None or best.tie_break is None:
            return False
        return validation.tie_break < best.tie_break

    def new_best(self, epoch: int, row: dict) -> None:
        if distributed.is_main():
            save_weights(self.model.state_dict(), self.run_dir / "weights" / (BEST + WEIGHTS_SUFFIX))
            write_score_file(self.run_dir / BEST_DEV_SCORES, self.dev_trials, self.dev_scores)
        if self.swa_model is not None:
            self.swa_model.update_parameters(self.model)
        if self.eval_all_best:  # reported for information only; never used to select a model
            report = evaluate_eval_set(self.model, self.config, self.device, distributed.output_dir(self.run_dir),
                                       sets=eval_sets(self.config, track_only=True), conditions=False)
            row["eval_eer"] = report["datasets"][track_eval_name(self.config)]["eer"]

    def extra_state(self) -> dict:
        return {"swa_model": None if self.swa_model is None else self.swa_model.state_dict(),
                "dro": None if self.dro is None else self.dro.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        if self.swa_model is not None:
            self.swa_model.load_state_dict(state["swa_model"])
        if self.dro is not None:
            self.dro.load_state_dict(state["dro"])


def update_bn_of_trainable(train_loader, swa_model: AveragedModel, device: torch.device) -> None:
    """Re-estimate the SWA model's BatchNorm statistics on the training data, as
    ``torch.optim.swa_utils.update_bn`` does (statistics reset, then a cumulative average over one
    pass in train mode, momentum restored), for the BatchNorm layers that training updates only.

    Frozen parts (a frozen SER branch, SSL encoder or AASIST) stay in eval mode in train mode
    (``models.layers.frozen.KeepsFrozen``) and run on their running statistics, so those are never
    reset: ``update_bn`` resets every BatchNorm, and a frozen ACRNN would then run on mean 0 and
    variance 1 during the pass and feed corrupted inputs to every trainable BatchNorm after it.
    Under torchrun each rank runs its share of the training data (every rank takes every step);
    synchronised BatchNorm layers see the global batches, as one process would, and otherwise the
    ranks' estimates are averaged. A model conditioned on utterance inputs (the emotion input) gets
    them with each batch, as in training."""
    model = swa_model.module
    was_training = model.training
    model.train()
    updated = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    momenta = [m.momentum for m in updated]
    for module in updated:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the pass
    try:
        with torch.no_grad():
            for batch in train_loader:
                if distributed.all_ranks(bool(batch.utt_ids)):
                    extra = {} if batch.utterance_input is None else {"emotion": batch.utterance_input.to(device)}
                    model(batch.x.to(device), **extra)
    finally:
        for module, momentum in zip(updated, momenta):
            module.momentum = momentum
        model.train(was_training)
    distributed.average_batchnorm_statistics(updated)


def finalise(task: CountermeasureTask, train_loader, best_eer: float, seed: int, settings: TrainSettings) -> None:
    """Pick the final model on dev (best epoch vs. SWA average), save it, evaluate it."""
    model, swa_model, run_dir, device = task.model, task.swa_model, task.run_dir, task.device
    weights_dir = run_dir / "weights"
    distributed.barrier()  # the best epoch's weights are written by rank 0
    best = weights_file(weights_dir, BEST)  # a run resumed across the change to safetensors may have best.pth
    model.load_state_dict(read_state(best, device))
    summary = {"best_epoch_dev_eer": best_eer, "final": best.name, "seed": seed,
               **settings_summary(settings, task.config["batch_size"])}
    if distributed.is_main() and (run_dir / BEST_DEV_SCORES).is_file():  # absent in runs started before dev scores were kept
        shutil.copyfile(run_dir / BEST_DEV_SCORES, run_dir / DEV_SCORES)
    if swa_model is not None and swa_model.n_averaged.item() > 0:
        if settings.sync_batchnorm:
            distributed.convert_sync_batchnorm(swa_model, device)
        update_bn_of_trainable(train_loader, swa_model, device)
        swa_scores = score_trials(swa_model.module, task.dev_trials, task.config, device, task.skips, "swa dev",
                                  preprocess=task.preprocess, utterance_inputs=task.dev_inputs)
        swa_eer = metrics_for(task.dev_trials, swa_scores, task.dev_asv)["eer"]
        if distributed.is_main():
            save_weights(swa_model.module.state_dict(), weights_dir / (SWA + WEIGHTS_SUFFIX))
        summary.update(swa_dev_eer=swa_eer, swa_n_averaged=swa_model.n_averaged.item())
        tqdm.write(f"SWA over {swa_model.n_averaged.item()} checkpoint(s): dev EER {swa_eer:.3f} %")
        if swa_eer <= best_eer:
            model.load_state_dict(swa_model.module.state_dict())
            summary["final"] = SWA + WEIGHTS_SUFFIX
            if distributed.is_main():
                write_score_file(run_dir / DEV_SCORES, task.dev_trials, swa_scores)
    output_dir = distributed.output_dir(run_dir)
    final = weights_dir / (FINAL + WEIGHTS_SUFFIX)
    if distributed.is_main():
        save_weights(model.state_dict(), final)  # the model holds the chosen weights
        if task.skips:
            task.skips.write(run_dir / "skipped_files.tsv")
    tqdm.write(f"final model (chosen on dev): {summary['final']} -> {final}")
    distributed.barrier()  # dev_scores.txt is written by rank 0
    if has_eval_data(task.config):
        dev_scores = run_dir / DEV_SCORES
        evaluate_eval_set(model, task.config, device, output_dir, {"training": summary},
                          dev_scores if dev_scores.is_file() else None)
    else:
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))


@dataclass
class TrainingGroups:
    """Group-robust training's view of the training trials: each trial's group index, the group
    names, and the groups a balanced sampler draws from (None: plain shuffling)."""
    of: dict[str, int]
    names: list[str]
    balance: list[int] | None

    @property
    def sampled(self) -> list[str] | None:
        return self.names if self.balance is not None else None


def training_groups(trials: list[Trial], config: dict, device: torch.device, skips: SkipReport,
                    preprocess) -> TrainingGroups | None:
    """Group-robust training (``group_robust``): each training trial's group, from its emotion
    label or else the SER's prediction; None without the section."""
    section = config.get("group_robust")
    if section is None:
        return None
    unlabelled = [t for t in trials if t.emotion == UNLABELLED]
    predicted = {}
    if unlabelled and "ser_config" in section:
        predicted = predicted_emotions(SERBranch(section["ser_config"]).to(device), unlabelled, config, device, skips,
                                       preprocess, "SER emotions of unlabelled training trials")
    names = group_names(trials, section.get("groups", "arousal"), predicted)
    index = {name: i for i, name in enumerate(sorted(set(names)))}
    tqdm.write("training groups: " + ", ".join(f"{name} {names.count(name)}" for name in index))
    balance = [index[name] for name in names] if section.get("sampler", "balanced") == "balanced" else None
    return TrainingGroups({t.utt_id: index[name] for t, name in zip(trials, names)}, sorted(index), balance)


def train(config: dict, model: nn.Module, run_dir: Path, device: torch.device, seed: int,
          resume: dict | None, settings: TrainSettings) -> None:
    (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    dev_asv_scores = dev_asv(config)
    if dev_asv_scores is None:
        tqdm.write("note: no dev ASV scores found; dev min t-DCF is not computed")
    skips = SkipReport(tqdm.write)
    augmentation = build_augmentation(config, tqdm.write)
    if augmentation is not None:
        tqdm.write(f"training-data augmentation: {augmentation.describe()}")
    preprocess = build_preprocess(config.get("preprocess"))
    trials, dev = training_trials(config), dev_trials(config)
    train_inputs = emotion_inputs(model, trials, config, device, skips, preprocess, "training emotion inputs")
    fit_emotion_statistics(model, trials, train_inputs, config, device, skips, preprocess)
    train_set = TrialDataset(trials, config["model_config"].get("nb_samp", NB_SAMP), "train", augment=augmentation,
                             seed=seed, preprocess=preprocess, utterance_inputs=train_inputs)
    groups = training_groups(trials, config, device, skips, preprocess)
    task = CountermeasureTask(model, config, device, run_dir, dev, dev_asv_scores, skips,
                              class_weights(config, trials, groups.sampled if groups else None),
                              emotion_inputs(model, dev, config, device, skips, preprocess, "dev emotion inputs"))
    dro_step = config.get("group_robust", {}).get("dro_step", 0.01)
    if groups is not None and dro_step > 0:
        task.dro, task.group_of = GroupDRO(len(groups.names), dro_step, device), groups.of
        tqdm.write(f"group DRO over {len(groups.names)} groups (step {dro_step}); no class weights")
    else:
        tqdm.write(f"class weights (spoof, bona fide): {tuple(round(w, 4) for w in task.class_weight.tolist())}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    train_loader = make_loader(train_set, config["batch_size"], True, config.get("num_workers", default_num_workers()),
                               seed, distributed.rank(), distributed.world_size(), generator,
                               groups.balance if groups else None)
    steps = -(-len(train_loader) // settings.grad_accum_steps) * config["num_epochs"]
    optimizer, scheduler = create_optimizer(parameter_groups(model, config["optim_config"]), config["optim_config"], steps)
    result = fit(task, train_loader, optimizer, scheduler, run_dir=run_dir, epochs=config["num_epochs"], seed=seed,
                 generator=generator, device=device, skips=skips, settings=settings, resume=resume)
    finalise(task, train_loader, result.best, seed, settings)


def eval_dev_scores(weights: list[Path], named: list[str] | None) -> list[Path | None]:
    """The dev score file of each checkpoint, to calibrate on: ``--dev_scores`` (one per
    checkpoint, in order), else the run's ``dev_scores.txt`` for a run's final weights
    (``weights/final.safetensors``, or ``weights/final.pth`` of an older run)."""
    if named:
        if len(named) != len(weights):
            raise ConfigError(f"--dev_scores: give one dev score file per checkpoint ({len(weights)}), "
                              f"got {len(named)}")
        for path in named:
            if not Path(path).is_file():
                raise ConfigError(f"--dev_scores: file not found: {path}")
        return [Path(path) for path in named]
    found = [w.parent.parent / DEV_SCORES if w.name in (FINAL + WEIGHTS_SUFFIX, FINAL + LEGACY_SUFFIX)
             and w.parent.name == "weights" else None
             for w in weights]
    return [path if path and path.is_file() else None for path in found]


def run(args: argparse.Namespace) -> None:
    """``main.py``: train a new run, continue one (``--resume``), or evaluate weights (``--eval``);
    started by torchrun, every process runs this and they train together."""
    device = distributed.init(select_device(args.device))
    try:
        run_on(args, device)
    finally:
        distributed.shutdown()


def run_on(args: argparse.Namespace, device: torch.device) -> None:
    if args.resume:
        run_dir = Path(args.resume)
        config = load_config(run_dir / "config.conf")
        resume = load_checkpoint(run_dir, tqdm.write)
        seed = resume.get("seed", args.seed)
    else:
        config, resume, seed = load_config(args.config), None, args.seed
    apply_overrides(config, args.precision, args.compile)
    check_paths(config, ["eval"] if args.eval else ["train", "dev"])
    settings = train_settings(config, device, args.tensorboard)
    deterministic = str_to_bool(config.get("cudnn_deterministic_toggle", True))
    benchmark = str_to_bool(config.get("cudnn_benchmark_toggle", False))
    seed_everything(seed, deterministic, benchmark)
    set_tf32(settings.precision)
    # channels_last makes the 2-D convolutions of the encoder 2-4x faster on CPU (measured).
    model = build_model(config["model_config"]).to(device, memory_format=torch.channels_last)
    tqdm.write(f"{config['model_config']['architecture']}: {count_parameters(model):,} parameters "
               f"({sum(p.numel() for p in trainable_parameters(model)):,} trainable) on {device}, "
               f"{settings.precision}{', compiled' if settings.compile else ''}"
               f"{f', {distributed.world_size()} processes' if distributed.world_size() > 1 else ''}")
    resolve_asv_path(config, "asv_score_path", None)

    if args.eval:
        run_dir = Path(args.output_dir) / run_name(args.config, config, args.comment)
        distributed.on_main(lambda: run_dir.mkdir(parents=True, exist_ok=True))
        output_dir = distributed.output_dir(run_dir)
        if args.scores_from:
            source = Path(args.scores_from)
            dev = eval_dev_scores([source / "weights" / (FINAL + WEIGHTS_SUFFIX)], args.dev_scores)[0]
            evaluate_eval_set(model, config, device, output_dir, dev_scores=dev, threshold=args.threshold,
                              scores=run_scores(source, eval_sets(config)))
            return
        weights = [Path(w) for w in args.eval_model_weights or [config["model_path"]]]
        dev_scores = eval_dev_scores(weights, args.dev_scores)
        if len(weights) > 1:
            if args.ablations:
                raise ConfigError("--ablations evaluates one checkpoint; give one --eval_model_weights")
            evaluate_checkpoints(model, weights, config, device, output_dir, dev_scores, args.threshold)
            return
        load_weights(model, weights[0], device)
        if args.ablations:
            evaluate_ablations(model, config, device, output_dir, dev_scores[0], args.threshold)
        else:
            evaluate_eval_set(model, config, device, output_dir, dev_scores=dev_scores[0], threshold=args.threshold)
        return
    if not resume:
        run_dir = Path(args.output_dir) / run_name(args.config, config, args.comment)
        create_run(run_dir, config)
        if config.get("init_weights"):  # fine-tune: start from these weights (resume restores its own)
            load_weights(model, Path(config["init_weights"]), device)
    train(config, model, run_dir, device, seed, resume, settings)

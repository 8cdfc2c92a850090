"""Training a countermeasure on ASVspoof 2019 LA, as ``main.py`` runs it.

The recipe follows the AASIST reference: random crops, weighted cross-entropy (0.1 spoof, 0.9
bona fide), Adam with a per-step cosine schedule, and stochastic weight averaging (Izmailov et
al., UAI 2018) of every epoch that reaches a new best dev EER. Models are selected on dev only:
``best.pth`` is the epoch with the lowest dev EER, the SWA average is scored on dev too, and the
better of the two becomes ``final.pth``, which is then evaluated (``emospoof.cm.evaluation``).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm import tqdm

from data_utils import NB_SAMP, Batch, SkipReport, Trial, TrialDataset, default_num_workers, make_loader
from emospoof.augment.pipeline import build_augmentation
from emospoof.cm.ablations import evaluate_ablations
from emospoof.cm.config import load_config, run_name
from emospoof.cm.data import (check_paths, dev_asv, dev_trials, eval_sets, has_eval_data, resolve_asv_path,
                              track_eval_name, training_trials)
from emospoof.cm.evaluation import evaluate_checkpoints, evaluate_eval_set, metrics_for
from emospoof.core.checkpoint import load_checkpoint, load_weights
from emospoof.core.config import ConfigError, str_to_bool
from emospoof.metrics.score_files import AsvScores, write_score_file
from emospoof.scoring.windows import score_trials
from emospoof.training import distributed
from emospoof.training.acceleration import set_tf32
from emospoof.training.engine import (StepLoss, TrainSettings, Validation, apply_overrides, create_run, fit,
                                      settings_summary, train_settings, weighted_cross_entropy)
from emospoof.training.optim import create_optimizer, parameter_groups
from models import build_model
from utils import count_parameters, seed_everything, select_device, trainable_parameters

# Class weights of the reference's cross-entropy: spoof (index 0) 0.1, bona fide (index 1) 0.9.
CLASS_WEIGHTS = (0.1, 0.9)
# Dev scores of the best epoch and of the final model, in the run folder: the final model's are
# what its evaluation calibrates on.
BEST_DEV_SCORES = "dev_scores_best.txt"
DEV_SCORES = "dev_scores.txt"


class CountermeasureTask:
    """The engine's task for a countermeasure: weighted cross-entropy, dev EER for selection,
    the best epoch saved and averaged into the SWA model."""

    def __init__(self, model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                 dev_trials: list[Trial], dev_asv: AsvScores | None, skips: SkipReport) -> None:
        self.model, self.config, self.device, self.run_dir = model, config, device, run_dir
        self.dev_trials, self.dev_asv, self.skips = dev_trials, dev_asv, skips
        self.dev_scores: dict[str, float] = {}  # of the last validation
        self.class_weight = torch.tensor(CLASS_WEIGHTS, device=device)
        self.freq_aug = str_to_bool(config.get("freq_aug", False), "freq_aug")
        self.eval_all_best = str_to_bool(config.get("eval_all_best", False), "eval_all_best")
        # No SWA, no copy: for models with a large SSL encoder the average is a second full model.
        self.swa_model = AveragedModel(model) if str_to_bool(config.get("swa", True), "swa") else None

    def loss(self, net: nn.Module, batch: Batch) -> StepLoss:
        _, logits = net(batch.x, Freq_aug=self.freq_aug)
        return weighted_cross_entropy(logits, batch.labels, self.class_weight)

    def start_epoch(self, epoch: int) -> None:
        pass  # the loader's sampler carries the epoch to the crops and augmentation draws

    def validate(self, epoch: int) -> Validation:
        scores = score_trials(self.model, self.dev_trials, self.config, self.device, self.skips, f"epoch {epoch} dev")
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
            torch.save(self.model.state_dict(), self.run_dir / "weights" / "best.pth")
            write_score_file(self.run_dir / BEST_DEV_SCORES, self.dev_trials, self.dev_scores)
        if self.swa_model is not None:
            self.swa_model.update_parameters(self.model)
        if self.eval_all_best:  # reported for information only; never used to select a model
            report = evaluate_eval_set(self.model, self.config, self.device, distributed.output_dir(self.run_dir),
                                       sets=eval_sets(self.config, track_only=True), conditions=False)
            row["eval_eer"] = report["datasets"][track_eval_name(self.config)]["eer"]

    def extra_state(self) -> dict:
        return {"swa_model": None if self.swa_model is None else self.swa_model.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        if self.swa_model is not None:
            self.swa_model.load_state_dict(state["swa_model"])


def update_bn_of_trainable(train_loader, swa_model: AveragedModel, device: torch.device) -> None:
    """Re-estimate the SWA model's BatchNorm statistics, except in frozen parts (no trainable
    parameter: a frozen SER branch or AASIST), whose statistics must stay bit-identical;
    ``update_bn`` alone would reset them. Under torchrun each rank runs its share of the training
    data (every rank takes every step); synchronised BatchNorm layers see the global batches, as
    one process would, and otherwise the ranks' estimates are averaged."""
    frozen = [m for m in swa_model.modules() if isinstance(m, _BatchNorm)
              and not any(p.requires_grad for p in m.parameters())]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen]
    update_bn((b.x.to(device) for b in train_loader if distributed.all_ranks(bool(b.utt_ids))), swa_model, device)
    distributed.average_batchnorm_statistics(swa_model)
    for module, state in zip(frozen, saved):
        module.load_state_dict(state)


def finalise(task: CountermeasureTask, train_loader, best_eer: float, seed: int, settings: TrainSettings) -> None:
    """Pick the final model on dev (best epoch vs. SWA average), save it, evaluate it."""
    model, swa_model, run_dir, device = task.model, task.swa_model, task.run_dir, task.device
    weights_dir = run_dir / "weights"
    distributed.barrier()  # best.pth is written by rank 0
    model.load_state_dict(torch.load(weights_dir / "best.pth", map_location=device, weights_only=True))
    summary = {"best_epoch_dev_eer": best_eer, "final": "best.pth", "seed": seed,
               **settings_summary(settings, task.config["batch_size"])}
    if distributed.is_main() and (run_dir / BEST_DEV_SCORES).is_file():  # absent in runs started before dev scores were kept
        shutil.copyfile(run_dir / BEST_DEV_SCORES, run_dir / DEV_SCORES)
    if swa_model is not None and swa_model.n_averaged.item() > 0:
        if settings.sync_batchnorm:
            distributed.convert_sync_batchnorm(swa_model, device)
        update_bn_of_trainable(train_loader, swa_model, device)
        swa_scores = score_trials(swa_model.module, task.dev_trials, task.config, device, task.skips, "swa dev")
        swa_eer = metrics_for(task.dev_trials, swa_scores, task.dev_asv)["eer"]
        if distributed.is_main():
            torch.save(swa_model.module.state_dict(), weights_dir / "swa.pth")
        summary.update(swa_dev_eer=swa_eer, swa_n_averaged=swa_model.n_averaged.item())
        tqdm.write(f"SWA over {swa_model.n_averaged.item()} checkpoint(s): dev EER {swa_eer:.3f} %")
        if swa_eer <= best_eer:
            model.load_state_dict(swa_model.module.state_dict())
            summary["final"] = "swa.pth"
            if distributed.is_main():
                write_score_file(run_dir / DEV_SCORES, task.dev_trials, swa_scores)
    output_dir = distributed.output_dir(run_dir)
    if distributed.is_main():
        shutil.copyfile(weights_dir / summary["final"], weights_dir / "final.pth")
        if task.skips:
            task.skips.write(run_dir / "skipped_files.tsv")
    tqdm.write(f"final model (chosen on dev): {summary['final']} -> {weights_dir / 'final.pth'}")
    distributed.barrier()  # dev_scores.txt is written by rank 0
    if has_eval_data(task.config):
        dev_scores = run_dir / DEV_SCORES
        evaluate_eval_set(model, task.config, device, output_dir, {"training": summary},
                          dev_scores if dev_scores.is_file() else None)
    else:
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))


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
    train_set = TrialDataset(training_trials(config), config["model_config"].get("nb_samp", NB_SAMP), "train",
                             augment=augmentation, seed=seed)
    task = CountermeasureTask(model, config, device, run_dir, dev_trials(config), dev_asv_scores, skips)
    generator = torch.Generator()
    generator.manual_seed(seed)
    train_loader = make_loader(train_set, config["batch_size"], True, config.get("num_workers", default_num_workers()),
                               seed, distributed.rank(), distributed.world_size(), generator)
    steps = -(-len(train_loader) // settings.grad_accum_steps) * config["num_epochs"]
    optimizer, scheduler = create_optimizer(parameter_groups(model, config["optim_config"]), config["optim_config"], steps)
    result = fit(task, train_loader, optimizer, scheduler, run_dir=run_dir, epochs=config["num_epochs"], seed=seed,
                 generator=generator, device=device, skips=skips, settings=settings, resume=resume)
    finalise(task, train_loader, result.best, seed, settings)


def eval_dev_scores(weights: list[Path], named: list[str] | None) -> list[Path | None]:
    """The dev score file of each checkpoint, to calibrate on: ``--dev_scores`` (one per
    checkpoint, in order), else the run's ``dev_scores.txt`` for a run's ``weights/final.pth``."""
    if named:
        if len(named) != len(weights):
            raise ConfigError(f"--dev_scores: give one dev score file per checkpoint ({len(weights)}), "
                              f"got {len(named)}")
        for path in named:
            if not Path(path).is_file():
                raise ConfigError(f"--dev_scores: file not found: {path}")
        return [Path(path) for path in named]
    found = [w.parent.parent / DEV_SCORES if w.name == "final.pth" and w.parent.name == "weights" else None
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
        weights = [Path(w) for w in args.eval_model_weights or [config["model_path"]]]
        dev_scores = eval_dev_scores(weights, args.dev_scores)
        if len(weights) > 1:
            if args.ablations:
                raise ConfigError("--ablations evaluates one checkpoint; give one --eval_model_weights")
            evaluate_checkpoints(model, weights, config, device, output_dir, dev_scores)
            return
        load_weights(model, weights[0], device)
        if args.ablations:
            evaluate_ablations(model, config, device, output_dir)
        else:
            evaluate_eval_set(model, config, device, output_dir, dev_scores=dev_scores[0])
        return
    if not resume:
        run_dir = Path(args.output_dir) / run_name(args.config, config, args.comment)
        create_run(run_dir, config)
        if config.get("init_weights"):  # fine-tune: start from these weights (resume restores its own)
            load_weights(model, Path(config["init_weights"]), device)
    train(config, model, run_dir, device, seed, resume, settings)

"""Train or evaluate a countermeasure on ASVspoof 2019 LA, driven by a JSON config.

    python main.py --config config/AASIST.conf            # train
    python main.py --config config/AASIST.conf --eval     # evaluate model_path on LA eval
    python main.py --resume exp_result/LA_AASIST_ep100_bs24   # continue an interrupted run
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm import tqdm

import evaluation
from data_utils import (
    NB_SAMP,
    EmotionalSet,
    SkipReport,
    Trial,
    TrialDataset,
    default_num_workers,
    la_audio_dir,
    la_protocol_path,
    la_trials,
    make_loader,
    read_emotional_set,
)
from utils import (
    ConfigError,
    build_model,
    count_parameters,
    load_weights,
    create_optimizer,
    parameter_groups,
    load_config,
    restore_rng_state,
    rng_state,
    save_atomic,
    seed_everything,
    select_device,
    str_to_bool,
    trainable_parameters,
    write_metrics_csv,
)

DEV_ASV_SCORES = "ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"
CHECKPOINT = "checkpoint.pth"
EMO_SCORES = "emo_scores.txt"
EMO_PLOT = "emo_eer_per_emotion.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON config (optional with --resume)")
    parser.add_argument("--output_dir", default="./exp_result", help="parent folder of run folders")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--eval", action="store_true", help="evaluate the weights at model_path on LA eval")
    parser.add_argument("--eval_model_weights", help="weights to evaluate instead of model_path")
    parser.add_argument("--comment", help="suffix of the run folder name")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("--config is required (or --resume RUN_DIR)")
    return args


# ---------------------------------------------------------------------------------------------
# Paths


def resolve_asv_path(config: dict, key: str, default: str | None) -> Path | None:
    """ASV score file for t-DCF. A path named in the config must exist; an unnamed default may be
    absent (t-DCF is then skipped with a message); ``null`` turns t-DCF off."""
    if key in config and config[key] is None:
        return None
    name = config.get(key, default)
    if name is None:
        return None
    path = Path(config["database_path"]) / name
    if path.is_file():
        return path
    if key in config:
        raise ConfigError(f"config key '{key}': file not found: {path}")
    return None


def load_emotional_set(config: dict) -> EmotionalSet:
    """The set named by ``emo_dataset``; any problem is a ConfigError naming the key."""
    try:
        return read_emotional_set(config["emo_dataset"], config.get("emo_bonafide_system", "ESD"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"config key 'emo_dataset': {err}") from None


def check_paths(config: dict, splits: list[str]) -> None:
    if "emo_dataset" in config:
        load_emotional_set(config)
    database = Path(config["database_path"])
    if not database.is_dir():
        raise ConfigError(f"config key 'database_path': folder not found: {database}")
    for split in splits:
        for path in (la_protocol_path(database, split), la_audio_dir(database, split)):
            if not path.exists():
                raise ConfigError(f"{split} data not found: {path} (database_path should be the LA/ folder)")


def run_name(config_path: str, config: dict, comment: str | None) -> str:
    name = f"{config.get('track', 'LA')}_{Path(config_path).stem}_ep{config['num_epochs']}_bs{config['batch_size']}"
    return f"{name}_{comment}" if comment else name


# ---------------------------------------------------------------------------------------------
# Scoring


def window_forward(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Bona fide logits (index 1, the reference's score) of a stack of windows."""
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        return model(x.to(device, non_blocking=True))[1][:, 1].float().cpu()


@torch.inference_mode()
def score_trials(model: nn.Module, trials: list[Trial], config: dict, device: torch.device,
                 skips: SkipReport, desc: str) -> dict[str, float]:
    """Score each trial; a window-averaged score per utterance in ``"full"`` eval mode."""
    nb_samp = config["model_config"].get("nb_samp", NB_SAMP)
    dataset = TrialDataset(trials, nb_samp, config.get("eval_mode", "first"), config.get("eval_hop"))
    loader = make_loader(dataset, config["batch_size"], shuffle=False,
                         num_workers=config.get("num_workers", default_num_workers()))
    model.eval()
    scores: dict[str, float] = {}
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
        skips.add(batch.failures)
        if not batch.utt_ids:
            continue
        window_scores = window_forward(model, batch.x, device)
        for utt_id, chunk in zip(batch.utt_ids, torch.split(window_scores, batch.counts)):
            scores[utt_id] = chunk.mean().item()
    return scores


def write_score_file(path: Path, trials: list[Trial], scores: dict[str, float]) -> None:
    """``UTT ATTACK KEY SCORE`` per scored trial, in protocol order."""
    with open(path, "w") as handle:
        for trial in trials:
            if trial.utt_id in scores:
                key = "bonafide" if trial.label == 1 else "spoof"
                handle.write(f"{trial.utt_id} {trial.attack} {key} {scores[trial.utt_id]:.6f}\n")


def load_asv(config: dict, key: str, default: str | None) -> evaluation.AsvScores | None:
    path = resolve_asv_path(config, key, default)
    return evaluation.read_asv_scores(path) if path else None


def metrics_for(trials: list[Trial], scores: dict[str, float], asv: evaluation.AsvScores | None) -> dict:
    scored = [t for t in trials if t.utt_id in scores]
    return evaluation.evaluate_arrays(
        np.array([scores[t.utt_id] for t in scored]),
        ["bonafide" if t.label == 1 else "spoof" for t in scored],
        [t.attack for t in scored],
        asv,
    )


def print_metrics(title: str, metrics: dict) -> None:
    tdcf = "n/a (no ASV scores)" if metrics["min_tdcf"] is None else f"{metrics['min_tdcf']:.5f}"
    tqdm.write(f"{title}: EER {metrics['eer']:.3f} %   min t-DCF {tdcf}")
    if metrics["per_attack"]:
        tqdm.write("  attack   EER (%)")
        for attack, eer in metrics["per_attack"].items():
            tqdm.write(f"  {attack:<8} {eer:7.3f}")


def evaluate_emotional_set(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                           skips: SkipReport) -> dict:
    """Score ``emo_dataset``; EER per emotion, system and system x emotion (evaluation.emotion_report),
    printed as a table, with its score file and bar chart in ``run_dir``."""
    emo_set = load_emotional_set(config)
    scores = score_trials(model, emo_set.trials, config, device, skips, "emotional set")
    write_score_file(run_dir / EMO_SCORES, emo_set.trials, scores)
    scored = [t for t in emo_set.trials if t.utt_id in scores]
    if not any(t.label == 1 for t in scored) or not any(t.label == 0 for t in scored):
        raise ValueError(f"{config['emo_dataset']}: no bona fide or no spoof trial could be scored")
    report = evaluation.emotion_report([scores[t.utt_id] for t in scored],
                                       ["bonafide" if t.label == 1 else "spoof" for t in scored],
                                       [t.attack for t in scored], [t.emotion for t in scored])
    report.update(dataset=str(config["emo_dataset"]), bonafide_system=emo_set.bonafide_system,
                  missing=emo_set.missing, score_file=str(run_dir / EMO_SCORES),
                  n_scored=len(scored), n_unscored=len(emo_set.trials) - len(scored))
    for problem in emo_set.missing + report["empty"]:
        tqdm.write(f"warning: emotional set: {problem}")
    tqdm.write(f"Emotional set {config['emo_dataset']} (bona fide: {emo_set.bonafide_system})\n"
               + evaluation.format_emotion_table(report))
    evaluation.plot_emotion_eer(report, run_dir / EMO_PLOT,
                                f"{config['model_config']['architecture']}: EER per emotion")
    report["plot"] = str(run_dir / EMO_PLOT)
    return report


def evaluate_eval_set(model: nn.Module, config: dict, device: torch.device, run_dir: Path,
                      extra: dict | None = None) -> dict:
    """Score LA eval (when present) and the emotional set (when configured), write the score
    files and ``eval_report.json``, print the tables."""
    skips = SkipReport(tqdm.write)
    report = {}
    if la_audio_dir(config["database_path"], "eval").exists():
        trials = la_trials(config["database_path"], "eval")
        scores = score_trials(model, trials, config, device, skips, "eval")
        score_path = run_dir / config.get("eval_output", "eval_scores.txt")
        write_score_file(score_path, trials, scores)
        metrics = metrics_for(trials, scores, load_asv(config, "asv_score_path", None))
        print_metrics("LA eval", metrics)
        report.update(score_file=str(score_path), la_eval=metrics, n_scored=len(scores))
    if "emo_dataset" in config:
        report["emotional_set"] = evaluate_emotional_set(model, config, device, run_dir, skips)
    report.update(n_skipped=len(skips), **(extra or {}))
    if skips:
        skips.write(run_dir / "skipped_files.tsv")
        tqdm.write(f"{len(skips)} file(s) skipped, listed in {run_dir / 'skipped_files.tsv'}")
    (run_dir / "eval_report.json").write_text(json.dumps(report, indent=2))
    tqdm.write(f"report: {run_dir / 'eval_report.json'}")
    return report


# ---------------------------------------------------------------------------------------------
# Training


def train_epoch(model: nn.Module, loader, optimizer, scheduler, criterion, device: torch.device,
                scaler: torch.amp.GradScaler, freq_aug: bool, skips: SkipReport, epoch: int) -> float:
    model.train()
    total, count = 0.0, 0
    progress = tqdm(loader, desc=f"epoch {epoch} train", unit="batch", leave=False)
    for batch in progress:
        skips.add(batch.failures)
        if not batch.utt_ids:
            continue
        x, y = batch.x.to(device, non_blocking=True), batch.labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            _, logits = model(x, Freq_aug=freq_aug)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += loss.item() * len(y)
        count += len(y)
        progress.set_postfix(loss=f"{total / count:.4f}")
    if count == 0:
        raise RuntimeError("no training batch could be loaded (every file was skipped)")
    return total / count


def train(config: dict, model: nn.Module, run_dir: Path, device: torch.device, seed: int,
          resume: dict | None) -> None:
    weights_dir = run_dir / "weights"
    weights_dir.mkdir(parents=True, exist_ok=True)
    num_workers = config.get("num_workers", default_num_workers())
    nb_samp = config["model_config"].get("nb_samp", NB_SAMP)
    train_trials = la_trials(config["database_path"], "train")
    dev_trials = la_trials(config["database_path"], "dev")
    dev_asv = load_asv(config, "dev_asv_score_path", DEV_ASV_SCORES)
    if dev_asv is None:
        tqdm.write("note: no dev ASV scores found; dev min t-DCF is not computed")

    generator = torch.Generator()
    generator.manual_seed(seed)
    train_set = TrialDataset(train_trials, nb_samp, "train")
    train_loader = make_loader(train_set, config["batch_size"], shuffle=True, num_workers=num_workers,
                               generator=generator, drop_last=len(train_set) > config["batch_size"])
    epochs = config["num_epochs"]
    optimizer, scheduler = create_optimizer(parameter_groups(model, config["optim_config"]),
                                            config["optim_config"], epochs * len(train_loader))
    criterion = nn.CrossEntropyLoss(weight=torch.tensor([0.1, 0.9], device=device))
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    use_swa = str_to_bool(config.get("swa", True), "swa")
    # No SWA, no copy: for models with a large SSL encoder the average is a second full model.
    swa_model = AveragedModel(model) if use_swa else None
    freq_aug = str_to_bool(config.get("freq_aug", False), "freq_aug")
    eval_all_best = str_to_bool(config.get("eval_all_best", False), "eval_all_best")
    skips = SkipReport(tqdm.write)

    start_epoch, best_eer, best_tdcf, rows = 0, float("inf"), float("inf"), []
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        if swa_model is not None:
            swa_model.load_state_dict(resume["swa_model"])
        restore_rng_state(resume["rng"], generator)
        start_epoch, best_eer, best_tdcf, rows = resume["epoch"], resume["best_eer"], resume["best_tdcf"], resume["rows"]
        tqdm.write(f"resuming {run_dir} after epoch {start_epoch}")

    for epoch in tqdm(range(start_epoch + 1, epochs + 1), desc="epochs", unit="epoch",
                      initial=start_epoch, total=epochs):
        started = time.time()
        loss = train_epoch(model, train_loader, optimizer, scheduler, criterion, device, scaler,
                           freq_aug, skips, epoch)
        dev_scores = score_trials(model, dev_trials, config, device, skips, f"epoch {epoch} dev")
        dev = metrics_for(dev_trials, dev_scores, dev_asv)
        dev_tdcf = dev["min_tdcf"] if dev["min_tdcf"] is not None else float("nan")
        improved = dev["eer"] <= best_eer
        row = {"epoch": epoch, "train_loss": loss, "dev_eer": dev["eer"], "dev_min_tdcf": dev_tdcf,
               "lr": optimizer.param_groups[0]["lr"], "best": int(improved), "n_skipped": len(skips),
               "seconds": round(time.time() - started, 1)}
        if improved:
            best_eer = dev["eer"]
            torch.save(model.state_dict(), weights_dir / "best.pth")
            if swa_model is not None:
                swa_model.update_parameters(model)
            if eval_all_best:  # reported for information only; never used to select a model
                eval_report = evaluate_eval_set(model, config, device, run_dir)
                row["eval_eer"] = eval_report["la_eval"]["eer"]
        best_tdcf = min(best_tdcf, dev_tdcf) if dev["min_tdcf"] is not None else best_tdcf
        rows.append(row)
        tqdm.write(f"epoch {epoch}: train loss {loss:.5f}  dev EER {dev['eer']:.3f} %  "
                   f"dev min t-DCF {dev_tdcf:.5f}{'  (best)' if improved else ''}")
        save_atomic({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "swa_model": None if swa_model is None else swa_model.state_dict(),
            "rng": rng_state(generator),
            "epoch": epoch, "seed": seed, "best_eer": best_eer, "best_tdcf": best_tdcf, "rows": rows,
        }, run_dir / CHECKPOINT)
        write_metrics_csv(run_dir / "metrics.csv", [_complete(r, rows) for r in rows])

    finalise(config, model, swa_model, train_loader, dev_trials, dev_asv, best_eer, run_dir, device, skips)


def _complete(row: dict, rows: list[dict]) -> dict:
    """Give every CSV row the same columns (eval_eer only exists on some epochs)."""
    columns = {key: "" for r in rows for key in r}
    return {**columns, **row}


def update_bn_of_trainable(train_loader, swa_model: AveragedModel, device: torch.device) -> None:
    """Re-estimate the SWA model's BatchNorm statistics, except in frozen parts (no trainable
    parameter: a frozen SER branch or AASIST), whose statistics must stay bit-identical;
    ``update_bn`` alone would reset them."""
    frozen = [m for m in swa_model.modules() if isinstance(m, _BatchNorm)
              and not any(p.requires_grad for p in m.parameters())]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen]
    update_bn((b.x.to(device) for b in train_loader if b.utt_ids), swa_model, device)
    for module, state in zip(frozen, saved):
        module.load_state_dict(state)


def finalise(config: dict, model: nn.Module, swa_model: AveragedModel | None, train_loader, dev_trials,
             dev_asv, best_eer: float, run_dir: Path, device: torch.device, skips: SkipReport) -> None:
    """Pick the final model on dev (best epoch vs. SWA average), save it, evaluate it on LA eval."""
    weights_dir = run_dir / "weights"
    model.load_state_dict(torch.load(weights_dir / "best.pth", map_location=device, weights_only=True))
    summary = {"best_epoch_dev_eer": best_eer, "final": "best.pth"}
    if swa_model is not None and swa_model.n_averaged.item() > 0:
        update_bn_of_trainable(train_loader, swa_model, device)
        swa_scores = score_trials(swa_model.module, dev_trials, config, device, skips, "swa dev")
        swa_eer = metrics_for(dev_trials, swa_scores, dev_asv)["eer"]
        torch.save(swa_model.module.state_dict(), weights_dir / "swa.pth")
        summary.update(swa_dev_eer=swa_eer, swa_n_averaged=swa_model.n_averaged.item())
        tqdm.write(f"SWA over {swa_model.n_averaged.item()} checkpoint(s): dev EER {swa_eer:.3f} %")
        if swa_eer <= best_eer:
            model.load_state_dict(swa_model.module.state_dict())
            summary["final"] = "swa.pth"
    shutil.copyfile(weights_dir / summary["final"], weights_dir / "final.pth")
    tqdm.write(f"final model (chosen on dev): {summary['final']} -> {weights_dir / 'final.pth'}")
    if skips:
        skips.write(run_dir / "skipped_files.tsv")
    if la_audio_dir(config["database_path"], "eval").exists() or "emo_dataset" in config:
        evaluate_eval_set(model, config, device, run_dir, {"training": summary})
    else:
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))


# ---------------------------------------------------------------------------------------------
# Entry point


def run(args: argparse.Namespace) -> None:
    if args.resume:
        run_dir = Path(args.resume)
        checkpoint_path = run_dir / CHECKPOINT
        if not checkpoint_path.is_file():
            raise ConfigError(f"--resume: no checkpoint in {run_dir} ({checkpoint_path} not found)")
        config = load_config(run_dir / "config.conf")
        resume = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        seed = resume.get("seed", args.seed)
    else:
        config = load_config(args.config)
        resume = None
        seed = args.seed
    check_paths(config, ["eval"] if args.eval else ["train", "dev"])
    device = select_device(args.device)
    seed_everything(seed, str_to_bool(config.get("cudnn_deterministic_toggle", True)),
                    str_to_bool(config.get("cudnn_benchmark_toggle", False)))
    # channels_last makes the 2-D convolutions of the encoder 2-4x faster on CPU (measured).
    model = build_model(config["model_config"]).to(device, memory_format=torch.channels_last)
    tqdm.write(f"{config['model_config']['architecture']}: {count_parameters(model):,} parameters "
               f"({sum(p.numel() for p in trainable_parameters(model)):,} trainable) on {device}")

    if args.eval:
        run_dir = Path(args.output_dir) / run_name(args.config, config, args.comment)
        run_dir.mkdir(parents=True, exist_ok=True)
        resolve_asv_path(config, "asv_score_path", None)
        load_weights(model, Path(args.eval_model_weights or config["model_path"]), device)
        evaluate_eval_set(model, config, device, run_dir)
        return

    if not resume:
        run_dir = Path(args.output_dir) / run_name(args.config, config, args.comment)
        if (run_dir / CHECKPOINT).exists():
            raise ConfigError(f"{run_dir} already holds a run: continue it with --resume {run_dir} "
                              "or choose another --comment/--output_dir")
        if config.get("init_weights"):  # fine-tune: start from these weights (resume restores its own)
            load_weights(model, Path(config["init_weights"]), device)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.conf").write_text(json.dumps(config, indent=4))
    resolve_asv_path(config, "asv_score_path", None)
    train(config, model, run_dir, device, seed, resume)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

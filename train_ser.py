"""Train, evaluate and apply the speech-emotion-recognition (SER) model of the emotion branch.

    python train_ser.py --config config/SER_wav2vec2.conf          # fine-tune a wav2vec 2.0-family model
    python train_ser.py --config config/SER_wav2vec2.conf --eval   # report model_path on the test split
    python train_ser.py --config config/SER_egemaps_rf.conf        # eGeMAPS + random-forest baseline
    python train_ser.py --resume exp_result/SER_wav2vec2           # continue an interrupted run
    python train_ser.py --predict my_audio/ --model DIR            # per-file emotion probabilities (TSV)

The corpus is RAVDESS speech (Livingstone & Russo, PLoS ONE 2018): files named
``MM-VC-EE-II-SS-RR-AA.wav|flac`` anywhere under ``database_path``. Splits are actor-independent
by default, so that a model cannot score by recognising voices it was trained on. The trained
model is a Hugging Face directory that ``models.ser.SERBranch`` loads with ``"backend": "hf"``.

Fine-tuning follows the usual wav2vec 2.0 recipe (Baevski et al., NeurIPS 2020; Pepino et al.,
Interspeech 2021 for emotion): frozen convolutional feature encoder, mean-pooled transformer
output, optional SpecAugment-style time masking (Park et al., Interspeech 2019). The baseline is
the 88 eGeMAPS v02 functionals (Eyben et al., IEEE TAC 2016) from openSMILE with a random forest.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from data_utils import (
    AUDIO_SUFFIXES,
    EMOTIONS,
    SAMPLE_RATE,
    AudioError,
    SkipReport,
    Trial,
    TrialDataset,
    load_audio,
    make_loader,
)
from inference import find_audio_files
from models.ser import load_hf_audio_model, prepare_waveform, save_with_extractor, tiny_audio_config, waveform_settings
from utils import (
    OPTIM_KEYS,
    ConfigError,
    check_keys,
    create_optimizer,
    is_number,
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

# RAVDESS emotion codes (field EE of the file name).
RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
SPEECH = "01"  # vocal channel: 01 speech, 02 song

BACKENDS = ("hf", "egemaps_rf")
COMMON_KEYS = {"backend", "database_path", "split", "train_actors", "dev_actors", "test_actors",
               "test_fraction", "dev_fraction", "emotion_map", "calm", "model_path", "num_workers"}
HF_KEYS = {"ser_path", "scratch", "batch_size", "num_epochs", "optim_config", "crop_seconds",
           "freeze_feature_encoder", "freeze_layers", "freeze_epochs", "class_weights", "mask_time_prob",
           "noise_snr_db", "gain_db", "patience"}
# Fields of a randomly initialised model built from a config (``models.ser.tiny_audio_config``).
SCRATCH_KEYS = {"kind", "hidden_size", "layers", "num_attention_heads", "intermediate_size", "conv_dim",
                "conv_kernel", "conv_stride"}
RF_KEYS = {"n_estimators", "min_samples_leaf", "class_weights", "feature_cache"}

CHECKPOINT = "checkpoint.pth"
MODEL_DIR = "model"
REPORT = "ser_report.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"
METRICS = "metrics.csv"


# ---------------------------------------------------------------------------------------------
# Config


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
    return load_config(path, validate_ser_training_config)


# ---------------------------------------------------------------------------------------------
# Corpus and splits


@dataclass(frozen=True)
class Clip:
    path: Path
    actor: int
    emotion: str  # RAVDESS emotion name


def read_ravdess(root: str | Path) -> list[Clip]:
    """RAVDESS speech clips under ``root`` (recursively; .wav or .flac), sorted by path.
    Songs (vocal channel 02) and files not named ``MM-VC-EE-II-SS-RR-AA`` are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"config key 'database_path': folder not found: {root}")
    clips = []
    for path in sorted(root.rglob("*")):
        match = RAVDESS_NAME.match(path.stem)
        if path.suffix.lower() not in AUDIO_SUFFIXES or not match or match[2] != SPEECH:
            continue
        code = int(match[3])
        if not 1 <= code <= len(RAVDESS_EMOTIONS):
            raise ConfigError(f"{path}: emotion code {match[3]} is not a RAVDESS emotion (01-08)")
        clips.append(Clip(path, int(match[7]), RAVDESS_EMOTIONS[code - 1]))
    if not clips:
        raise ConfigError(f"config key 'database_path': no RAVDESS speech files "
                          f"(MM-01-EE-II-SS-RR-AA.wav|flac) under {root}")
    return clips


def class_names(config: dict) -> tuple[str, ...]:
    """The 8 RAVDESS emotions, the 5 of the emotional TTS set (``data_utils.EMOTIONS``), or the
    sorted classes of a custom mapping."""
    emotion_map = config.get("emotion_map", "none")
    if isinstance(emotion_map, dict):
        return tuple(sorted(set(emotion_map.values())))
    return EMOTIONS if emotion_map == "tts5" else RAVDESS_EMOTIONS


def map_emotion(emotion: str, config: dict) -> str | None:
    """The class of a RAVDESS emotion under the config's mapping, None if the clip is dropped.
    ``tts5`` keeps the five emotions of the TTS set, drops fearful and disgust, and folds calm
    into neutral (``"calm": "neutral"``) or drops it (``"calm": "drop"``); a custom mapping
    keeps only the emotions it names."""
    emotion_map = config.get("emotion_map", "none")
    if isinstance(emotion_map, dict):
        return emotion_map.get(emotion)
    if emotion_map == "none":
        return emotion
    if emotion == "calm":
        return "neutral" if config.get("calm", "neutral") == "neutral" else None
    return emotion if emotion in EMOTIONS else None


def make_splits(clips: list[Clip], config: dict, seed: int) -> dict[str, list[Trial]]:
    """train / dev / test trials (``label`` = class index, ``speaker`` = actor, ``emotion`` = class).

    ``"split": "actor"`` puts every clip of an actor in the split that lists the actor;
    ``"random"`` shuffles the clips (seeded) into ``test_fraction`` test, ``dev_fraction`` dev and
    the rest train, so the same actors appear in every split (for comparison only)."""
    names = class_names(config)
    trials = []
    for clip in clips:
        label = map_emotion(clip.emotion, config)
        if label is not None:
            trials.append(Trial(clip.path.stem, clip.path, names.index(label), speaker=f"{clip.actor:02d}",
                                emotion=label))
    by_actor = config.get("split", "actor") == "actor"
    if by_actor:
        splits = {name: [t for t in trials if int(t.speaker) in config[f"{name}_actors"]]
                  for name in ("train", "dev", "test")}
    else:
        order = np.random.default_rng(seed).permutation(len(trials))
        n_test = round(config.get("test_fraction", 0.2) * len(trials))
        n_dev = round(config.get("dev_fraction", 0.1) * len(trials))
        shuffled = [trials[i] for i in order]
        splits = {"test": shuffled[:n_test], "dev": shuffled[n_test:n_test + n_dev],
                  "train": shuffled[n_test + n_dev:]}
    for name, split in splits.items():
        if not split and by_actor:
            raise ConfigError(f"config key '{name}_actors': no clips of these actors under {config['database_path']}")
        if not split:
            raise ConfigError(f"config key 'split': the random {name} split of the {len(trials)} clips under "
                              f"{config['database_path']} is empty")
        splits[name] = sorted(split, key=lambda t: str(t.path))
    return splits


def class_weights(trials: list[Trial], n_classes: int) -> torch.Tensor:
    """Inverse class frequency, n_clips / (n_classes * count), as scikit-learn's ``balanced``
    weighting: every class then carries the same total weight; absent classes get 0."""
    counts = np.bincount([t.label for t in trials], minlength=n_classes).astype(float)
    return torch.tensor(np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0),
                        dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Reports


def classification_report(labels: list[int], predictions: list[int], names: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1, per-class precision / recall / F1 / support and the confusion matrix
    (rows: true class, columns: predicted), over the classes in ``names``."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    classes = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    return {
        "n": len(labels),
        "accuracy": float(np.mean(np.array(labels) == np.array(predictions))),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        "chance_accuracy": float(np.bincount(labels, minlength=len(names)).max() / len(labels)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(names)},
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def print_report(title: str, report: dict) -> None:
    tqdm.write(f"{title}: accuracy {100 * report['accuracy']:.1f} %, macro-F1 {report['macro_f1']:.3f} "
               f"({report['n']} clips; majority class {100 * report['chance_accuracy']:.1f} %)")
    tqdm.write(f"  {'class':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>4}")
    for name, row in report["per_class"].items():
        tqdm.write(f"  {name:<10} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} {row['support']:4d}")


def plot_confusion(report: dict, names: tuple[str, ...], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(names), 0.8 + 0.7 * len(names)))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {100 * report['accuracy']:.1f} %, macro-F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train and dev (from metrics.csv rows)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("train", "dev"):
        loss_ax.plot(epochs, [float(r[f"{split}_loss"]) for r in rows], marker="o", label=split)
        acc_ax.plot(epochs, [100 * float(r[f"{split}_accuracy"]) for r in rows], marker="o", label=split)
    acc_ax.plot(epochs, [100 * float(r["dev_macro_f1"]) for r in rows], linestyle="--", label="dev macro-F1 x100")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="%", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dir: Path, config: dict, splits: dict[str, list[Trial]], reports: dict[str, dict],
                 extra: dict, skipped: SkipReport) -> dict:
    """``ser_report.json`` and the confusion-matrix PNG of the test split in ``run_dir``."""
    names = class_names(config)
    result = {
        "backend": config["backend"],
        "classes": list(names),
        "split": config.get("split", "actor"),
        "actors": {name: sorted({int(t.speaker) for t in trials}) for name, trials in splits.items()},
        "clips": {name: len(trials) for name, trials in splits.items()},
        **reports,
        **extra,
        "skipped_files": dict(sorted(skipped.reasons.items())),
    }
    (run_dir / REPORT).write_text(json.dumps(result, indent=2))
    plot_confusion(reports["test"], names, run_dir / CONFUSION_PNG, f"{config['backend']} on test actors "
                   f"{','.join(map(str, result['actors']['test']))}")
    print_report("test", reports["test"])
    tqdm.write(f"report: {run_dir / REPORT}")
    return result


# ---------------------------------------------------------------------------------------------
# eGeMAPS + random forest


def egemaps_features(trials: list[Trial], cache: Path, skipped: SkipReport) -> dict[str, np.ndarray]:
    """The 88 eGeMAPS v02 functionals of every trial's audio, keyed by path.

    Rows of ``cache`` (CSV: path, size, mtime_ns, features) are reused while the file's size and
    modification time are unchanged; new or changed files are extracted and the cache rewritten.
    """
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    columns = list(smile.feature_names)
    cached: dict[str, tuple[str, str, np.ndarray]] = {}
    if cache.is_file():
        with open(cache, newline="") as handle:
            reader = csv.reader(handle)
            if next(reader, None) == ["path", "size", "mtime_ns", *columns]:
                for row in reader:
                    cached[row[0]] = (row[1], row[2], np.array(row[3:], dtype=np.float64))
            else:
                tqdm.write(f"note: {cache} has other columns; features are extracted again")
    features, fresh = {}, 0
    for trial in tqdm(trials, desc="eGeMAPS", unit="file", leave=False):
        key = str(trial.path)
        stat = trial.path.stat() if trial.path.is_file() else None
        stamp = (str(stat.st_size), str(stat.st_mtime_ns)) if stat else None
        if stamp and key in cached and cached[key][:2] == stamp:
            features[key] = cached[key][2]
            continue
        try:
            audio = load_audio(trial.path)
        except AudioError as err:
            skipped.add([(key, err.reason)])
            continue
        features[key] = smile.process_signal(audio, SAMPLE_RATE).to_numpy()[0].astype(np.float64)
        cached[key] = (*stamp, features[key])
        fresh += 1
    if fresh:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "size", "mtime_ns", *columns])
            for key, (size, mtime, values) in sorted(cached.items()):
                writer.writerow([key, size, mtime, *(repr(float(v)) for v in values)])
    tqdm.write(f"eGeMAPS: {fresh} files extracted, {len(features) - fresh} from {cache}")
    return features


def run_egemaps_rf(config: dict, splits: dict[str, list[Trial]], run_dir: Path, seed: int,
                   output_dir: Path) -> dict:
    """Fit the random forest on the train split and report dev and test (a fit takes seconds, so
    training and evaluation are one step)."""
    from sklearn.ensemble import RandomForestClassifier

    started = time.time()
    skipped = SkipReport(tqdm.write)
    cache = Path(config.get("feature_cache", output_dir / "egemaps_features.csv"))
    features = egemaps_features([t for split in splits.values() for t in split], cache, skipped)
    kept = {name: [t for t in trials if str(t.path) in features] for name, trials in splits.items()}

    def matrix(trials: list[Trial]) -> np.ndarray:
        return np.stack([features[str(t.path)] for t in trials])

    forest = RandomForestClassifier(
        n_estimators=config.get("n_estimators", 500), min_samples_leaf=config.get("min_samples_leaf", 1),
        class_weight="balanced" if str_to_bool(config.get("class_weights", True)) else None,
        random_state=seed, n_jobs=1)
    forest.fit(matrix(kept["train"]), [t.label for t in kept["train"]])
    names = class_names(config)
    reports = {name: classification_report([t.label for t in kept[name]],
                                           forest.predict(matrix(kept[name])).tolist(), names)
               for name in ("dev", "test")}
    print_report("dev", reports["dev"])
    return write_report(run_dir, config, kept, reports, {"seconds": round(time.time() - started, 1),
                                                         "feature_cache": str(cache)}, skipped)


# ---------------------------------------------------------------------------------------------
# wav2vec 2.0-family fine-tuning


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
        wave = wave * 10 ** ((low + (high - low) * torch.rand(len(wave), 1)) / 20)
    if config.get("noise_snr_db"):
        low, high = config["noise_snr_db"]
        snr = low + (high - low) * torch.rand(len(wave), 1)
        power = wave.pow(2).mean(dim=1, keepdim=True)
        wave = wave + torch.randn_like(wave) * torch.sqrt(power / 10 ** (snr / 10))
    return wave


def set_lower_layers_trainable(model: nn.Module, n_layers: int, trainable: bool) -> None:
    for layer in model.base_model.encoder.layers[:n_layers]:
        layer.requires_grad_(trainable)


def evaluate_clips(model: nn.Module, extractor, trials: list[Trial], crop: int, batch_size: int,
                   num_workers: int, skipped: SkipReport, class_weight: torch.Tensor | None = None
                   ) -> tuple[np.ndarray, list[Trial], float]:
    """Class probabilities of each clip (mean over windows of ``crop`` samples, 50 % overlap),
    the trials that loaded, and the (class-weighted) cross-entropy of those clip probabilities."""
    model.eval()
    loader = make_loader(TrialDataset(trials, crop, "full"), batch_size, False, num_workers)
    by_id = {t.utt_id: t for t in trials}
    probabilities, kept = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="evaluate", leave=False):
            skipped.add(batch.failures)
            if not batch.utt_ids:
                continue
            logits = model(input_values=model_input(model, extractor, batch.x)).logits.float().cpu()
            for window_logits, utt_id in zip(logits.split(batch.counts), batch.utt_ids):
                probabilities.append(window_logits.softmax(dim=-1).mean(dim=0))
                kept.append(by_id[utt_id])
    if not kept:
        return np.zeros((0, 0)), kept, float("nan")
    stacked = torch.stack(probabilities)
    targets = torch.tensor([t.label for t in kept])
    loss = F.nll_loss(stacked.clamp_min(1e-12).log(), targets, weight=class_weight).item()
    return stacked.numpy(), kept, loss


def save_model_dir(model: nn.Module, extractor, path: Path) -> None:
    """The Hugging Face directory the emotion branch loads: config (with id2label), safetensors
    weights and the feature extractor's settings."""
    model.save_pretrained(path, safe_serialization=True)
    extractor.save_pretrained(path)


def train_hf(config: dict, splits: dict[str, list[Trial]], run_dir: Path, seed: int, device: torch.device,
             resume: dict | None) -> tuple[nn.Module, object]:
    """Fine-tune with early stopping on dev macro-F1; the best epoch is saved to ``run_dir/model``
    and returned with the feature extractor. A checkpoint after every epoch makes the run resumable."""
    names = class_names(config)
    if "scratch" in config:  # a randomly initialised model built from a config (no download)
        start = build_scratch_model(config["scratch"], names, run_dir / "init", seed)
    else:
        start = config["ser_path"]
    model, extractor = load_classifier(start, names, mask_time_prob=config.get("mask_time_prob", 0.05))
    model.to(device)
    if str_to_bool(config.get("freeze_feature_encoder", True)):
        model.freeze_feature_encoder()
    crop = round(config.get("crop_seconds", 3.0) * SAMPLE_RATE)
    num_workers = config.get("num_workers", 0)
    batch_size = config["batch_size"]
    generator = torch.Generator().manual_seed(seed)
    train_loader = make_loader(TrialDataset(splits["train"], crop, "train"), batch_size, True, num_workers,
                               generator, drop_last=len(splits["train"]) > batch_size)
    optimizer, scheduler = create_optimizer(trainable_parameters(model), config["optim_config"],
                                            config["num_epochs"] * len(train_loader))
    weight = (class_weights(splits["train"], len(names)) if str_to_bool(config.get("class_weights", True))
              else None)
    freeze_layers, freeze_epochs = config.get("freeze_layers", 0), config.get("freeze_epochs", 0)
    patience = config.get("patience", config["num_epochs"])
    skipped = SkipReport(tqdm.write)
    rows, best_f1, stale, first_epoch = [], -1.0, 0, 0
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        restore_rng_state(resume["rng"], generator)
        rows, best_f1, stale, first_epoch = resume["rows"], resume["best_f1"], resume["stale"], resume["epoch"]

    for epoch in range(first_epoch, config["num_epochs"]):
        if stale >= patience:
            break
        started = time.time()
        set_lower_layers_trainable(model, freeze_layers, epoch >= freeze_epochs)
        model.train()
        losses, correct, seen = [], 0, 0
        progress = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config['num_epochs']}", leave=False)
        for batch in progress:
            skipped.add(batch.failures)
            if not batch.utt_ids:
                continue
            logits = model(input_values=model_input(model, extractor, augment(batch.x, config))).logits
            labels = batch.labels.to(logits.device)
            loss = F.cross_entropy(logits, labels, weight=None if weight is None else weight.to(logits.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            correct += int((logits.argmax(dim=-1) == labels).sum())
            seen += len(labels)
            progress.set_postfix(loss=f"{np.mean(losses):.3f}")
        probabilities, kept, dev_loss = evaluate_clips(model, extractor, splits["dev"], crop, batch_size,
                                                       num_workers, skipped, weight)
        dev = classification_report([t.label for t in kept], probabilities.argmax(axis=1).tolist(), names)
        improved = dev["macro_f1"] > best_f1
        if improved:
            best_f1, stale = dev["macro_f1"], 0
            save_model_dir(model, extractor, run_dir / MODEL_DIR)
        else:
            stale += 1
        rows.append({"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 5),
                     "train_accuracy": round(correct / max(seen, 1), 5), "dev_loss": round(dev_loss, 5),
                     "dev_accuracy": round(dev["accuracy"], 5), "dev_macro_f1": round(dev["macro_f1"], 5),
                     "new_best": int(improved), "lr": scheduler.get_last_lr()[0],
                     "seconds": round(time.time() - started, 1)})
        write_metrics_csv(run_dir / METRICS, rows)
        tqdm.write(f"epoch {epoch + 1}: train loss {rows[-1]['train_loss']:.3f}, dev accuracy "
                   f"{100 * dev['accuracy']:.1f} %, dev macro-F1 {dev['macro_f1']:.3f}{' (best)' if improved else ''}")
        save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": rng_state(generator),
                     "rows": rows, "best_f1": best_f1, "stale": stale, "epoch": epoch + 1, "seed": seed},
                    run_dir / CHECKPOINT)
    if stale >= patience:
        tqdm.write(f"early stop: dev macro-F1 has not improved for {patience} epochs")
    plot_curves(rows, run_dir / CURVES_PNG)
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
        probabilities, kept, _ = evaluate_clips(model, extractor, splits[name], crop, config["batch_size"],
                                                config.get("num_workers", 0), skipped)
        reports[name] = classification_report([t.label for t in kept], probabilities.argmax(axis=1).tolist(), names)
        kept_splits[name] = kept
    print_report("dev", reports["dev"])
    return write_report(run_dir, config, kept_splits, reports, extra, skipped)


# ---------------------------------------------------------------------------------------------
# Prediction


def predict_folder(folder: Path, model_dir: Path, output: Path, crop_seconds: float, device: torch.device) -> int:
    """Write ``output`` (TSV: path relative to ``folder``, then the probability of each class);
    unreadable files are warned about and left out. Returns the number of files that failed."""
    files = find_audio_files(folder)
    model, extractor = load_classifier(model_dir)
    model.to(device)
    names = labels_of(model)
    trials = [Trial(str(path), folder / path, 0) for path in files]
    skipped = SkipReport(lambda message: print(message, file=sys.stderr))
    probabilities, kept, _ = evaluate_clips(model, extractor, trials, round(crop_seconds * SAMPLE_RATE), 8, 0, skipped)
    with open(output, "w") as handle:
        handle.write("\t".join(("path", *names)) + "\n")
        for trial, row in zip(kept, probabilities):
            handle.write("\t".join((trial.utt_id, *(f"{p:.6f}" for p in row))) + "\n")
    print(f"{len(kept)} files -> {output}" + (f" ({len(skipped)} could not be read)" if len(skipped) else ""))
    return len(skipped)


# ---------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="SER config (JSON)")
    parser.add_argument("--output_dir", default="./exp_result", help="parent folder of run folders")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--comment", help="suffix of the run folder name")
    parser.add_argument("--eval", action="store_true", help="report model_path (or --model) on the test split")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--predict", metavar="DIR", help="write per-file emotion probabilities of the audio in DIR")
    parser.add_argument("--model", help="trained SER directory for --predict / --eval (default: model_path)")
    parser.add_argument("--output", default="emotion_probs.tsv", help="--predict: the TSV to write")
    parser.add_argument("--crop_seconds", type=float, help="--predict: window length (default: the config's, else 3)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    args = parser.parse_args(argv)
    if not (args.config or args.resume or (args.predict and args.model)):
        parser.error("--config is required (or --resume RUN_DIR, or --predict DIR --model MODEL_DIR)")
    return args


def model_dir_from(args: argparse.Namespace, config: dict) -> Path:
    path = args.model or config.get("model_path")
    if not path:
        raise ConfigError("no trained model: give --model DIR or set 'model_path' in the config")
    if not Path(path).is_dir():
        raise ConfigError(f"model directory not found: {path}")
    return Path(path)


def run(args: argparse.Namespace) -> int:
    config = load_ser_config(Path(args.resume) / "config.conf" if args.resume else args.config) \
        if (args.config or args.resume) else {}
    device = select_device(args.device)
    if args.predict:
        crop = args.crop_seconds or config.get("crop_seconds", 3.0)
        return int(predict_folder(Path(args.predict), model_dir_from(args, config), Path(args.output), crop, device) > 0)

    resume = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / CHECKPOINT).is_file():
            raise ConfigError(f"--resume: no checkpoint in {run_dir} ({run_dir / CHECKPOINT} not found)")
        resume = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    seed = resume["seed"] if resume else args.seed
    seed_everything(seed)
    splits = make_splits(read_ravdess(config["database_path"]), config, seed)
    tqdm.write(", ".join(f"{name}: {len(trials)} clips" for name, trials in splits.items())
               + f"; classes: {', '.join(class_names(config))}")
    if not args.resume:
        suffix = ("_eval" if args.eval else "") + (f"_{args.comment}" if args.comment else "")
        run_dir = Path(args.output_dir) / f"{Path(args.config).stem}{suffix}"
        if (run_dir / CHECKPOINT).exists():
            raise ConfigError(f"{run_dir} already holds a run: continue it with --resume {run_dir} "
                              "or choose another --comment/--output_dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.conf").write_text(json.dumps(config, indent=4))

    if config["backend"] == "egemaps_rf":
        run_egemaps_rf(config, splits, run_dir, seed, Path(args.output_dir))
        return 0
    if args.eval:
        model_dir = model_dir_from(args, config)
        model, extractor = load_classifier(model_dir)
        if labels_of(model) != class_names(config):
            raise ConfigError(f"{model_dir} was trained for the classes {', '.join(labels_of(model))}, "
                              f"the config's emotion_map gives {', '.join(class_names(config))}")
        metrics = model_dir.parent / METRICS
        if metrics.is_file():  # the model's own training run: redraw its curves beside the report
            with open(metrics, newline="") as handle:
                plot_curves(list(csv.DictReader(handle)), run_dir / CURVES_PNG)
        report_hf(model.to(device), extractor, config, splits, run_dir, {"model": str(model_dir)})
        return 0
    started = time.time()
    model, extractor = train_hf(config, splits, run_dir, seed, device, resume)
    report_hf(model, extractor, config, splits, run_dir,
              {"model": str(run_dir / MODEL_DIR), "training_seconds": round(time.time() - started, 1)})
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        code = run(args)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()

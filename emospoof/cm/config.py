"""The countermeasure config (``config/*.conf`` read by ``main.py`` and ``inference.py``): its
keys and their checks. Every problem is reported at start-up in one line naming the key, before
any model is built or data is read; ``emospoof.cm.data`` reads the data the config names.

The keys are those of the AASIST reference configs plus emospoof's own (docs/config.md). A key
that is accepted does something: values the framework cannot honour yet are refused.
"""
from __future__ import annotations

from pathlib import Path

from emospoof.augment.pipeline import validate_augmentation_config
from emospoof.augment.preprocess import check_preprocess
from emospoof.cm.group_robust import check_group_config
from emospoof.core.config import ConfigError, check_keys, is_number, read_config, str_to_bool
from emospoof.corpora import check_spec, dataset_name
from emospoof.training.engine import TRAINING_KEYS, validate_training_keys
from emospoof.training.optim import OPTIM_KEYS
from models import import_architecture, validate_model_section
from models.emotion.branch import validate_ser_config
from models.emotion.conditioned import EmotionConditionedModel

TOP_LEVEL_KEYS = {
    "database_path", "asv_score_path", "dev_asv_score_path", "model_path", "batch_size",
    "num_epochs", "loss", "track", "eval_all_best", "eval_output", "cudnn_deterministic_toggle",
    "cudnn_benchmark_toggle", "freq_aug", "model_config", "optim_config", "num_workers",
    "eval_mode", "eval_hop", "swa", "init_weights", "emo_dataset", "emo_bonafide_system",
    "augmentation", "eval_condition", "train_dataset", "dev_dataset", "eval_datasets", "emotion_labels",
    "preprocess", "class_weights", "group_robust", "freeze_aasist_epochs", "emotion_calibration",
} | TRAINING_KEYS
REQUIRED_KEYS = ("batch_size", "num_epochs", "model_config", "optim_config")
BOOLEAN_KEYS = ("eval_all_best", "cudnn_deterministic_toggle", "cudnn_benchmark_toggle", "freq_aug", "swa")
LOSSES = ("CCE",)  # class-weighted cross-entropy; weights from class_weights (emospoof.cm.group_robust)
# The ASVspoof tracks, as shorthands for their data: the dataset format read at database_path for
# training, dev and the track's own eval set. ASVspoof 2021 has no training data of its own:
# both its LA and DF tasks train and select on ASVspoof 2019 LA, and DF is judged on the 2021 DF
# evaluation set, which a DF run must therefore name in eval_datasets.
TRACKS = {"LA": "asvspoof2019_la", "DF": "asvspoof2019_la", "ASVspoof5": "asvspoof5"}
# Report names the framework gives its own sets; eval_datasets may not reuse them.
RESERVED_NAMES = ("la_eval", "asvspoof5_eval", "emotional_set", "dev")


CALIBRATION_KEYS = {"ser_config", "features"}
COVARIATES = ("arousal_valence", "posterior")  # of emotion_calibration (emospoof.cm.emotion_calibrated)


def check_emotion_calibration(config: dict) -> None:
    """The ``emotion_calibration`` section: the SER whose emotion is the covariate, and which output."""
    section = config.get("emotion_calibration")
    if section is None:
        return
    if not isinstance(section, dict) or "ser_config" not in section:
        raise ConfigError("config key 'emotion_calibration': expected an object with a 'ser_config'")
    check_keys(section, CALIBRATION_KEYS, "emotion_calibration.")
    validate_ser_config(section["ser_config"], "emotion_calibration.ser_config")
    if section.get("features", "arousal_valence") not in COVARIATES:
        raise ConfigError(f"config key 'emotion_calibration.features': expected one of {', '.join(COVARIATES)}, "
                          f"got {section['features']!r}")


def _no_own_preprocess(spec: dict, where: str) -> None:
    """Training and dev data are read as the top-level ``preprocess`` says, all alike."""
    if "preprocess" in spec:
        raise ConfigError(f"config key '{where}.preprocess': training and dev data follow the top-level "
                          "'preprocess' (only eval_datasets entries may differ)")


def _check_datasets(config: dict) -> None:
    """The dataset specs: ``train_dataset`` (one or a list), ``dev_dataset``, ``eval_datasets``."""
    train = config.get("train_dataset")
    if train is not None:
        specs = train if isinstance(train, list) else [train]
        if not specs:
            raise ConfigError("config key 'train_dataset': expected a dataset or a non-empty list of datasets")
        for i, spec in enumerate(specs):
            check_spec(spec, f"train_dataset[{i}]" if isinstance(train, list) else "train_dataset")
            _no_own_preprocess(spec, f"train_dataset[{i}]" if isinstance(train, list) else "train_dataset")
    if "dev_dataset" in config:
        check_spec(config["dev_dataset"], "dev_dataset")
        _no_own_preprocess(config["dev_dataset"], "dev_dataset")
    check_preprocess(config.get("preprocess"), "preprocess")
    evaluated = config.get("eval_datasets", [])
    if not isinstance(evaluated, list):
        raise ConfigError(f"config key 'eval_datasets': expected a list of datasets, got {evaluated!r}")
    names: set[str] = set()
    for i, spec in enumerate(evaluated):
        check_spec(spec, f"eval_datasets[{i}]")
        check_preprocess(spec.get("preprocess"), f"eval_datasets[{i}].preprocess")
        name = dataset_name(spec)
        if name in names or name in RESERVED_NAMES:
            raise ConfigError(f"config key 'eval_datasets[{i}]': the name '{name}' is "
                              f"{'used twice' if name in names else 'reserved'}; give the set its own 'name'")
        names.add(name)
    track = config.get("track", "LA")
    if track not in TRACKS:
        raise ConfigError(f"config key 'track': {track!r} is not a track (available: {', '.join(TRACKS)}); "
                          "name other data with train_dataset, dev_dataset and eval_datasets")
    if track == "DF" and not any(spec["format"] == "asvspoof2021_df" for spec in evaluated):
        raise ConfigError("config key 'track': 'DF' is judged on ASVspoof 2021 DF eval: add an eval_datasets "
                          "entry with format asvspoof2021_df")
    if "database_path" not in config and ("train_dataset" not in config or "dev_dataset" not in config):
        raise ConfigError("config is missing the required key 'database_path' (the track's data; it may be "
                          "left out only when train_dataset and dev_dataset are given)")
    if "emotion_labels" in config and not (isinstance(config["emotion_labels"], str) and config["emotion_labels"]):
        raise ConfigError(f"config key 'emotion_labels': expected a file path, got {config['emotion_labels']!r}")


def validate_config(config: dict) -> None:
    """Check every key and value of a countermeasure config (no file is read)."""
    check_keys(config, TOP_LEVEL_KEYS, "")
    for key in REQUIRED_KEYS:
        if key not in config:
            raise ConfigError(f"config is missing the required key '{key}'")
    if not isinstance(config["optim_config"], dict):
        raise ConfigError("config key 'optim_config': expected an object")
    check_keys(config["optim_config"], OPTIM_KEYS, "optim_config.")
    validate_model_section(config["model_config"])
    if config.get("loss", "CCE") not in LOSSES:
        raise ConfigError(f"config key 'loss': {config['loss']!r} is not supported "
                          f"(available: {', '.join(LOSSES)}, the weighted cross-entropy)")
    _check_datasets(config)
    validate_augmentation_config(config)
    if config.get("eval_mode", "first") not in ("first", "full"):
        raise ConfigError(f"config key 'eval_mode': expected 'first' or 'full', got {config['eval_mode']!r}")
    for key in ("ssl_lr", "emotion_lr"):
        rate = config["optim_config"].get(key)
        if rate is not None and not (is_number(rate) and rate > 0):
            raise ConfigError(f"optim_config.{key}: expected a positive number or null, got {rate!r}")
    model_class = import_architecture(config["model_config"]["architecture"]).Model  # a factory for some
    emotion_model = isinstance(model_class, type) and issubclass(model_class, EmotionConditionedModel)
    if "emotion_lr" in config["optim_config"] and not emotion_model:
        raise ConfigError("optim_config.emotion_lr: only the emotion-conditioned models (AASIST_Concat, FiLM, "
                          "GFiLM, EmoMoE) have emotion parts")
    frozen_epochs = config.get("freeze_aasist_epochs", 0)
    if isinstance(frozen_epochs, bool) or not isinstance(frozen_epochs, int) or not 0 <= frozen_epochs < \
            config["num_epochs"]:
        raise ConfigError(f"config key 'freeze_aasist_epochs': expected an integer from 0 to num_epochs - 1, "
                          f"got {frozen_epochs!r}")
    if frozen_epochs and not emotion_model:
        raise ConfigError("config key 'freeze_aasist_epochs': only emotion-conditioned models train an emotion "
                          "part while AASIST waits")
    if frozen_epochs and str_to_bool(config["model_config"].get("freeze_aasist", False)):
        raise ConfigError("config key 'freeze_aasist_epochs': model_config.freeze_aasist already freezes AASIST "
                          "for the whole run")
    check_group_config(config)
    check_emotion_calibration(config)
    for key in BOOLEAN_KEYS:
        if key in config:
            str_to_bool(config[key], key)
    validate_training_keys(config)


def load_config(path: str | Path) -> dict:
    """Read and check a countermeasure config."""
    return read_config(path, validate_config)


def run_name(config_path: str, config: dict, comment: str | None) -> str:
    """The run folder's name: track, config name, epochs, batch size and the optional comment."""
    name = f"{config.get('track', 'LA')}_{Path(config_path).stem}_ep{config['num_epochs']}_bs{config['batch_size']}"
    return f"{name}_{comment}" if comment else name

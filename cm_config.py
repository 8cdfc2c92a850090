"""The countermeasure config (``config/*.conf`` read by ``main.py`` and ``inference.py``): its
keys, their checks, and the data paths it names. Every problem is reported at start-up in one
line naming the key or path, before any model is built or data is read.

The keys are those of the AASIST reference configs plus emospoof's own (docs/config.md). A key
that is accepted does something: values the framework cannot honour yet are refused.
"""
from __future__ import annotations

from pathlib import Path

from config import ConfigError, check_keys, is_number, read_config, str_to_bool
from data_utils import EmotionalSet, la_audio_dir, la_protocol_path, read_emotional_set
from engine import TRAINING_KEYS, validate_training_keys
from models.registry import validate_model_section
from utils import OPTIM_KEYS

TOP_LEVEL_KEYS = {
    "database_path", "asv_score_path", "dev_asv_score_path", "model_path", "batch_size",
    "num_epochs", "loss", "track", "eval_all_best", "eval_output", "cudnn_deterministic_toggle",
    "cudnn_benchmark_toggle", "freq_aug", "model_config", "optim_config", "num_workers",
    "eval_mode", "eval_hop", "swa", "init_weights", "emo_dataset", "emo_bonafide_system",
    "augmentation",
} | TRAINING_KEYS
REQUIRED_KEYS = ("database_path", "batch_size", "num_epochs", "model_config", "optim_config")
BOOLEAN_KEYS = ("eval_all_best", "cudnn_deterministic_toggle", "cudnn_benchmark_toggle", "freq_aug", "swa")
LOSSES = ("CCE",)  # weighted cross-entropy (0.1 spoof, 0.9 bona fide), the reference's loss
TRACKS = ("LA",)  # the data readers know the ASVspoof 2019 LA layout
DEV_ASV_SCORES = "ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"


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
    if config.get("track", "LA") not in TRACKS:
        raise ConfigError(f"config key 'track': {config['track']!r} is not supported yet (available: "
                          f"{', '.join(TRACKS)}; the data readers know the ASVspoof 2019 LA layout)")
    augmentation = config.get("augmentation", {})
    if not isinstance(augmentation, dict):
        raise ConfigError(f"config key 'augmentation': expected an object, got {augmentation!r}")
    if augmentation:
        raise ConfigError(f"config key 'augmentation': training-data augmentation is not available yet "
                          f"(got {', '.join(sorted(map(str, augmentation)))}); remove the section")
    if config["model_config"].get("emotion_ablation") == "shuffle" and config.get("eval_mode") == "full":
        raise ConfigError("model_config.emotion_ablation 'shuffle' needs eval_mode 'first' "
                          "(in 'full' mode a batch holds several windows of the same utterance)")
    if config.get("eval_mode", "first") not in ("first", "full"):
        raise ConfigError(f"config key 'eval_mode': expected 'first' or 'full', got {config['eval_mode']!r}")
    ssl_lr = config["optim_config"].get("ssl_lr")
    if ssl_lr is not None and not (is_number(ssl_lr) and ssl_lr > 0):
        raise ConfigError(f"optim_config.ssl_lr: expected a positive number or null, got {ssl_lr!r}")
    for key in BOOLEAN_KEYS:
        if key in config:
            str_to_bool(config[key], key)
    validate_training_keys(config)


def load_config(path: str | Path) -> dict:
    """Read and check a countermeasure config."""
    return read_config(path, validate_config)


def load_emotional_set(config: dict) -> EmotionalSet:
    """The set named by ``emo_dataset``; any problem is a ConfigError naming the key."""
    try:
        return read_emotional_set(config["emo_dataset"], config.get("emo_bonafide_system", "ESD"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"config key 'emo_dataset': {err}") from None


def has_la_eval(config: dict) -> bool:
    return la_audio_dir(config["database_path"], "eval").exists()


def check_paths(config: dict, splits: list[str]) -> None:
    """The data a run needs exists: the LA ``splits`` and, when configured, the emotional set."""
    if "emo_dataset" in config:
        load_emotional_set(config)
    database = Path(config["database_path"])
    if not database.is_dir():
        raise ConfigError(f"config key 'database_path': folder not found: {database}")
    for split in splits:
        for path in (la_protocol_path(database, split), la_audio_dir(database, split)):
            if not path.exists():
                raise ConfigError(f"{split} data not found: {path} (database_path should be the LA/ folder)")
    if "train" in splits and str_to_bool(config.get("eval_all_best", False), "eval_all_best") and not has_la_eval(config):
        raise ConfigError(f"config key 'eval_all_best': LA eval data not found at "
                          f"{la_audio_dir(database, 'eval')}; set it to \"False\" or add the eval data")


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


def run_name(config_path: str, config: dict, comment: str | None) -> str:
    """The run folder's name: track, config name, epochs, batch size and the optional comment."""
    name = f"{config.get('track', 'LA')}_{Path(config_path).stem}_ep{config['num_epochs']}_bs{config['batch_size']}"
    return f"{name}_{comment}" if comment else name

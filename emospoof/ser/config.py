"""The config of ``train_ser.py``: its keys per backend and their checks (docs/config.md).
Every problem is one ConfigError naming the key."""
from __future__ import annotations

from pathlib import Path

from emospoof.core.config import ConfigError, check_keys, is_number, read_config, str_to_bool
from emospoof.corpora.ravdess import RAVDESS_EMOTIONS
from emospoof.training.engine import TRAINING_KEYS, validate_training_keys
from emospoof.training.optim import OPTIM_KEYS

ACRNN_DIMS = (128, 256, 768, 128)  # the sizes of AMSDF's ACRNN (models.ser.ACRNN)
BACKENDS = ("hf", "egemaps_rf", "acrnn", "egemaps_linear")
COMMON_KEYS = {"backend", "database_path", "split", "train_actors", "dev_actors", "test_actors",
               "test_fraction", "dev_fraction", "emotion_map", "calm", "model_path", "num_workers"}
# Keys of the backends trained by gradient descent (engine.fit), then of each backend.
TRAINED_KEYS = {"batch_size", "num_epochs", "optim_config", "crop_seconds", "class_weights", "noise_snr_db",
                "gain_db", "patience"} | TRAINING_KEYS
HF_KEYS = TRAINED_KEYS | {"ser_path", "scratch", "freeze_feature_encoder", "freeze_layers", "freeze_epochs",
                          "mask_time_prob"}
ACRNN_KEYS = TRAINED_KEYS | {"acrnn_dims"}
# Fields of a randomly initialised model built from a config (``models.encoders.hf_audio.tiny_audio_config``).
SCRATCH_KEYS = {"kind", "hidden_size", "layers", "num_attention_heads", "intermediate_size", "conv_dim",
                "conv_kernel", "conv_stride"}
RF_KEYS = {"n_estimators", "min_samples_leaf", "class_weights", "feature_cache"}
LINEAR_KEYS = {"C", "class_weights", "feature_cache", "arousal_valence", "arousal_valence_alpha"}
BACKEND_KEYS = {"hf": HF_KEYS, "acrnn": ACRNN_KEYS, "egemaps_rf": RF_KEYS, "egemaps_linear": LINEAR_KEYS}


def validate_ser_training_config(config: dict) -> None:
    """Every key and value problem is one ConfigError naming the key."""
    backend = config.get("backend")
    if backend not in BACKENDS:
        raise ConfigError(f"config key 'backend': expected one of {', '.join(BACKENDS)}, got {backend!r}")
    check_keys(config, COMMON_KEYS | BACKEND_KEYS[backend], "")
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
    if backend in ("hf", "acrnn"):
        validate_trained_keys(config)
    if backend == "hf":
        validate_hf_keys(config)
    if backend == "acrnn":
        dims = config.get("acrnn_dims", list(ACRNN_DIMS))
        if not (isinstance(dims, list) and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims)):
            raise ConfigError(f"config key 'acrnn_dims': expected 4 positive integers, got {dims!r}")
    if backend == "egemaps_linear" and not (is_number(config.get("C", 1.0)) and config.get("C", 1.0) > 0):
        raise ConfigError(f"config key 'C': expected a positive number, got {config['C']!r}")


def validate_trained_keys(config: dict) -> None:
    for key in ("batch_size", "num_epochs", "optim_config"):
        if key not in config:
            raise ConfigError(f"config is missing the required key '{key}'")
    # ssl_lr (a second learning rate for models.ssl encoders) has no meaning here: one model, one rate.
    check_keys(config["optim_config"], OPTIM_KEYS - {"ssl_lr"}, "optim_config.")
    validate_training_keys(config)
    for key in ("noise_snr_db", "gain_db"):
        value = config.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 2 and all(map(is_number, value))
                                      and value[0] <= value[1]):
            raise ConfigError(f"config key '{key}': expected [low, high] or null, got {value!r}")


def validate_hf_keys(config: dict) -> None:
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
    str_to_bool(config.get("freeze_feature_encoder", True), "freeze_feature_encoder")
    mask_time_prob = config.get("mask_time_prob", 0.0)
    if not (is_number(mask_time_prob) and 0 <= mask_time_prob < 1):
        raise ConfigError(f"config key 'mask_time_prob': expected a probability in [0, 1), got {mask_time_prob!r}")


def load_ser_config(path: str | Path) -> dict:
    return read_config(path, validate_ser_training_config)

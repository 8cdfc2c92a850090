"""Configuration, seeding, optimiser/scheduler and model construction shared by the entry points."""
from __future__ import annotations

import csv
import difflib
import importlib
import json
import math
import os
import random
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np
import torch
from torch import nn


class ConfigError(Exception):
    """A configuration problem; the message is one line naming the key or path."""


# Top-level keys: those of the AASIST reference configs plus emospoof's own (README "Config keys").
TOP_LEVEL_KEYS = {
    "database_path", "asv_score_path", "dev_asv_score_path", "model_path", "batch_size",
    "num_epochs", "loss", "track", "eval_all_best", "eval_output", "cudnn_deterministic_toggle",
    "cudnn_benchmark_toggle", "freq_aug", "model_config", "optim_config", "num_workers",
    "eval_mode", "eval_hop", "swa", "init_weights", "emo_dataset", "emo_bonafide_system",
    "augmentation",
}
OPTIM_KEYS = {"optimizer", "amsgrad", "base_lr", "lr_min", "betas", "weight_decay", "scheduler",
              "momentum", "nesterov", "ssl_lr"}
REQUIRED_KEYS = ("database_path", "batch_size", "num_epochs", "model_config", "optim_config")
# Modules of models/ that are shared code, not architectures.
NOT_ARCHITECTURES = {"__init__", "blocks", "ser", "ssl"}


def str_to_bool(value: bool | str, key: str = "value") -> bool:
    """Accept JSON booleans and the reference configs' "True"/"False" strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")


def check_keys(section: dict, allowed: set[str], where: str) -> None:
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{where}{key}'{hint}")


def is_number(value: object) -> bool:
    """An int or a float config value; JSON's true/false are bools, which Python counts as ints."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def import_architecture(name: str) -> ModuleType:
    """The module ``models/<name>.py``; its ``Model`` class builds the network."""
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or name in NOT_ARCHITECTURES:
        raise ConfigError(f"model_config.architecture: invalid name {name!r}")
    try:
        return importlib.import_module(f"models.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"models.{name}":
            raise
        known = sorted(p.stem for p in (Path(__file__).parent / "models").glob("*.py")
                       if p.stem not in NOT_ARCHITECTURES and not p.stem.startswith("_"))
        raise ConfigError(f"model_config.architecture: unknown architecture '{name}' "
                          f"(known: {', '.join(known)})") from None


def load_config(path: str | Path, validate: Callable[[dict], None] | None = None) -> dict:
    """Read and validate a JSON config (with ``validate``, default :func:`validate_config`, the
    countermeasure configs' checks); every problem is a one-line ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON ({err})") from None
    (validate or validate_config)(config)
    return config


def validate_config(config: dict) -> None:
    check_keys(config, TOP_LEVEL_KEYS, "")
    for key in REQUIRED_KEYS:
        if key not in config:
            raise ConfigError(f"config is missing the required key '{key}'")
    check_keys(config["optim_config"], OPTIM_KEYS, "optim_config.")
    model_config = config["model_config"]
    if "architecture" not in model_config:
        raise ConfigError("config is missing the required key 'model_config.architecture'")
    module = import_architecture(model_config["architecture"])
    check_keys(model_config, module.CONFIG_KEYS, "model_config.")
    if hasattr(module, "validate_model_config"):  # checks of nested or dependent model keys
        module.validate_model_config(model_config)
    if model_config.get("emotion_ablation") == "shuffle" and config.get("eval_mode") == "full":
        raise ConfigError("model_config.emotion_ablation 'shuffle' needs eval_mode 'first' "
                          "(in 'full' mode a batch holds several windows of the same utterance)")
    if config.get("eval_mode", "first") not in ("first", "full"):
        raise ConfigError(f"config key 'eval_mode': expected 'first' or 'full', got {config['eval_mode']!r}")
    # Training-data augmentation (RawBoost etc.) comes with its own issue; the section is accepted now.
    if not isinstance(config.get("augmentation", {}), dict):
        raise ConfigError(f"config key 'augmentation': expected an object, got {config['augmentation']!r}")
    ssl_lr = config["optim_config"].get("ssl_lr")
    if ssl_lr is not None and not (is_number(ssl_lr) and ssl_lr > 0):
        raise ConfigError(f"optim_config.ssl_lr: expected a positive number or null, got {ssl_lr!r}")
    for key in ("eval_all_best", "cudnn_deterministic_toggle", "cudnn_benchmark_toggle", "freq_aug", "swa"):
        if key in config:
            str_to_bool(config[key], key)


def build_model(model_config: dict) -> nn.Module:
    """Instantiate ``models/<architecture>.Model``; a missing model_config key is a ConfigError."""
    module = import_architecture(model_config["architecture"])
    try:
        return module.Model(model_config)
    except KeyError as err:
        raise ConfigError(f"config is missing the required key 'model_config.{err.args[0]}'") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What the optimiser gets: frozen parts (``requires_grad=False``) are left out entirely."""
    return [p for p in model.parameters() if p.requires_grad]


def parameter_groups(model: nn.Module, optim_config: dict) -> list:
    """The trainable parameters for ``create_optimizer``. With ``optim_config.ssl_lr`` the weights
    of every self-supervised speech model inside ``model`` (``models.ssl.SSLEncoder.model``) form
    a second group with that learning rate, the usual lower rate for fine-tuning a large
    pre-trained encoder; the scheduler scales both groups alike."""
    trainable = trainable_parameters(model)
    if optim_config.get("ssl_lr") is None:
        return trainable
    from models.ssl import SSLEncoder  # here: models import this module

    ssl_ids = {id(p) for module in model.modules() if isinstance(module, SSLEncoder)
               for p in module.model.parameters() if p.requires_grad}
    groups = [{"params": [p for p in trainable if id(p) not in ssl_ids]}]
    if ssl_ids:  # nothing to add when the SSL model is frozen
        groups.append({"params": [p for p in trainable if id(p) in ssl_ids], "lr": optim_config["ssl_lr"]})
    return groups


def seed_everything(seed: int, deterministic: bool = True, benchmark: bool = False) -> None:
    """Seed python, numpy and torch (all devices) and set the cuDNN switches from the config."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = benchmark


def rng_state(generator: torch.Generator) -> dict:
    """Every RNG a run draws from, in a form ``torch.load(weights_only=True)`` accepts (numpy's
    key array stored as a list)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": generator.get_state(),
    }


def restore_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["loader"])


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` through a temporary file, so an interrupted save never leaves a torn checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def create_optimizer(parameters, optim_config: dict, total_steps: int):
    """Adam (or SGD) with a per-step cosine decay from ``base_lr`` to ``lr_min``, as in AASIST.
    ``parameters``: a list of parameters or of parameter groups (:func:`parameter_groups`)."""
    base_lr = optim_config["base_lr"]
    name = optim_config.get("optimizer", "adam").lower()
    if name == "adam":
        optimizer = torch.optim.Adam(
            parameters, lr=base_lr, betas=tuple(optim_config.get("betas", (0.9, 0.999))),
            weight_decay=optim_config.get("weight_decay", 0.0),
            amsgrad=str_to_bool(optim_config.get("amsgrad", False), "optim_config.amsgrad"))
    elif name == "sgd":
        optimizer = torch.optim.SGD(
            parameters, lr=base_lr, momentum=optim_config.get("momentum", 0.9),
            weight_decay=optim_config.get("weight_decay", 0.0),
            nesterov=str_to_bool(optim_config.get("nesterov", False), "optim_config.nesterov"))
    else:
        raise ConfigError(f"optim_config.optimizer: unknown optimizer {name!r} (adam, sgd)")

    scheduler_name = optim_config.get("scheduler", "cosine")
    if scheduler_name == "cosine":
        floor = optim_config.get("lr_min", 0.0) / base_lr

        def cosine(step: int) -> float:
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    elif scheduler_name in ("none", "constant"):
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    else:
        raise ConfigError(f"optim_config.scheduler: unknown scheduler {scheduler_name!r} (cosine, none)")
    return optimizer, scheduler


def select_device(requested: str | None = None) -> torch.device:
    """CUDA when available (or asked for), else CPU; asking for missing CUDA is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA device is available")
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_weights(model: nn.Module, path: Path, device: torch.device, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict safely (``weights_only``) and strictly; any mismatch is one ConfigError
    naming the missing and unexpected keys or the first shape conflict. A model with a
    ``convert_state_dict(state)`` method (e.g. for another code base's published layout) has it
    applied first; then keys starting with one of ``ignore_prefixes`` (parts of a checkpoint the
    model does not use) are dropped."""
    if not path.is_file():
        raise ConfigError(f"model weights not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # corrupt file or pickled objects that weights_only refuses
        raise ConfigError(f"{path}: not a loadable state dict ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict, found {type(state).__name__}")
    if hasattr(model, "convert_state_dict"):
        try:
            state = model.convert_state_dict(state)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    load_state_strictly(model, {key: value for key, value in state.items() if not key.startswith(ignore_prefixes)},
                        f"{path}: weights do not fit the model")


def load_state_strictly(model: nn.Module, state: dict, problem: str) -> None:
    """``model.load_state_dict(state)`` with every key required; a mismatch is one ConfigError,
    ``problem`` followed by the missing and unexpected keys or the first shape conflict."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        conflict = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
        raise ConfigError(f"{problem} ({conflict})") from None
    if missing or unexpected:
        raise ConfigError(f"{problem} (missing keys: {missing[:5]}, unexpected keys: {unexpected[:5]})")

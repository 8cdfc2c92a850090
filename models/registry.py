"""The architecture registry: ``model_config.architecture`` names a module ``models/<name>.py``
whose ``Model(d_args)`` builds the network (the AASIST reference code's convention).

Each architecture module declares ``CONFIG_KEYS`` (the model_config keys it accepts) and may
define ``validate_model_config(model_config)`` for nested or dependent keys, so that a config is
checked completely before any weights are loaded.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from torch import nn

from config import ConfigError, check_keys

MODELS_DIR = Path(__file__).resolve().parent
# Modules of models/ that are shared code, not architectures.
NOT_ARCHITECTURES = {"__init__", "blocks", "dphubert", "emotion", "frozen", "fused", "hf_audio", "registry", "ser", "ssl"}


def architectures() -> list[str]:
    """The names ``model_config.architecture`` accepts."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.py") if p.stem not in NOT_ARCHITECTURES)


def import_architecture(name: str) -> ModuleType:
    """The module ``models/<name>.py``; its ``Model`` class builds the network."""
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or name in NOT_ARCHITECTURES:
        raise ConfigError(f"model_config.architecture: invalid name {name!r}")
    try:
        return importlib.import_module(f"models.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"models.{name}":
            raise
        raise ConfigError(f"model_config.architecture: unknown architecture '{name}' "
                          f"(known: {', '.join(architectures())})") from None


def validate_model_section(model_config: object) -> None:
    """Check ``model_config`` against its architecture's keys and rules (nothing is built)."""
    if not isinstance(model_config, dict):
        raise ConfigError("config key 'model_config': expected an object with at least 'architecture'")
    if "architecture" not in model_config:
        raise ConfigError("config is missing the required key 'model_config.architecture'")
    module = import_architecture(model_config["architecture"])
    check_keys(model_config, module.CONFIG_KEYS, "model_config.")
    if hasattr(module, "validate_model_config"):
        module.validate_model_config(model_config)


def build_model(model_config: dict) -> nn.Module:
    """Instantiate ``models/<architecture>.Model``; a missing model_config key is a ConfigError."""
    module = import_architecture(model_config["architecture"])
    try:
        return module.Model(model_config)
    except KeyError as err:
        raise ConfigError(f"config is missing the required key 'model_config.{err.args[0]}'") from None

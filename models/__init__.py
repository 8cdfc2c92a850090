"""The countermeasure architectures, one module ``models/<name>.py`` each, and their registry:
``model_config.architecture`` names a module whose ``Model(d_args)`` builds the network (the AASIST
reference code's convention). Every ``.py`` file at the top of ``models/`` is an architecture a
config can name; shared layers, encoders and the emotion branch live in the sub-packages
``layers/``, ``encoders/`` and ``emotion/``.

Each architecture module declares ``CONFIG_KEYS`` (the model_config keys it accepts) and may
define ``validate_model_config(model_config)`` for nested or dependent keys, so that a config is
checked completely before any weights are loaded.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from torch import nn

from emospoof.core.config import ConfigError, check_keys

MODELS_DIR = Path(__file__).resolve().parent


def architectures() -> list[str]:
    """The names ``model_config.architecture`` accepts."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.py") if p.stem != "__init__")


def import_architecture(name: str) -> ModuleType:
    """The module ``models/<name>.py``; its ``Model`` class builds the network."""
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"model_config.architecture: invalid name {name!r}")
    if name not in architectures():
        raise ConfigError(f"model_config.architecture: unknown architecture '{name}' "
                          f"(known: {', '.join(architectures())})")
    return importlib.import_module(f"models.{name}")


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


class ModelConfig(dict):
    """``model_config`` as a constructor reads it: looking up a key it lacks is a ConfigError naming
    the key. Any other KeyError raised while building (a state-dict key, a table lookup) is a bug
    or a problem of its own and keeps its traceback and message."""

    def __missing__(self, key: object):
        raise ConfigError(f"config is missing the required key 'model_config.{key}'")


def build_model(model_config: dict) -> nn.Module:
    """Instantiate ``models/<architecture>.Model``; a missing model_config key is a ConfigError."""
    module = import_architecture(model_config["architecture"])
    return module.Model(ModelConfig(model_config))

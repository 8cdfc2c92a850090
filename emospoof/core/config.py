"""Config primitives shared by every recipe: the one-line ``ConfigError``, JSON reading and the
checks every schema uses (booleans, numbers, unknown keys with a did-you-mean hint).

Each recipe owns its schema (``emospoof.cm.config`` for countermeasures, ``emospoof.ser.training`` for the SER models,
``models/<Arch>.py`` for each architecture's keys); this module knows none of them, so every module
of the project may import it without creating an import cycle.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Callable

from emospoof.core.errors import InputError


class ConfigError(InputError):
    """A configuration problem; the message is one line naming the key or path."""


def str_to_bool(value: bool | str, key: str = "value") -> bool:
    """Accept JSON booleans and the reference configs' "True"/"False" strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")


def check_keys(section: dict, allowed: set[str], where: str) -> None:
    """Refuse the first key of ``section`` not in ``allowed``; ``where`` prefixes its name."""
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{where}{key}'{hint}")


def is_number(value: object) -> bool:
    """An int or a float config value; JSON's true/false are bools, which Python counts as ints."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_config(path: str | Path, validate: Callable[[dict], None]) -> dict:
    """Read a JSON config and check it with ``validate``; every problem is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    validate(config)
    return config

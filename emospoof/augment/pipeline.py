"""The ``augmentation`` config section (training data) and ``eval_condition`` (named conditions
applied to the LA eval data by ``--eval``): their checks, each problem one line naming the key,
and the augmentation chains built from them.

A section holds up to seven steps, applied in this order, each with probability ``p`` (default 1):
``prosody`` (:mod:`emospoof.augment.prosody`), ``silence`` (:mod:`emospoof.augment.silence`),
``rawboost`` (:mod:`emospoof.augment.rawboost`), ``rir``, ``noise``, ``telephone`` and ``codec``
(:mod:`emospoof.augment.channel`). The speaker's production comes first, then the recording's
silence, then the room and the noise, then the channel, as in a real recording.

``prosody`` and ``silence`` change the duration: they are utterance-level steps
(``UTTERANCE_STEPS``), which a training dataset applies to the whole utterance before it cuts
the random crop (``Augmentation.before_crop``), and the others to the crop
(``Augmentation.after_crop``); elsewhere (eval conditions) all run on the whole utterance.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from data_utils import SAMPLE_RATE, find_audio_files
from emospoof.augment.channel import (CODECS, AudioFolder, CodecStep, NoiseStep, ReverbStep, TelephoneStep,
                                      codec_supported)
from emospoof.augment.prosody import ProsodyParams, ProsodyStep
from emospoof.augment.rawboost import RawBoost, RawBoostParams
from emospoof.augment.silence import COLOURS, SilenceParams, SilenceStep
from emospoof.core.config import ConfigError, check_keys, is_number

STEP_ORDER = ("prosody", "silence", "rawboost", "rir", "noise", "telephone", "codec")
UTTERANCE_STEPS = ("prosody", "silence")  # first in STEP_ORDER: in training, run before the crop
RAWBOOST_RANGES = {  # key -> (lowest, highest, integer)
    "centre_hz": (0, SAMPLE_RATE / 2, False), "bandwidth_hz": (1, SAMPLE_RATE / 2, False),
    "coeffs": (2, 2000, True), "gain_db": (None, None, False), "nonlinear_bias_db": (None, None, False),
    "snr_db": (None, None, False),
}
RAWBOOST_NUMBERS = {  # key -> (lowest, highest, integer)
    "n_filters": (1, 20, True), "n_bands": (1, 50, True), "impulse_percent": (0, 100, False),
    "impulse_gain": (0, None, False),
}
PROSODY_RANGES = {  # key -> (lowest, highest)
    "pitch_semitones": (-12, 12), "tempo": (0.5, 2), "gain_db": (-40, 40), "tilt_db_per_octave": (-12, 12),
}
SILENCE_RANGES = {"lead_s": (0, 10), "trail_s": (0, 10), "floor_dbfs": (-120, 0), "gain_db": (-40, 40)}
STEP_KEYS = {
    "prosody": {"p"} | set(PROSODY_RANGES),
    "silence": {"p", "colours"} | set(SILENCE_RANGES),
    "rawboost": {"p", "algo"} | set(RAWBOOST_RANGES) | set(RAWBOOST_NUMBERS),
    "codec": {"p", "codecs"},
    "telephone": {"p", "band_hz"},
    "noise": {"p", "dir", "snr_db"},
    "rir": {"p", "dir"},
}
CONDITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Augmentation:
    """A chain of steps ``(name, p, step)``; ``augmentation(x, rng)`` applies each with its
    probability, every draw from ``rng``. A training dataset calls ``before_crop`` on the whole
    utterance and ``after_crop`` on its crop instead, with the same generator: the two together
    draw and do what one call does on an utterance."""

    def __init__(self, steps: list[tuple[str, float, Callable]]) -> None:
        self.steps = steps

    @staticmethod
    def apply(steps: list[tuple[str, float, Callable]], x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for _, p, step in steps:
            if rng.random() < p:
                x = step(x, rng)
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(self.steps, x, rng)

    def before_crop(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The utterance-level steps (``UTTERANCE_STEPS``: they change the duration)."""
        return self.apply([s for s in self.steps if s[0] in UTTERANCE_STEPS], x, rng)

    def after_crop(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The other steps, which keep the length."""
        return self.apply([s for s in self.steps if s[0] not in UTTERANCE_STEPS], x, rng)

    def describe(self) -> str:
        return ", ".join(f"{name} (p={p:g}{', on the utterance' if name in UTTERANCE_STEPS else ''})"
                         for name, p, _ in self.steps)


def check_number(value: object, key: str, low: float | None = None, high: float | None = None,
                 integer: bool = False) -> float:
    """A number (an integer when ``integer``) within [low, high]."""
    kind = "an integer" if integer else "a number"
    if not is_number(value) or (integer and value != int(value)):
        raise ConfigError(f"config key '{key}': expected {kind}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = " and ".join(f"{word} {bound:g}" for word, bound in (("at least", low), ("at most", high))
                              if bound is not None)
        raise ConfigError(f"config key '{key}': expected {kind} {bounds}, got {value!r}")
    return int(value) if integer else float(value)


def check_range(value: object, key: str, low: float | None = None, high: float | None = None,
                integer: bool = False) -> tuple:
    """``[lowest, highest]`` of a uniform draw, or one number for a fixed value."""
    if is_number(value):
        value = [value, value]
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"config key '{key}': expected [min, max] or a number, got {value!r}")
    first, second = (check_number(v, key, low, high, integer) for v in value)
    if first > second:
        raise ConfigError(f"config key '{key}': min {first:g} is greater than max {second:g}")
    return first, second


def parse_codecs(value: object, key: str) -> dict[str, tuple[float, float] | None]:
    """A list of codec names or an object name -> compression range (null: the default range)."""
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        value = dict.fromkeys(value)
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"config key '{key}': expected a list of codec names or an object "
                          f"codec -> compression range, got {value!r}")
    codecs = {}
    for name, levels in value.items():
        if name not in CODECS:
            raise ConfigError(f"config key '{key}': unknown codec {name!r} (available: {', '.join(CODECS)})")
        if not codec_supported(name):
            working = [c for c in CODECS if codec_supported(c)]
            raise ConfigError(f"config key '{key}': the installed libsndfile cannot write {name!r} "
                              f"(it can: {', '.join(working) or 'none'})")
        if CODECS[name].compression is None and levels is not None:
            raise ConfigError(f"config key '{key}.{name}': {name} has a fixed bit rate; use null")
        codecs[name] = CODECS[name].compression if levels is None else check_range(levels, f"{key}.{name}", 0, 1)
    return codecs


def parse_colours(value: object, key: str) -> tuple[str, ...]:
    """A non-empty list of noise colours (``white``, ``pink``), without repeats."""
    if (not isinstance(value, list) or not value or len(set(map(str, value))) != len(value)
            or not all(colour in COLOURS for colour in value)):
        raise ConfigError(f"config key '{key}': expected a list of {' and/or '.join(COLOURS)}, got {value!r}")
    return tuple(value)


def parse_step(name: str, spec: object, where: str) -> dict:
    """The checked settings of one step (no file is read)."""
    key = f"{where}{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"config key '{key}': expected an object, got {spec!r}")
    check_keys(spec, STEP_KEYS[name], f"{key}.")
    settings = {"p": check_number(spec.get("p", 1.0), f"{key}.p", 0, 1)}
    if name == "rawboost":
        if "algo" not in spec:
            raise ConfigError(f"config key '{key}': 'algo' (1-8) is required")
        settings["algo"] = check_number(spec["algo"], f"{key}.algo", 1, 8, integer=True)
        params = {k: check_range(spec[k], f"{key}.{k}", *RAWBOOST_RANGES[k]) for k in RAWBOOST_RANGES if k in spec}
        params.update({k: check_number(spec[k], f"{key}.{k}", *RAWBOOST_NUMBERS[k])
                       for k in RAWBOOST_NUMBERS if k in spec})
        settings["params"] = RawBoostParams(**params)
    elif name == "prosody":
        settings["params"] = ProsodyParams(**{k: check_range(spec[k], f"{key}.{k}", *PROSODY_RANGES[k])
                                              for k in PROSODY_RANGES if k in spec})
    elif name == "silence":
        params = {k: check_range(spec[k], f"{key}.{k}", *SILENCE_RANGES[k]) for k in SILENCE_RANGES if k in spec}
        if "colours" in spec:
            params["colours"] = parse_colours(spec["colours"], f"{key}.colours")
        settings["params"] = SilenceParams(**params)
    elif name == "codec":
        default = [codec for codec in CODECS if codec_supported(codec)]
        settings["codecs"] = parse_codecs(spec.get("codecs", default), f"{key}.codecs")
    elif name == "telephone":
        band = check_range(spec.get("band_hz", [300, 3400]), f"{key}.band_hz", 0, SAMPLE_RATE / 2)
        if band[0] == band[1]:
            raise ConfigError(f"config key '{key}.band_hz': the band is empty ({band[0]:g} Hz)")
        settings["band_hz"] = band
    else:
        if not isinstance(spec.get("dir"), str):
            raise ConfigError(f"config key '{key}.dir': expected the folder of "
                              f"{'noise recordings' if name == 'noise' else 'impulse responses'}")
        settings["dir"] = spec["dir"]
        if name == "noise":
            settings["snr_db"] = check_range(spec.get("snr_db", [5, 20]), f"{key}.snr_db")
    return settings


def parse_section(section: object, where: str) -> dict[str, dict]:
    """Step name -> checked settings of an augmentation section, in application order."""
    if not isinstance(section, dict):
        raise ConfigError(f"config key '{where.rstrip('.')}': expected an object, got {section!r}")
    check_keys(section, set(STEP_ORDER), where)
    return {name: parse_step(name, section[name], where) for name in STEP_ORDER if name in section}


def parse_conditions(conditions: object) -> dict[str, dict[str, dict]]:
    """``eval_condition``: condition name -> augmentation section."""
    if not isinstance(conditions, dict) or not conditions:
        raise ConfigError(f"config key 'eval_condition': expected an object of named conditions, got {conditions!r}")
    for name in conditions:
        if not CONDITION_NAME.fullmatch(name):
            raise ConfigError(f"config key 'eval_condition': condition name {name!r} must be letters, digits, "
                              "'_', '.' or '-' (it names a score file)")
        if not conditions[name]:
            raise ConfigError(f"config key 'eval_condition.{name}': empty condition")
    return {name: parse_section(section, f"eval_condition.{name}.") for name, section in conditions.items()}


def validate_augmentation_config(config: dict) -> None:
    """Check ``augmentation`` and ``eval_condition`` of a countermeasure config (no file is read)."""
    parse_section(config.get("augmentation", {}), "augmentation.")
    if "eval_condition" in config:
        parse_conditions(config["eval_condition"])


def sections(config: dict, training: bool = True) -> dict[str, dict[str, dict]]:
    """Key prefix -> parsed section, for every eval condition and (``training``) the augmentation."""
    found = {"augmentation.": parse_section(config.get("augmentation", {}), "augmentation.")} if training else {}
    if "eval_condition" in config:
        found.update((f"eval_condition.{name}.", section)
                     for name, section in parse_conditions(config["eval_condition"]).items())
    return found


def check_augmentation_folders(config: dict, training: bool = True) -> None:
    """The noise and impulse-response folders of the eval conditions and (``training``) of the
    training augmentation exist and hold audio."""
    for where, section in sections(config, training).items():
        for name in ("noise", "rir"):
            if name in section:
                find_audio_files(Path(section[name]["dir"]), f"config key '{where}{name}.dir'")


def build_section(section: dict[str, dict], where: str, warn: Callable[[str], None] = print) -> Augmentation | None:
    """The chain of a parsed section; None when it is empty."""
    steps = []
    for name, settings in section.items():
        if name == "prosody":
            step = ProsodyStep(settings["params"])
        elif name == "silence":
            step = SilenceStep(settings["params"])
        elif name == "rawboost":
            step = RawBoost(settings["algo"], settings["params"], SAMPLE_RATE)
        elif name == "codec":
            step = CodecStep(settings["codecs"])
        elif name == "telephone":
            step = TelephoneStep(settings["band_hz"])
        else:
            folder = AudioFolder(settings["dir"], f"{where}{name}.dir", warn)
            step = NoiseStep(folder, settings["snr_db"]) if name == "noise" else ReverbStep(folder)
        steps.append((name, settings["p"], step))
    return Augmentation(steps) if steps else None


def build_augmentation(config: dict, warn: Callable[[str], None] = print) -> Augmentation | None:
    """The training augmentation of a countermeasure config (None without one)."""
    return build_section(parse_section(config.get("augmentation", {}), "augmentation."), "augmentation.", warn)


def build_eval_conditions(config: dict, warn: Callable[[str], None] = print) -> dict[str, Augmentation]:
    """Condition name -> its chain, for every ``eval_condition`` of the config."""
    if "eval_condition" not in config:
        return {}
    return {name: build_section(section, f"eval_condition.{name}.", warn)
            for name, section in parse_conditions(config["eval_condition"]).items()}

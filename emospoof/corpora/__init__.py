"""Dataset readers: the one home of every corpus layout the framework reads.

A dataset is named in a config by a *spec*, ``{"format": ..., "path": ..., ...}``; ``FORMATS``
lists the formats with the keys each accepts, ``check_spec`` checks a spec without reading a
file, and ``read_dataset`` returns its trials (``data_utils.Trial``: path, label, attack,
speaker, emotion, conditions). Every reader documents the layout it expects and where the data
comes from (docs/data.md); a malformed line is one ``DatasetError`` naming the
file and the line.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from emospoof.core.config import ConfigError
from emospoof.corpora.asvspoof import (SUBSETS, read_asvspoof5, read_asvspoof2019_la, read_asvspoof2021_df,
                                       read_asvspoof2021_la)
from emospoof.corpora.common import Corpus, read_emotion_labels, with_emotions
from emospoof.corpora.deepfake import FOR_SPLITS, read_fake_or_real, read_in_the_wild
from emospoof.corpora.emotional import EMOFAKE_SPLITS, read_emofake, read_emospoof_tts, read_emotional_set
from emospoof.corpora.protocol import read_protocol_tsv
from emospoof.corpora.ravdess import read_emotion_folders, read_ravdess_set


@dataclass(frozen=True)
class Format:
    """A reader, the splits it offers (``split_required``: one must be named), and the options
    its spec may carry beyond the keys every spec has."""

    read: Callable[..., Corpus]
    splits: tuple[str, ...] = ()
    split_required: bool = True
    options: tuple[str, ...] = ()


FORMATS = {
    "asvspoof2019_la": Format(read_asvspoof2019_la, ("train", "dev", "eval")),
    "asvspoof2021_la": Format(read_asvspoof2021_la, options=("subset", "keys")),
    "asvspoof2021_df": Format(read_asvspoof2021_df, options=("subset", "keys")),
    "asvspoof5": Format(read_asvspoof5, ("train", "dev", "eval"), options=("protocol",)),
    "in_the_wild": Format(read_in_the_wild),
    "fake_or_real": Format(read_fake_or_real, FOR_SPLITS, split_required=False),
    "emotional_tts": Format(lambda path, bonafide_system="ESD": read_emotional_set(path, bonafide_system),
                            options=("bonafide_system",)),
    "emofake": Format(read_emofake, EMOFAKE_SPLITS),
    "emospoof_tts": Format(read_emospoof_tts, options=("bonafide_system", "bonafide_path")),
    "protocol_tsv": Format(read_protocol_tsv),
    "ravdess": Format(read_ravdess_set, options=("actors",)),
    "emotion_folders": Format(read_emotion_folders),
}
# Keys of every spec: a report name, the format and path, optional label sources, and the
# preprocessing of its audio (emospoof.augment.preprocess; default: the config's "preprocess").
COMMON_KEYS = ("name", "format", "path", "asv_scores", "emotion_labels", "preprocess")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_spec(spec: object, where: str) -> None:
    """Check one dataset spec (``where`` names it in errors, e.g. ``eval_datasets[1]``)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"config key '{where}': expected an object with format and path, got {spec!r}")
    name = spec.get("format")
    if name not in FORMATS:
        close = difflib.get_close_matches(str(name), FORMATS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"config key '{where}.format': unknown dataset format {name!r}{hint}; "
                          f"formats: {', '.join(FORMATS)}")
    fmt = FORMATS[name]
    allowed = COMMON_KEYS + (("split",) if fmt.splits else ()) + fmt.options
    for key in spec:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{where}.{key}'{hint} (format {name} takes {', '.join(allowed)})")
    for key in ("path", "name", "asv_scores", "emotion_labels", "keys", "protocol", "bonafide_system",
                "bonafide_path"):
        if key in spec and not (isinstance(spec[key], str) and spec[key]):
            raise ConfigError(f"config key '{where}.{key}': expected a non-empty string, got {spec[key]!r}")
    if "path" not in spec:
        raise ConfigError(f"config key '{where}': missing 'path'")
    if "name" in spec and not NAME.match(spec["name"]):
        raise ConfigError(f"config key '{where}.name': {spec['name']!r} must be letters, digits, '_', '.' or '-' "
                          "(it names the report's files)")
    if fmt.splits and spec.get("split", None if fmt.split_required else fmt.splits[0]) not in fmt.splits:
        raise ConfigError(f"config key '{where}.split': format {name} needs one of {', '.join(fmt.splits)}, "
                          f"got {spec.get('split')!r}")
    actors = spec.get("actors", [1])
    if not (isinstance(actors, list) and actors and all(isinstance(a, int) and not isinstance(a, bool) and a > 0
                                                        for a in actors)):
        raise ConfigError(f"config key '{where}.actors': expected a non-empty list of actor numbers, got {actors!r}")
    if spec.get("subset", "eval") not in SUBSETS:
        raise ConfigError(f"config key '{where}.subset': expected one of {', '.join(SUBSETS)}, got {spec['subset']!r}")


def dataset_name(spec: dict) -> str:
    """The name a dataset's report and files carry: ``name``, else format and split."""
    return spec.get("name") or "_".join(str(p) for p in (spec["format"], spec.get("split")) if p)


def read_dataset(spec: dict) -> Corpus:
    """The trials of a checked spec, with the emotions of ``emotion_labels`` when named."""
    fmt = FORMATS[spec["format"]]
    options = {key: spec[key] for key in ("split", *fmt.options) if key in spec}
    corpus = fmt.read(Path(spec["path"]), **options)
    if "emotion_labels" in spec:
        corpus.trials = with_emotions(corpus.trials, read_emotion_labels(Path(spec["emotion_labels"])))
    return corpus


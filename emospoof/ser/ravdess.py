"""The RAVDESS corpus for speech-emotion recognition (Livingstone & Russo, PLoS ONE 2018): files
named ``MM-VC-EE-II-SS-RR-AA.wav|flac`` anywhere under a folder, actor-independent splits by
default (a model cannot score by recognising voices it was trained on), and the mappings of its
eight emotions to the classes a model is trained for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_utils import Trial, audio_files_under
from emospoof.core.config import ConfigError
from emospoof.core.emotions import TTS5_EMOTIONS
from emospoof.corpora.common import DatasetError
from emospoof.corpora.ravdess import RAVDESS_EMOTIONS, ravdess_speech

@dataclass(frozen=True)
class Clip:
    path: Path
    actor: int
    emotion: str  # RAVDESS emotion name


def read_ravdess(root: str | Path) -> list[Clip]:
    """RAVDESS speech clips under ``root`` (recursively, any audio suffix), sorted by path. Songs
    (vocal channel 02) and files not named ``MM-VC-EE-II-SS-RR-AA`` are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"config key 'database_path': folder not found: {root}")
    clips = []
    for path in audio_files_under(root):
        try:
            parsed = ravdess_speech(path)
        except DatasetError as err:
            raise ConfigError(str(err)) from None
        if parsed is not None:
            clips.append(Clip(path, *parsed))
    if not clips:
        raise ConfigError(f"config key 'database_path': no RAVDESS speech files "
                          f"(MM-01-EE-II-SS-RR-AA.<audio>) under {root}")
    return clips


def class_names(config: dict) -> tuple[str, ...]:
    """The 8 RAVDESS emotions, the 5 of the emotional TTS set (``emospoof.core.emotions.TTS5_EMOTIONS``), or the
    sorted classes of a custom mapping."""
    emotion_map = config.get("emotion_map", "none")
    if isinstance(emotion_map, dict):
        return tuple(sorted(set(emotion_map.values())))
    return TTS5_EMOTIONS if emotion_map == "tts5" else RAVDESS_EMOTIONS


RAVDESS_EMOTION = "ravdess_emotion"  # the condition holding a clip's emotion before mapping


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
    return emotion if emotion in TTS5_EMOTIONS else None


def make_splits(clips: list[Clip], config: dict, seed: int) -> dict[str, list[Trial]]:
    """train / dev / test trials (``label`` = class index, ``speaker`` = actor, ``emotion`` = class,
    the condition ``ravdess_emotion`` = the clip's own emotion before mapping).

    ``"split": "actor"`` puts every clip of an actor in the split that lists the actor;
    ``"random"`` shuffles the clips (seeded) into ``test_fraction`` test, ``dev_fraction`` dev and
    the rest train, so the same actors appear in every split (for comparison only)."""
    names = class_names(config)
    trials = []
    for clip in clips:
        label = map_emotion(clip.emotion, config)
        if label is not None:
            trials.append(Trial(clip.path.stem, clip.path, names.index(label), speaker=f"{clip.actor:02d}",
                                emotion=label, conditions=((RAVDESS_EMOTION, clip.emotion),)))
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

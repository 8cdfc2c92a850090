"""The emotion inputs of a countermeasure run, computed once per file on whole recordings
(``emospoof.scoring.utterances``): those of an emotion-conditioned model, its standardisation and
ablation statistics from the training set, and the SER-predicted emotions that place unlabelled
training trials in groups.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from data_utils import SkipReport, Trial, default_num_workers
from emospoof.core.config import ConfigError
from emospoof.core.emotions import UNLABELLED, normalise_emotion
from emospoof.scoring.utterances import utterance_features
from models.emotion.branch import SERBranch
from models.emotion.conditioned import EmotionConditionedModel

Inputs = dict[str, np.ndarray]


def takes_utterance_emotion(model: nn.Module) -> bool:
    """Whether ``model`` is conditioned on the emotion of the whole utterance."""
    return isinstance(model, EmotionConditionedModel) and model.emotion_source == "utterance"


def ser_workers(config: dict, device: torch.device) -> int:
    """Loader workers for a pass of an SER (or the model's emotion part) over whole recordings."""
    # loader workers cannot use the GPU: there the SER runs in the main process
    return 0 if device.type == "cuda" else config.get("num_workers", default_num_workers())


def emotion_inputs(model: nn.Module, trials: list[Trial], config: dict, device: torch.device, skips: SkipReport,
                   preprocess=None, desc: str = "emotion inputs") -> Inputs | None:
    """utterance id -> the model's raw emotion input of the whole recording, or None for a model
    that does not take one."""
    if not takes_utterance_emotion(model):
        return None
    return utterance_features(trials, lambda wave: model.raw_emotion(wave.to(device)), preprocess,
                              ser_workers(config, device), desc, skips)


def predicted_emotions(ser: SERBranch, trials: list[Trial], config: dict, device: torch.device, skips: SkipReport,
                       preprocess=None, desc: str = "SER emotions") -> dict[str, str]:
    """utterance id -> the emotion ``ser`` predicts for the whole recording (its argmax class)."""
    if not ser.labels:
        raise ConfigError("the SER has no emotion classifier to predict emotions with (see docs/emotion.md)")
    posteriors = utterance_features(trials, lambda wave: ser.posterior(wave.to(device)), preprocess,
                                    ser_workers(config, device), desc, skips)
    return {utt: normalise_emotion(ser.labels[int(np.argmax(p))]) for utt, p in posteriors.items()}


def fit_emotion_statistics(model: nn.Module, trials: list[Trial], inputs: Inputs | None, config: dict,
                           device: torch.device, skips: SkipReport, preprocess=None) -> None:
    """Set an emotion-conditioned model's standardisation and ablation statistics from the
    training trials' emotion inputs (computed here when the model takes its emotion per window).
    Each trial's emotion class is its label, else the SER's prediction when it has a classifier."""
    if not isinstance(model, EmotionConditionedModel):
        return
    if inputs is None:
        inputs = utterance_features(trials, lambda wave: model.raw_emotion(wave.to(device)), preprocess,
                                    ser_workers(config, device), "emotion statistics", skips)
    kept = [t for t in trials if t.utt_id in inputs]
    unlabelled = [t for t in kept if t.emotion == UNLABELLED]
    predicted = (predicted_emotions(model.ser, unlabelled, config, device, skips, preprocess)
                 if unlabelled and model.ser.labels else {})
    emotions = [t.emotion if t.emotion != UNLABELLED else predicted.get(t.utt_id, UNLABELLED) for t in kept]
    raw = torch.from_numpy(np.stack([inputs[t.utt_id] for t in kept]))
    model.set_emotion_statistics(raw, emotions)
    counts = {e: emotions.count(e) for e in sorted(set(emotions))}
    tqdm.write(f"emotion input statistics from {len(kept)} training files; classes {counts}")

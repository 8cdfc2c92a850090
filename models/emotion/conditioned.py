"""The base of the emotion-conditioned countermeasures (AASIST_Concat, AASIST_FiLM, AASIST_GFiLM,
AASIST_EmoMoE): AASIST plus a frozen SER branch (``models/emotion/branch.py``), the emotion input
they are conditioned on, and the ablations that test whether a model really uses it.

The emotion input. ``emotion_features`` picks what the SER gives: its ``embedding``, its emotion
``posterior``, or ``arousal_valence`` (two values; ``SERBranch.arousal_valence``).
``emotion_source`` says what it is computed on: ``utterance`` (default) -- the whole recording,
once per file, before any augmentation, handed to ``forward(x, emotion=...)`` with every crop and
window of the file (``emospoof.scoring.utterances``) -- or ``window``, the crop or window itself
(the SER then runs inside ``forward``; only then can an SER with ``freeze`` false be fine-tuned).
``emotion_norm``: ``standardise`` (the default per utterance) with the training recordings' mean
and standard deviation, kept in the model's buffers (:meth:`set_emotion_statistics`), which keeps
the magnitude -- for standardised eGeMAPS that is the arousal itself; ``l2`` (unit length, the
earlier behaviour, and the default per window, whose inputs those statistics do not describe) or
``none``.

Ablations (``emotion_ablation``, or ``main.py --eval --ablations``): ``zero`` gives every
utterance the all-zero conditioning input (after standardisation that is the training mean; for
a posterior gate, the uniform distribution); ``mean`` the training-mean emotion input; ``shuffle``
the mean input of another emotion class -- each utterance is assigned the class whose training
mean its input is nearest to, and gets the mean of the next class in a fixed cycle, so the emotion
is always a real but wrong one, whatever the batch and even for one utterance (a batch neighbour
in a sorted emotional set is usually the same emotion). The class means come from the training
set's emotion labels, or the SER's predicted class for unlabelled trials.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from emospoof.core.checkpoint import load_weights
from emospoof.core.config import ConfigError, str_to_bool
from emospoof.core.emotions import KNOWN_EMOTIONS
from models import AASIST
from models.emotion.branch import SERBranch, validate_ser_config
from models.layers.frozen import KeepsFrozen

ABLATIONS = ("none", "zero", "mean", "shuffle")
EMOTION_SOURCES = ("utterance", "window")
EMOTION_FEATURES = ("embedding", "posterior", "arousal_valence")
EMOTION_NORMS = ("standardise", "l2", "none")
# The emotion classes whose training means the shuffle ablation cycles through (sorted names).
CLASS_NAMES = tuple(sorted(KNOWN_EMOTIONS))
# model_config keys every emotion-conditioned model accepts (each adds its own).
EMOTION_KEYS = AASIST.CONFIG_KEYS | {"aasist_path", "freeze_aasist", "ser_config", "emotion_ablation",
                                     "emotion_source", "emotion_features", "emotion_norm"}


def validate_emotion_config(model_config: dict) -> None:
    """Checks shared by the emotion-conditioned models (at config validation)."""
    if "ser_config" not in model_config:
        raise ConfigError("config is missing the required key 'model_config.ser_config'")
    validate_ser_config(model_config["ser_config"])
    for key, allowed, default in (("emotion_ablation", ABLATIONS, "none"),
                                  ("emotion_source", EMOTION_SOURCES, "utterance"),
                                  ("emotion_features", EMOTION_FEATURES, "embedding"),
                                  ("emotion_norm", EMOTION_NORMS, "standardise")):
        if model_config.get(key, default) not in allowed:
            raise ConfigError(f"model_config.{key}: expected one of {', '.join(allowed)}, got {model_config[key]!r}")
    str_to_bool(model_config.get("freeze_aasist", False), "model_config.freeze_aasist")
    per_window = model_config.get("emotion_source", "utterance") == "window"
    if per_window and model_config.get("emotion_norm") == "standardise":
        raise ConfigError("model_config.emotion_norm: 'standardise' takes its mean and deviation from whole "
                          "recordings, which a model conditioned per window (emotion_source 'window') never sees; "
                          "use 'l2' (its default) or 'none'")
    if not per_window and not str_to_bool(model_config["ser_config"].get("freeze", True),
                                          "model_config.ser_config.freeze"):
        raise ConfigError("model_config.ser_config.freeze: false fine-tunes the SER, but with emotion_source "
                          "'utterance' its output is computed once per file before training and never sees a "
                          "gradient; set emotion_source to 'window' to fine-tune it")


def default_norm(model_config: dict) -> str:
    """``emotion_norm`` when the config leaves it out: ``standardise`` for an utterance's input
    (statistics of the training recordings), ``l2`` for a window's."""
    return model_config.get("emotion_norm", "l2" if model_config.get("emotion_source") == "window" else "standardise")


class EmotionConditionedModel(KeepsFrozen):
    """AASIST (``self.aasist``, optionally initialised from ``aasist_path`` and frozen) plus the SER
    branch (``self.ser``); subclasses decide how the emotion input conditions AASIST and list
    their emotion parts (``emotion_parts``) for their own learning rate."""

    emotion_parts: tuple[str, ...] = ()

    def __init__(self, d_args: dict) -> None:
        super().__init__()
        self.aasist = AASIST.Model(d_args)
        if d_args.get("aasist_path"):
            load_weights(self.aasist, Path(d_args["aasist_path"]), torch.device("cpu"))
        if str_to_bool(d_args.get("freeze_aasist", False), "model_config.freeze_aasist"):
            self.freeze_part("aasist")
        self.ser = SERBranch(d_args["ser_config"])
        self.ablation = d_args.get("emotion_ablation", "none")
        self.emotion_source = d_args.get("emotion_source", "utterance")
        self.emotion_features = d_args.get("emotion_features", "embedding")
        self.emotion_norm = default_norm(d_args)
        if self.emotion_features == "posterior" and not self.ser.labels:
            raise ConfigError("model_config.emotion_features: 'posterior' needs an SER with an emotion classifier "
                              "(see docs/emotion.md)")
        dim = self.emotion_dim
        self.register_buffer("emotion_mean", torch.zeros(dim))
        self.register_buffer("emotion_std", torch.ones(dim))
        self.register_buffer("class_means", torch.zeros(len(CLASS_NAMES), dim))
        self.register_buffer("class_counts", torch.zeros(len(CLASS_NAMES)))

    @property
    def emotion_dim(self) -> int:
        """Length of the SER output the model is conditioned on."""
        if self.emotion_features == "posterior":
            return len(self.ser.labels)
        return 2 if self.emotion_features == "arousal_valence" else self.ser.embedding_dim

    def raw_emotion(self, wave: torch.Tensor) -> torch.Tensor:
        """What the SER gives for each waveform (batch, samples): embedding, posterior or arousal/valence."""
        if self.emotion_features == "posterior":
            return self.ser.posterior(wave)
        if self.emotion_features == "arousal_valence":
            return self.ser.arousal_valence(wave)
        return self.ser(wave)

    @torch.no_grad()
    def set_emotion_statistics(self, raw: torch.Tensor, emotions: list[str]) -> None:
        """Standardisation and ablation statistics from the training set's emotion inputs (one row
        per utterance) and each utterance's emotion class ('-' when neither labelled nor predicted)."""
        raw = raw.to(self.emotion_mean.device, torch.float32)
        self.emotion_mean.copy_(raw.mean(dim=0))
        self.emotion_std.copy_(raw.std(dim=0).clamp_min(1e-6) if len(raw) > 1 else torch.ones_like(self.emotion_std))
        for index, name in enumerate(CLASS_NAMES):
            members = torch.tensor([emotion == name for emotion in emotions], device=raw.device)
            self.class_counts[index] = members.sum()
            self.class_means[index] = raw[members].mean(dim=0) if members.any() else 0.0

    def _ablated_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """``mean`` and ``shuffle`` replace each row by a training mean (see the module docstring)."""
        if self.ablation == "mean":
            return self.emotion_mean.expand_as(raw)
        if self.ablation != "shuffle":
            return raw
        present = torch.nonzero(self.class_counts > 0).flatten()
        if len(present) < 2:
            raise ConfigError("emotion_ablation 'shuffle' needs the training means of two emotion classes or more "
                              "(weights trained with emotion statistics; see docs/emotion.md)")
        means = self.class_means[present]
        nearest = torch.cdist(raw.float(), means).argmin(dim=1)
        return means[(nearest + 1) % len(present)].to(raw.dtype)

    def _normalised(self, raw: torch.Tensor) -> torch.Tensor:
        if self.emotion_norm == "standardise":
            return (raw - self.emotion_mean) / self.emotion_std
        return F.normalize(raw, dim=-1) if self.emotion_norm == "l2" else raw

    def _raw_or_window(self, x: torch.Tensor, emotion: torch.Tensor | None, window_features) -> torch.Tensor:
        """The utterance's SER output, or with ``emotion_source`` 'window' the window's own. A model
        conditioned per utterance refuses to guess from the window: scored without its utterance
        inputs it would not be the model that was trained."""
        if emotion is not None:
            return emotion.float()
        if self.emotion_source == "utterance":
            raise ConfigError("this model is conditioned on the emotion of the whole utterance (emotion_source "
                              "'utterance'): score it with main.py or inference.py, which compute that input per "
                              "file, or call it with emotion=...")
        return window_features(x).float()

    def emotion(self, x: torch.Tensor, emotion: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioning input of each window: the SER output of its utterance (``emotion``,
        computed once per file) or of the window itself, ablated and normalised as configured."""
        raw = self._raw_or_window(x, emotion, self.raw_emotion)
        if self.ablation == "zero":
            return torch.zeros_like(raw)
        return self._normalised(self._ablated_raw(raw))

    def emotion_posterior(self, x: torch.Tensor, emotion: torch.Tensor | None = None) -> torch.Tensor:
        """The SER's emotion probabilities (``emotion`` when given), ablated: ``zero`` is the uniform
        distribution; used as a gate, so never normalised."""
        p = self._raw_or_window(x, emotion, self.ser.posterior)
        if self.ablation == "zero":
            return torch.full_like(p, 1 / p.size(-1))
        return self._ablated_raw(p)

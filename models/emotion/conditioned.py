"""The base of the emotion-conditioned countermeasures (AASIST_Concat, AASIST_FiLM, AASIST_GFiLM):
AASIST plus a frozen SER branch (``models/emotion/branch.py``), and the emotion ablations that test whether
a model really uses the emotion it is given.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from emospoof.core.checkpoint import load_weights
from emospoof.core.config import ConfigError, str_to_bool
from emospoof.core.errors import InputValueError
from models import AASIST
from models.emotion.branch import SERBranch, validate_ser_config
from models.layers.frozen import KeepsFrozen

ABLATIONS = ("none", "zero", "shuffle")
# model_config keys every emotion-conditioned model accepts (each adds its own).
EMOTION_KEYS = AASIST.CONFIG_KEYS | {"aasist_path", "freeze_aasist", "ser_config", "emotion_ablation"}
BONAFIDE = 1  # logit index of the bona fide class, as in AASIST


def validate_emotion_config(model_config: dict) -> None:
    """Checks shared by AASIST_Concat / AASIST_FiLM / AASIST_GFiLM (at config validation)."""
    if "ser_config" not in model_config:
        raise ConfigError("config is missing the required key 'model_config.ser_config'")
    validate_ser_config(model_config["ser_config"])
    if model_config.get("emotion_ablation", "none") not in ABLATIONS:
        raise ConfigError(f"model_config.emotion_ablation: expected one of {', '.join(ABLATIONS)}, "
                          f"got {model_config['emotion_ablation']!r}")
    str_to_bool(model_config.get("freeze_aasist", False), "model_config.freeze_aasist")


class EmotionConditionedModel(KeepsFrozen):
    """AASIST (``self.aasist``, optionally initialised from ``aasist_path`` and frozen) plus the SER
    branch (``self.ser``); subclasses decide how the emotion embedding conditions AASIST."""

    def __init__(self, d_args: dict) -> None:
        super().__init__()
        self.aasist = AASIST.Model(d_args)
        if d_args.get("aasist_path"):
            load_weights(self.aasist, Path(d_args["aasist_path"]), torch.device("cpu"))
        if str_to_bool(d_args.get("freeze_aasist", False), "model_config.freeze_aasist"):
            self.freeze_part("aasist")
        self.ser = SERBranch(d_args["ser_config"])
        self.ablation = d_args.get("emotion_ablation", "none")
        self._last_emotion: torch.Tensor | None = None

    def emotion(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised emotion embedding of each waveform, after the configured ablation.

        Normalising makes the conditioning independent of the backend's embedding scale.
        ``shuffle`` gives each utterance its batch neighbour's embedding (a one-utterance batch
        takes the previous batch's), so the model sees a real but mismatched emotion.
        """
        e = F.normalize(self.ser(x), dim=-1)
        return self._ablated(e, 0.0)

    def emotion_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """The SER's emotion probabilities of each waveform, after the configured ablation: ``zero``
        gives the uniform distribution (no emotion information), ``shuffle`` the batch neighbour's."""
        p = self.ser.posterior(x)
        return self._ablated(p, 1 / p.size(-1))

    def _ablated(self, values: torch.Tensor, uninformative: float) -> torch.Tensor:
        """``values`` (one row per utterance) after the configured ablation: every entry set to
        ``uninformative`` for ``zero``; for ``shuffle`` each row's batch neighbour (a one-utterance
        batch takes the previous batch's)."""
        if self.ablation == "zero":
            return torch.full_like(values, uninformative)
        if self.ablation == "shuffle":
            previous, self._last_emotion = self._last_emotion, values.detach()
            if len(values) > 1:
                return values.roll(1, dims=0)
            if previous is None:
                raise InputValueError("emotion_ablation 'shuffle' needs at least two utterances in the first batch")
            return previous[:1]
        return values

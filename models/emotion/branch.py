"""The speech-emotion-recognition (SER) branch shared by the emotion-aware countermeasures (the
models that build on it: ``models/emotion/conditioned.py``).

The branch turns a 16 kHz waveform into an utterance-level emotion embedding. It is frozen by
default (``"freeze": true``): parameters have ``requires_grad=False`` (so the training loop leaves
them out of the optimiser), the encoder stays in eval mode whatever ``train()`` is called with
(BatchNorm statistics and dropout untouched) and its forward runs under ``torch.no_grad`` (no graph
is built). ``"freeze": false`` fine-tunes it with the rest of the model.

Backends, ``model_config.ser_config.backend``, one module each: ``"hf"`` (``models/emotion/hf.py``:
a Hugging Face audio encoder or classifier), ``"acrnn"`` (``models/emotion/acrnn.py``: AMSDF's
emotion encoder) and ``"egemaps"`` (``models/emotion/egemaps.py``: the eGeMAPS functionals).
Every backend with an emotion classifier also gives the posterior over its classes
(:meth:`SERBranch.posterior`), which the emotion-gated experts of AASIST_EmoMoE mix by.
"""
from __future__ import annotations

from pathlib import Path

import torch

from emospoof.core.config import ConfigError, str_to_bool
from emospoof.core.emotions import AROUSAL_VALENCE
from models.emotion.acrnn import ACRNNEncoder
from models.emotion.egemaps import EGeMAPSEncoder
from models.emotion.hf import HFEncoder
from models.layers.frozen import KeepsFrozen, no_grad_if

SER_KEYS = {"backend", "ser_path", "layer", "freeze", "acrnn_dims"}
BACKENDS = ("hf", "acrnn", "egemaps")
ENCODERS = {"hf": HFEncoder, "acrnn": ACRNNEncoder, "egemaps": EGeMAPSEncoder}


class SERBranch(KeepsFrozen):
    """Waveform (batch, samples) at 16 kHz -> emotion embedding (batch, ``embedding_dim``) and,
    when the backend has an emotion classifier, the emotion posterior over ``labels``."""

    def __init__(self, ser_config: dict) -> None:
        super().__init__()
        validate_ser_config(ser_config)
        self.encoder = ENCODERS[ser_config["backend"]](ser_config)
        self.embedding_dim = self.encoder.embedding_dim
        self.labels: tuple[str, ...] = self.encoder.labels
        self.frozen = str_to_bool(ser_config.get("freeze", True), "model_config.ser_config.freeze")
        if self.frozen:
            self.freeze_part("encoder")

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with no_grad_if(self.frozen):
            return self.encoder(wave).float()

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """Frame-level features (batch, steps, ``embedding_dim``) that the embedding summarises:
        ACRNN's attention-weighted BiLSTM steps, or the HF model's hidden state ``layer``."""
        with no_grad_if(self.frozen):
            return self.encoder.frames(wave).float()

    def posterior(self, wave: torch.Tensor) -> torch.Tensor:
        """Emotion probabilities (batch, ``len(labels)``); needs a backend with a classifier: an HF
        audio-classification checkpoint with ``layer`` 'penultimate', an ACRNN checkpoint with its
        classifier, or eGeMAPS statistics with a probe."""
        if not self.labels:
            raise ConfigError("model_config.ser_config: this SER has no emotion classifier, so no emotion "
                              "posterior (see docs/emotion.md)")
        with no_grad_if(self.frozen):
            return self.encoder.posterior(wave).float()

    def arousal_valence(self, wave: torch.Tensor) -> torch.Tensor:
        """(batch, 2): arousal and valence in about [-1, 1] (``emospoof.core.emotions.AROUSAL_VALENCE``),
        from the backend's regression head (the eGeMAPS file written by ``train_ser.py`` with
        ``"arousal_valence": true``), else as expected under the emotion posterior."""
        if getattr(self.encoder, "has_arousal_valence", False):
            with no_grad_if(self.frozen):
                return self.encoder.arousal_valence(wave).float()
        unknown = [label for label in self.labels if label not in AROUSAL_VALENCE]
        if not self.labels or unknown:
            raise ConfigError("model_config.ser_config: arousal/valence needs an SER with an arousal/valence head "
                              f"or an emotion classifier over named emotions (unknown: {unknown or 'no classifier'})")
        table = torch.tensor([AROUSAL_VALENCE[label] for label in self.labels])
        return self.posterior(wave) @ table.to(wave.device)


def validate_ser_config(ser_config: object, key: str = "model_config.ser_config") -> None:
    """Check an SER config (``key`` names it in errors) without loading anything (config
    validation time)."""
    if not isinstance(ser_config, dict):
        raise ConfigError(f"{key}: expected an object with at least 'backend'")
    for name in ser_config:
        if name not in SER_KEYS:
            raise ConfigError(f"unknown config key '{key}.{name}' "
                              f"(allowed: {', '.join(sorted(SER_KEYS))})")
    if ser_config.get("backend") not in BACKENDS:
        raise ConfigError(f"{key}.backend: expected one of {', '.join(BACKENDS)}, "
                          f"got {ser_config.get('backend')!r}")
    if ser_config["backend"] != "hf" and "layer" in ser_config:
        raise ConfigError(f"{key}.layer: only the 'hf' backend has layers to choose from")
    if ser_config["backend"] != "acrnn" and "acrnn_dims" in ser_config:
        raise ConfigError(f"{key}.acrnn_dims: only for the 'acrnn' backend")
    str_to_bool(ser_config.get("freeze", True), f"{key}.freeze")


def check_ser_file(ser_config: dict, key: str) -> None:
    """An SER that a run builds only after training (for calibration or grouping) has its file:
    checked at start-up, not found out after the training. A 'hf' path may be a hub id, and an
    ACRNN without one is random (tests)."""
    path = ser_config.get("ser_path")
    if ser_config["backend"] != "hf" and path is not None and not Path(str(path)).is_file():
        raise ConfigError(f"{key}.ser_path: file not found: {path}")

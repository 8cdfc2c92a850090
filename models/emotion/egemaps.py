"""The ``egemaps`` backend of the SER branch: parameter-free, the 88 eGeMAPS v02 functionals (Eyben
et al., IEEE TAC 2016) from openSMILE, standardised with statistics of the SER training actors
(``ser_path``: the ``egemaps_ser.json`` written by ``train_ser.py --config
config/SER_egemaps_linear.conf``, whose linear probe gives the emotion posterior).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_utils import SAMPLE_RATE
from emospoof.core.config import ConfigError

EGEMAPS_SET = "eGeMAPSv02"
EGEMAPS_SIZE = 88


_per_thread = threading.local()


def _smile():
    """This thread's openSMILE extractor: one per thread, since scoring threads
    (``emospoof.scoring.windows.threaded_cpu_forward``) call it at the same time and an extractor
    object is not documented as safe to share."""
    smile = getattr(_per_thread, "smile", None)
    if smile is None:
        import opensmile

        smile = _per_thread.smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                                    feature_level=opensmile.FeatureLevel.Functionals)
    return smile


def egemaps_feature_names() -> list[str]:
    return list(_smile().feature_names)


def egemaps_functionals(wave: np.ndarray) -> np.ndarray:
    """The 88 eGeMAPS v02 functionals (Eyben et al., IEEE TAC 2016) of 16 kHz mono audio, from
    openSMILE, float64."""
    return _smile().process_signal(np.asarray(wave, dtype=np.float32), SAMPLE_RATE).to_numpy()[0].astype(np.float64)


class EGeMAPSEncoder(nn.Module):
    """Waveform -> the 88 eGeMAPS functionals, standardised with the mean and standard deviation of
    the SER training actors (``ser_path``: the ``egemaps_ser.json`` that ``train_ser.py`` writes).
    Parameter-free; a linear probe in the same file gives the emotion posterior, and a linear
    regression head (when the file has one) the arousal and valence. The functionals of
    a window are computed from that window alone, in training as at inference, so the same audio
    always gives the same embedding."""

    def __init__(self, ser_config: dict) -> None:
        super().__init__()
        path = ser_config.get("ser_path")
        if not isinstance(path, str) or not path:
            raise ConfigError("model_config.ser_config.ser_path: the egemaps_ser.json written by "
                              "`python train_ser.py --config config/SER_egemaps_linear.conf` is required")
        stats = read_egemaps_stats(Path(path))
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32))
        self.embedding_dim = len(stats["mean"])
        probe = stats.get("probe")
        self.labels = tuple(probe["labels"]) if probe else ()
        self.register_buffer("probe_weight", torch.tensor(probe["weight"], dtype=torch.float32) if probe else None)
        self.register_buffer("probe_bias", torch.tensor(probe["bias"], dtype=torch.float32) if probe else None)
        regression = stats.get("arousal_valence")
        self.has_arousal_valence = regression is not None
        self.register_buffer("av_weight", torch.tensor(regression["weight"], dtype=torch.float32)
                             if regression else None)
        self.register_buffer("av_bias", torch.tensor(regression["bias"], dtype=torch.float32) if regression else None)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        audio = wave.detach().float().cpu().numpy()
        features = torch.from_numpy(np.stack([egemaps_functionals(clip) for clip in audio])).float()
        # openSMILE gives NaN for some functionals of silent audio: such a value sits at the mean.
        return torch.nan_to_num((features.to(self.mean.device) - self.mean) / self.std)

    def posterior(self, wave: torch.Tensor) -> torch.Tensor:
        return (self.forward(wave) @ self.probe_weight.T + self.probe_bias).softmax(dim=-1)

    def arousal_valence(self, wave: torch.Tensor) -> torch.Tensor:
        """(arousal, valence) from the linear regression head trained with the probe."""
        return self.forward(wave) @ self.av_weight.T + self.av_bias

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        raise ConfigError("model_config.ser_config.backend: 'egemaps' gives one vector per utterance, "
                          "no frame-level features (use 'acrnn' or 'hf' here)")


def read_egemaps_stats(path: Path) -> dict:
    """The standardisation statistics (and optional linear probe) of the eGeMAPS backend."""
    if not path.is_file():
        raise ConfigError(f"model_config.ser_config.ser_path: eGeMAPS statistics not found: {path}")
    try:
        stats = json.loads(path.read_text())
        mean, std = np.asarray(stats["mean"], dtype=float), np.asarray(stats["std"], dtype=float)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not an eGeMAPS statistics file ({err})") from None
    if stats.get("feature_set") != EGEMAPS_SET or mean.shape != (EGEMAPS_SIZE,) or std.shape != mean.shape \
            or not np.all(std > 0):
        raise ConfigError(f"{path}: expected {EGEMAPS_SIZE} {EGEMAPS_SET} means and positive standard deviations")
    probe = stats.get("probe")
    if probe is not None and (np.asarray(probe.get("weight")).shape != (len(probe.get("labels", [])), EGEMAPS_SIZE)
                              or len(probe.get("bias", [])) != len(probe["labels"])):
        raise ConfigError(f"{path}: the probe must hold a weight (classes x {EGEMAPS_SIZE}), a bias and labels")
    regression = stats.get("arousal_valence")
    if regression is not None and (np.asarray(regression.get("weight")).shape != (2, EGEMAPS_SIZE)
                                   or len(regression.get("bias", [])) != 2):
        raise ConfigError(f"{path}: the arousal/valence head must hold a weight (2 x {EGEMAPS_SIZE}) and a bias")
    return stats

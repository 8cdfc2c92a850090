"""The speech-emotion-recognition (SER) branch shared by the emotion-aware countermeasures (the
models that build on it: ``models/emotion.py``; the Hugging Face loading it uses:
``models/hf_audio.py``).

The branch turns a 16 kHz waveform into an utterance-level emotion embedding. It is frozen by
default (``"freeze": true``): parameters have ``requires_grad=False`` (so the training loop leaves
them out of the optimiser), the encoder stays in eval mode whatever ``train()`` is called with
(BatchNorm statistics and dropout untouched) and its forward runs under ``torch.no_grad`` (no graph
is built). ``"freeze": false`` fine-tunes it with the rest of the model.

Backends, ``model_config.ser_config.backend``:

* ``"hf"``: a Hugging Face wav2vec 2.0 / HuBERT / WavLM encoder or audio-classification
  checkpoint, by hub id or local directory (``ser_path``). The embedding is the time-averaged
  hidden state of ``layer`` (default -1, the last), or with ``"layer": "penultimate"`` the input of
  the classification checkpoint's final ``classifier`` layer (its pooled projection). Audio is
  resampled to the feature extractor's ``sampling_rate`` and normalised as it says
  (``do_normalize``: zero mean, unit variance per utterance).
* ``"acrnn"``: the 3-D convolutional recurrent network with attention of Chen et al., "3-D
  convolutional recurrent neural networks with attention model for speech emotion recognition",
  IEEE Signal Processing Letters 2018, in the form AMSDF (Wu et al., IEEE TIFS 2024) uses as its
  emotion view, so its public ``ser_acrnn.pth`` loads (``ser_path``). Input: log-Mel filterbank
  features with deltas, shaped (batch, 3, 300 frames, 40 bands) -- see :func:`acrnn_features`.
  The embedding is the attention-pooled BiLSTM output (256 values). A checkpoint trained by
  ``train_ser.py`` (``config/SER_acrnn.conf``) also holds the emotion classifier.
* ``"egemaps"``: parameter-free: the 88 eGeMAPS v02 functionals (Eyben et al., IEEE TAC 2016)
  from openSMILE, standardised with statistics of the SER training actors (``ser_path``: the
  ``egemaps_ser.json`` written by ``train_ser.py --config config/SER_egemaps_linear.conf``, whose
  linear probe gives the emotion posterior).

Every backend with an emotion classifier also gives the posterior over its classes
(:meth:`SERBranch.posterior`), which the emotion-gated experts of AASIST_EmoMoE mix by.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from checkpoint import load_weights, read_state
from config import ConfigError, str_to_bool
from data_utils import SAMPLE_RATE
from models.blocks import _hz_to_mel, _mel_to_hz
from models.frozen import KeepsFrozen, no_grad_if
from models.hf_audio import load_hf_audio_model, prepare_waveform, waveform_settings

SER_KEYS = {"backend", "ser_path", "layer", "freeze", "acrnn_dims"}
BACKENDS = ("hf", "acrnn", "egemaps")
LABELS_FILE = "labels.json"  # class names beside an ACRNN classifier checkpoint
ACRNN_HEAD = 64  # units of the ACRNN emotion classifier's hidden layer (fc1), as in AMSDF's code
EGEMAPS_SET = "eGeMAPSv02"
EGEMAPS_SIZE = 88

# ACRNN input recipe (AMSDF: python_speech_features.logfbank defaults, then deltas over 2 frames).
ACRNN_FRAMES = 300
ACRNN_MELS = 40
ACRNN_SAMPLES = 64600  # AMSDF computes the features on the 64 600-sample (tiled) AASIST input
FRAME_LENGTH = 400  # 25 ms
FRAME_STEP = 160  # 10 ms
N_FFT = 512
PRE_EMPHASIS = 0.97
DELTA_SPAN = 2


# ---------------------------------------------------------------------------------------------
# ACRNN features and network


@functools.lru_cache(maxsize=1)
def _mel_filterbank() -> torch.Tensor:
    """40 triangular filters over 0-8 kHz on the FFT bins, (40, N_FFT // 2 + 1), placed exactly as
    python_speech_features places them (edges floored to whole FFT bins)."""
    mel_edges = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), ACRNN_MELS + 2)
    bins = np.floor((N_FFT + 1) * _mel_to_hz(mel_edges) / SAMPLE_RATE).astype(int)
    filters = np.zeros((ACRNN_MELS, N_FFT // 2 + 1))
    for j in range(ACRNN_MELS):
        low, centre, high = bins[j], bins[j + 1], bins[j + 2]
        filters[j, low:centre] = (np.arange(low, centre) - low) / (centre - low)
        filters[j, centre:high] = (high - np.arange(centre, high)) / (high - centre)
    return torch.tensor(filters)


@functools.lru_cache(maxsize=1)
def _dft_basis() -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the N_FFT-point real DFT over a frame's FRAME_LENGTH samples (the rest
    of the N_FFT points are zero padding), each (FRAME_LENGTH, N_FFT // 2 + 1), float64. The power
    spectrum as two matrix products equals ``torch.fft.rfft``'s and, unlike it, exports to ONNX;
    it is used only while exporting, the FFT (several times faster) otherwise."""
    phase = torch.outer(torch.arange(FRAME_LENGTH), torch.arange(N_FFT // 2 + 1)) % N_FFT
    angle = 2 * math.pi * phase.double() / N_FFT
    return torch.cos(angle), torch.sin(angle)


def _deltas(features: torch.Tensor) -> torch.Tensor:
    """Regression deltas over +-2 frames along axis 1, edges repeated (python_speech_features.delta)."""
    padded = F.pad(features.transpose(1, 2), (DELTA_SPAN, DELTA_SPAN), mode="replicate").transpose(1, 2)
    frames = features.size(1)
    numerator = sum(n * (padded[:, DELTA_SPAN + n:DELTA_SPAN + n + frames]
                         - padded[:, DELTA_SPAN - n:DELTA_SPAN - n + frames]) for n in range(1, DELTA_SPAN + 1))
    return numerator / (2 * sum(n * n for n in range(1, DELTA_SPAN + 1)))


def acrnn_features(wave: torch.Tensor) -> torch.Tensor:
    """16 kHz waveforms (batch, samples) -> ACRNN input (batch, 3, 300, 40), time before frequency.

    Recipe (AMSDF's, so the public ``ser_acrnn.pth`` sees what it was trained on): the waveform
    is tiled or cut to 64 600 samples; pre-emphasis 0.97; 25 ms frames every 10 ms, rectangular
    window, the last frame zero-padded; power spectrum |FFT_512|^2 / 512; 40 triangular mel filters
    over 0-8 kHz (HTK mel scale); natural log (exact zeros floored at float eps); deltas and
    delta-deltas by regression over +-2 frames; channels (log-Mel, delta, delta-delta); first 300
    frames (3 s). No mean/variance normalisation. Computed in float64, returned as float32.
    """
    x = wave.double()
    x = x.repeat(1, math.ceil(ACRNN_SAMPLES / x.size(1)))[:, :ACRNN_SAMPLES]
    x = torch.cat([x[:, :1], x[:, 1:] - PRE_EMPHASIS * x[:, :-1]], dim=1)
    n_frames = 1 + math.ceil((ACRNN_SAMPLES - FRAME_LENGTH) / FRAME_STEP)
    x = F.pad(x, (0, (n_frames - 1) * FRAME_STEP + FRAME_LENGTH - ACRNN_SAMPLES))
    starts = torch.arange(n_frames, device=x.device) * FRAME_STEP
    frames = x[:, starts[:, None] + torch.arange(FRAME_LENGTH, device=x.device)]
    if torch.onnx.is_in_onnx_export():
        cos, sin = (basis.to(x.device) for basis in _dft_basis())
        power = ((frames @ cos).pow(2) + (frames @ sin).pow(2)) / N_FFT
    else:
        power = torch.fft.rfft(frames, n=N_FFT).abs().pow(2) / N_FFT
    energies = power @ _mel_filterbank().to(power.device).T
    log_mel = torch.where(energies == 0, torch.finfo(torch.float64).eps, energies).log()
    delta = _deltas(log_mel)
    stacked = torch.stack([log_mel, delta, _deltas(delta)], dim=1)
    return stacked[:, :, :ACRNN_FRAMES].float()


class ACRNN(nn.Module):
    """3-D CRNN with attention (Chen et al., IEEE SPL 2018) as AMSDF's emotion encoder.

    Parameter names follow AMSDF's so that ``ser_acrnn.pth`` loads. ``dims`` = (first conv
    channels, other conv channels, linear size, LSTM cells); the defaults are the checkpoint's.
    With ``classes`` the emotion classifier of that code is added on the embedding (``fc1`` to 64
    units, LeakyReLU, ``fc2`` to the classes): what ``train_ser.py`` trains and what gives the
    branch an emotion posterior.
    """

    def __init__(self, dims: tuple[int, int, int, int] = (128, 256, 768, 128), classes: int = 0) -> None:
        super().__init__()
        first, channels, linear, cells = dims
        self.conv1 = nn.Conv2d(3, first, (5, 3), padding=(2, 1))
        self.conv2 = nn.Conv2d(first, channels, (5, 3), padding=(2, 1))
        self.conv3 = nn.Conv2d(channels, channels, (5, 3), padding=(2, 1))
        self.conv4 = nn.Conv2d(channels, channels, (5, 3), padding=(2, 1))
        self.conv5 = nn.Conv2d(channels, channels, (5, 3), padding=(2, 1))
        self.conv6 = nn.Conv2d(channels, channels, (5, 3), padding=(2, 1))
        self.linear1 = nn.Linear(ACRNN_MELS // 4 * channels, linear)
        self.bn = nn.BatchNorm1d(linear)
        self.rnn = nn.LSTM(linear, cells, batch_first=True, bidirectional=True)
        self.a_fc1 = nn.Linear(2 * cells, 1)
        self.a_fc2 = nn.Linear(1, 1)
        self.embedding_dim = 2 * cells
        self.classes = classes
        if classes:
            self.fc1 = nn.Linear(2 * cells, ACRNN_HEAD)
            self.fc2 = nn.Linear(ACRNN_HEAD, classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, 3, 300, 40) features -> (batch, 2 * cells) attention-pooled embedding."""
        return self.attended_steps(features).sum(dim=1)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Emotion logits of embeddings (needs ``classes``)."""
        return self.fc2(F.leaky_relu(self.fc1(embedding), 0.01))

    def attended_steps(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, 3, 300, 40) features -> (batch, 150, 2 * cells): the BiLSTM outputs weighted by
        their attention; their sum over steps is the embedding, the steps are AMSDF's emotion view."""
        if features.dim() != 4 or tuple(features.shape[1:]) != (3, ACRNN_FRAMES, ACRNN_MELS):
            raise ValueError(f"ACRNN expects features shaped (batch, 3, {ACRNN_FRAMES} frames, "
                             f"{ACRNN_MELS} mel bands), got {tuple(features.shape)}")
        x = F.max_pool2d(F.leaky_relu(self.conv1(features), 0.01), kernel_size=(2, 4))
        for conv in (self.conv2, self.conv3, self.conv4, self.conv5, self.conv6):
            x = F.leaky_relu(conv(x), 0.01)
        batch, channels, steps, bands = x.shape
        # (batch, time, band, channel) -> one vector per time step; explicit sizes so that a
        # transposed input cannot be reshaped into the right number of elements by accident.
        x = x.permute(0, 2, 3, 1).reshape(batch * steps, bands * channels)
        x = F.leaky_relu(self.bn(self.linear1(x)), 0.01).view(batch, steps, -1)
        outputs, _ = self.rnn(x)
        weights = torch.softmax(self.a_fc2(torch.sigmoid(self.a_fc1(outputs))), dim=1)
        return weights * outputs


def read_labels(model_path: Path, classes: int) -> tuple[str, ...]:
    """Class names of a classifier checkpoint: ``labels.json`` beside it (written by
    ``train_ser.py``), else ``class0``, ``class1``, ..."""
    path = model_path.parent / LABELS_FILE
    if not path.is_file():
        return tuple(f"class{i}" for i in range(classes))
    labels = json.loads(path.read_text())
    if not (isinstance(labels, list) and len(labels) == classes and all(isinstance(n, str) for n in labels)):
        raise ConfigError(f"{path}: expected a list of {classes} class names")
    return tuple(labels)


class ACRNNEncoder(nn.Module):
    """Waveform -> ACRNN embedding, features computed as the checkpoint expects. A checkpoint with
    the emotion classifier (``fc1``, ``fc2``) also gives the emotion posterior."""

    def __init__(self, ser_config: dict) -> None:
        super().__init__()
        dims = ser_config.get("acrnn_dims", (128, 256, 768, 128))
        if not (isinstance(dims, (list, tuple)) and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims)):
            raise ConfigError(f"model_config.ser_config.acrnn_dims: expected 4 positive integers, got {dims!r}")
        path = ser_config.get("ser_path")
        state = read_state(Path(path)) if path is not None else {}  # null: random (tests, plumbing)
        classes = state["fc2.weight"].shape[0] if "fc2.weight" in state else 0
        self.net = ACRNN(tuple(dims), classes)
        self.embedding_dim = self.net.embedding_dim
        self.labels = read_labels(Path(path), classes) if classes else ()
        if path is not None:
            load_weights(self.net, Path(path), torch.device("cpu"))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.net(acrnn_features(wave))

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        return self.net.attended_steps(acrnn_features(wave))

    def posterior(self, wave: torch.Tensor) -> torch.Tensor:
        return self.net.classify(self.forward(wave)).softmax(dim=-1)


# ---------------------------------------------------------------------------------------------
# eGeMAPS backend


@functools.lru_cache(maxsize=1)
def _smile():
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def egemaps_feature_names() -> list[str]:
    return list(_smile().feature_names)


def egemaps_functionals(wave: np.ndarray) -> np.ndarray:
    """The 88 eGeMAPS v02 functionals (Eyben et al., IEEE TAC 2016) of 16 kHz mono audio, from
    openSMILE, float64."""
    return _smile().process_signal(np.asarray(wave, dtype=np.float32), SAMPLE_RATE).to_numpy()[0].astype(np.float64)


class EGeMAPSEncoder(nn.Module):
    """Waveform -> the 88 eGeMAPS functionals, standardised with the mean and standard deviation of
    the SER training actors (``ser_path``: the ``egemaps_ser.json`` that ``train_ser.py`` writes).
    Parameter-free; a linear probe in the same file gives the emotion posterior. The functionals of
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

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        audio = wave.detach().float().cpu().numpy()
        features = torch.from_numpy(np.stack([egemaps_functionals(clip) for clip in audio])).float()
        # openSMILE gives NaN for some functionals of silent audio: such a value sits at the mean.
        return torch.nan_to_num((features.to(self.mean.device) - self.mean) / self.std)

    def posterior(self, wave: torch.Tensor) -> torch.Tensor:
        return (self.forward(wave) @ self.probe_weight.T + self.probe_bias).softmax(dim=-1)

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
    return stats


# ---------------------------------------------------------------------------------------------
# Hugging Face backend


class HFEncoder(nn.Module):
    """Waveform -> mean-pooled hidden state of a Hugging Face audio model (or its classifier input)."""

    def __init__(self, ser_config: dict) -> None:
        super().__init__()
        # Imported here: transformers takes seconds to import and only this backend needs it.
        from transformers import AutoModel, AutoModelForAudioClassification

        path = ser_config.get("ser_path")
        if not isinstance(path, str) or not path:
            raise ConfigError("model_config.ser_config.ser_path: a hub id or local directory is required "
                              "for backend 'hf'")
        self.layer = ser_config.get("layer", -1)
        loader = AutoModelForAudioClassification if self.layer == "penultimate" else AutoModel
        self.model, extractor = load_hf_audio_model(path, loader, "model_config.ser_config.ser_path")
        self.sample_rate, self.normalize = waveform_settings(extractor)
        if self.layer == "penultimate":
            classifier = getattr(self.model, "classifier", None)
            if not isinstance(classifier, nn.Linear):
                raise ConfigError(f"model_config.ser_config.layer: 'penultimate' needs an audio-classification "
                                  f"checkpoint with a final 'classifier' layer; {path!r} has none")
            self.embedding_dim = classifier.in_features
            self.labels = tuple(self.model.config.id2label[i] for i in range(self.model.config.num_labels))
            self._pooled: torch.Tensor | None = None
            classifier.register_forward_pre_hook(self._keep_classifier_input)
        else:
            self.labels = ()
            n_layers = self.model.config.num_hidden_layers
            if not isinstance(self.layer, int) or not -(n_layers + 1) <= self.layer <= n_layers:
                raise ConfigError(f"model_config.ser_config.layer: expected 'penultimate' or a hidden-state "
                                  f"index in [-{n_layers + 1}, {n_layers}], got {self.layer!r}")
            self.embedding_dim = self.model.config.hidden_size

    def _keep_classifier_input(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._pooled = inputs[0]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.layer != "penultimate":
            return self.frames(wave).mean(dim=1)
        self.model(input_values=prepare_waveform(wave, self.sample_rate, self.normalize))
        pooled, self._pooled = self._pooled, None
        return pooled

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """Hidden state ``layer`` of every frame (needs an integer ``layer``)."""
        values = prepare_waveform(wave, self.sample_rate, self.normalize)
        return self.model(input_values=values, output_hidden_states=True).hidden_states[self.layer]

    def posterior(self, wave: torch.Tensor) -> torch.Tensor:
        """The classification checkpoint's emotion probabilities (``layer`` 'penultimate')."""
        values = prepare_waveform(wave, self.sample_rate, self.normalize)
        logits = self.model(input_values=values).logits
        self._pooled = None
        return logits.softmax(dim=-1)


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


def validate_ser_config(ser_config: object) -> None:
    """Check ``model_config.ser_config`` without loading anything (config validation time)."""
    if not isinstance(ser_config, dict):
        raise ConfigError("model_config.ser_config: expected an object with at least 'backend'")
    for key in ser_config:
        if key not in SER_KEYS:
            raise ConfigError(f"unknown config key 'model_config.ser_config.{key}' "
                              f"(allowed: {', '.join(sorted(SER_KEYS))})")
    if ser_config.get("backend") not in BACKENDS:
        raise ConfigError(f"model_config.ser_config.backend: expected one of {', '.join(BACKENDS)}, "
                          f"got {ser_config.get('backend')!r}")
    if ser_config["backend"] != "hf" and "layer" in ser_config:
        raise ConfigError("model_config.ser_config.layer: only the 'hf' backend has layers to choose from")
    if ser_config["backend"] != "acrnn" and "acrnn_dims" in ser_config:
        raise ConfigError("model_config.ser_config.acrnn_dims: only for the 'acrnn' backend")
    str_to_bool(ser_config.get("freeze", True), "model_config.ser_config.freeze")

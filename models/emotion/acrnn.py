"""The ``acrnn`` backend of the SER branch: the 3-D convolutional recurrent network with attention
of Chen et al., "3-D convolutional recurrent neural networks with attention model for speech
emotion recognition", IEEE Signal Processing Letters 2018, in the form AMSDF (Wu et al., IEEE TIFS
2024) uses as its emotion view, so its public ``ser_acrnn.pth`` loads (``ser_path``). Input:
log-Mel filterbank features with deltas, shaped (batch, 3, 300 frames, 40 bands) -- see
:func:`acrnn_features`. The embedding is the attention-pooled BiLSTM output (256 values). A
checkpoint trained by ``train_ser.py`` (``config/SER_acrnn.conf``) also holds the emotion
classifier, which gives the posterior.
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

from data_utils import SAMPLE_RATE
from emospoof.core.checkpoint import load_weights, read_state
from emospoof.core.config import ConfigError
from models.layers.blocks import _hz_to_mel, _mel_to_hz

LABELS_FILE = "labels.json"  # class names beside an ACRNN classifier checkpoint
ACRNN_HEAD = 64  # units of the ACRNN emotion classifier's hidden layer (fc1), as in AMSDF's code
# ACRNN input recipe (AMSDF: python_speech_features.logfbank defaults, then deltas over 2 frames).
ACRNN_FRAMES = 300
ACRNN_MELS = 40
FRAME_LENGTH = 400  # 25 ms
FRAME_STEP = 160  # 10 ms
N_FFT = 512
PRE_EMPHASIS = 0.97
DELTA_SPAN = 2


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
    # Only the samples and frames the kept 300 depend on: delta-deltas of frame t read log-Mel
    # frames up to t + 2 * DELTA_SPAN, so the 103 later frames of the 64 600 samples (and the
    # zero padding of the last) cannot change them: three quarters of the frames, the same numbers.
    n_frames = ACRNN_FRAMES + 2 * DELTA_SPAN
    n_samples = (n_frames - 1) * FRAME_STEP + FRAME_LENGTH
    x = wave.double()
    x = x.repeat(1, math.ceil(n_samples / x.size(1)))[:, :n_samples]
    x = torch.cat([x[:, :1], x[:, 1:] - PRE_EMPHASIS * x[:, :-1]], dim=1)
    frames = x.unfold(1, FRAME_LENGTH, FRAME_STEP)
    if torch.onnx.is_in_onnx_export():
        cos, sin = (basis.to(x.device) for basis in _dft_basis())
        power = ((frames @ cos).pow(2) + (frames @ sin).pow(2)) / N_FFT
    else:
        spectrum = torch.fft.rfft(frames, n=N_FFT)
        power = (spectrum.real.square() + spectrum.imag.square()) / N_FFT
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

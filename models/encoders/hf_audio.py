"""Hugging Face audio models (wav2vec 2.0 / XLS-R, HuBERT, WavLM) for the SER branch, the SSL
front end and SER training: loading by hub id or directory with the feature extractor's input
settings, and tiny randomly initialised models for tests and offline plumbing checks.

    python -m models.encoders.hf_audio ser DIR    # an untrained tiny wav2vec 2.0 emotion classifier
    python -m models.encoders.hf_audio ssl DIR [--kind wav2vec2|hubert|wavlm]   # an untrained tiny encoder

The random models recognise nothing: they exist so that every code path runs where no trained
checkpoint can be downloaded.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soxr
import torch
from torch import nn

from data_utils import SAMPLE_RATE
from emospoof.core.checkpoint import write_folder_atomically
from emospoof.core.config import ConfigError
from emospoof.core.emotions import TTS5_EMOTIONS


def load_hf_audio_model(path: str | Path, loader: type, key: str, **overrides) -> tuple[nn.Module, object]:
    """A raw-waveform Hugging Face model (hub id or directory) with ``loader.from_pretrained``
    (``overrides``: its keyword arguments, e.g. config fields) and its feature extractor; problems
    are ConfigErrors on ``key``."""
    from transformers import AutoFeatureExtractor

    if str(path).startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise ConfigError(f"{key}: directory not found: {path}")
    try:
        extractor = AutoFeatureExtractor.from_pretrained(path)
        model = loader.from_pretrained(path, **overrides)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"{key}: cannot load {path!r} ({str(err).strip().splitlines()[0]})") from None
    if getattr(extractor, "feature_size", None) != 1:
        raise ConfigError(f"{key}: {path!r} does not take raw waveforms "
                          f"(feature extractor {type(extractor).__name__})")
    return model, extractor


def waveform_settings(extractor) -> tuple[int, bool]:
    """A feature extractor's sampling rate and ``do_normalize``: the arguments of :func:`prepare_waveform`."""
    return int(extractor.sampling_rate), bool(getattr(extractor, "do_normalize", False))


def prepare_waveform(wave: torch.Tensor, sample_rate: int, normalize: bool) -> torch.Tensor:
    """16 kHz waveforms (batch, samples) -> a model's input values at its own rate (soxr) and, with
    ``normalize``, zero mean and unit variance per utterance as its feature extractor does."""
    if sample_rate != SAMPLE_RATE:
        audio = wave.detach().float().cpu().numpy().T  # soxr wants (samples, channels)
        resampled = soxr.resample(audio, SAMPLE_RATE, sample_rate, quality="HQ")
        wave = torch.from_numpy(np.ascontiguousarray(resampled.T)).to(wave.device)
    if normalize:
        variance = wave.var(dim=1, correction=0, keepdim=True)
        wave = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(variance + 1e-7)
    return wave


def tiny_audio_config(kind: str = "wav2vec2", hidden_size: int = 32, layers: int = 2, **extra):
    """The configuration of a tiny wav2vec 2.0 / HuBERT / WavLM model (three small convolutions,
    total stride 80 = 5 ms) for offline tests and devkit plumbing; ``extra`` overrides any field."""
    from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig

    classes = {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig}
    if kind not in classes:
        raise ValueError(f"unknown model kind {kind!r} (expected one of {', '.join(classes)})")
    fields = dict(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
                  intermediate_size=2 * hidden_size, conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4),
                  conv_stride=(5, 4, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    return classes[kind](**{**fields, **extra})


def save_with_extractor(model: nn.Module, path: str | Path) -> Path:
    """Save ``model`` to ``path`` with the 16 kHz, normalising feature extractor of wav2vec 2.0."""
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    path = Path(path)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        extractor.save_pretrained(folder)

    write_folder_atomically(path, write)
    return path


def save_random_hf_ser(path: str | Path, seed: int = 0, hidden_size: int = 32, layers: int = 2,
                       labels: tuple[str, ...] = TTS5_EMOTIONS) -> Path:
    """Write a tiny, randomly initialised wav2vec 2.0 emotion classifier (weights, config,
    feature extractor) to ``path``. It recognises nothing: it exists so that the HF backend and the
    devkit configs can run where no trained SER checkpoint can be downloaded."""
    from transformers import Wav2Vec2ForSequenceClassification

    torch.manual_seed(seed)
    config = tiny_audio_config("wav2vec2", hidden_size, layers, classifier_proj_size=16, num_labels=len(labels),
                               id2label=dict(enumerate(labels)),
                               label2id={label: i for i, label in enumerate(labels)})
    return save_with_extractor(Wav2Vec2ForSequenceClassification(config), path)


def save_random_ssl(path: str | Path, kind: str = "wav2vec2", hidden_size: int = 32, layers: int = 2,
                    seed: int = 0) -> Path:
    """Write a tiny, randomly initialised wav2vec 2.0 / HuBERT / WavLM encoder (weights, config,
    feature extractor) to ``path``: for tests and devkit plumbing where XLS-R cannot be downloaded."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    return save_with_extractor(AutoModel.from_config(tiny_audio_config(kind, hidden_size, layers)), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write an untrained tiny Hugging Face audio model (for tests "
                                     "and devkit plumbing; it carries no emotion and no speech features).")
    parser.add_argument("what", choices=("ser", "ssl"), help="ser: emotion classifier; ssl: bare encoder")
    parser.add_argument("output_dir", help="e.g. models/weights/ser_random_wav2vec2")
    parser.add_argument("--kind", choices=("wav2vec2", "hubert", "wavlm"), default="wav2vec2", help="ssl only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "ser":
        path = save_random_hf_ser(args.output_dir, args.seed)
    else:
        path = save_random_ssl(args.output_dir, args.kind, seed=args.seed)
    print(f"untrained {args.what.upper()} model written to {path}")


if __name__ == "__main__":
    main()

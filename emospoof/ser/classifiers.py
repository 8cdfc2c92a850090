"""The emotion classifiers that ``train_ser.py`` trains, behind one interface so that one task
(``emospoof.ser.training.SERTask``) trains and evaluates them all:

* :class:`HFClassifier`: a wav2vec 2.0 / HuBERT / WavLM audio classifier (Hugging Face directory),
  which the emotion branch loads with ``"backend": "hf", "layer": "penultimate"``;
* :class:`ACRNNClassifier`: the ACRNN of Chen et al. (IEEE SPL 2018) with the emotion classifier
  of AMSDF's code, on log-Mel features with deltas, saved as ``acrnn.safetensors`` (AMSDF's
  parameter names; ``acrnn.pth`` in folders written before weights became safetensors) with
  ``labels.json`` beside it, which the branch loads with ``"backend": "acrnn"``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from emospoof.core.checkpoint import (WEIGHTS_SUFFIX, load_state_strictly, read_state, save_weights, weights_file,
                                      write_atomically, write_folder_atomically)
from emospoof.core.config import ConfigError
from models.emotion.acrnn import ACRNN, LABELS_FILE, acrnn_features, read_labels
from models.encoders.hf_audio import (load_hf_audio_model, prepare_waveform, save_with_extractor, tiny_audio_config,
                                      waveform_settings)

ACRNN_NAME = "acrnn"  # acrnn.safetensors (acrnn.pth from older runs still loads)


def _label_maps(names: tuple[str, ...]) -> dict:
    return {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


class HFClassifier:
    """A Hugging Face audio classifier and its feature extractor."""

    def __init__(self, model: nn.Module, extractor) -> None:
        self.model, self.extractor = model, extractor
        self.labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))

    @classmethod
    def load(cls, path: str | Path, names: tuple[str, ...] | None = None, **overrides) -> HFClassifier:
        """A checkpoint (hub id or directory). With ``names``, the classification head is for those
        classes (a fresh one when the checkpoint's labels differ or it is a bare encoder);
        ``overrides`` replace fields of its config (e.g. ``mask_time_prob``)."""
        from transformers import AutoModelForAudioClassification

        if names is not None:
            overrides = {**_label_maps(names), "ignore_mismatched_sizes": True, **overrides}
        return cls(*load_hf_audio_model(str(path), AutoModelForAudioClassification, "SER model", **overrides))

    @staticmethod
    def build_scratch(scratch: dict, names: tuple[str, ...], path: Path, seed: int) -> Path:
        """Write a randomly initialised classifier for ``names`` (sizes from ``scratch``) to ``path``."""
        from transformers import AutoModelForAudioClassification

        fields = {key: tuple(value) if isinstance(value, list) else value for key, value in scratch.items()}
        kind = fields.pop("kind", "wav2vec2")
        torch.manual_seed(seed)
        model_config = tiny_audio_config(kind, fields.pop("hidden_size", 32), fields.pop("layers", 2),
                                         **_label_maps(names), **fields)
        return save_with_extractor(AutoModelForAudioClassification.from_config(model_config), path)

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """16 kHz waveforms -> logits, the input prepared exactly as ``SERBranch`` prepares it."""
        values = prepare_waveform(wave, *waveform_settings(self.extractor))
        return self.model(input_values=values.to(next(self.model.parameters()).device)).logits

    def prepare_training(self, config: dict) -> None:
        if config.get("freeze_feature_encoder", True) not in (False, "False", "false"):
            self.model.freeze_feature_encoder()

    def start_epoch(self, epoch: int, config: dict) -> None:
        """The lowest ``freeze_layers`` transformer layers train only after ``freeze_epochs`` epochs."""
        for layer in self.model.base_model.encoder.layers[:config.get("freeze_layers", 0)]:
            layer.requires_grad_(epoch > config.get("freeze_epochs", 0))

    def save(self, directory: Path) -> None:
        """The directory the emotion branch loads: config (with id2label), safetensors weights and
        the feature extractor's settings."""
        def write(folder: Path) -> None:
            self.model.save_pretrained(folder, safe_serialization=True)
            self.extractor.save_pretrained(folder)

        write_folder_atomically(directory, write)


class ACRNNClassifier:
    """ACRNN with its emotion classifier."""

    def __init__(self, model: ACRNN, labels: tuple[str, ...]) -> None:
        self.model, self.labels = model, labels

    @classmethod
    def build(cls, dims: tuple[int, int, int, int], names: tuple[str, ...], seed: int) -> ACRNNClassifier:
        torch.manual_seed(seed)
        return cls(ACRNN(dims, len(names)), names)

    @classmethod
    def load(cls, path: str | Path) -> ACRNNClassifier:
        """A directory written by :meth:`save` (``acrnn.safetensors`` + ``labels.json``); the sizes
        are read from the weights' shapes."""
        file = weights_file(Path(path), ACRNN_NAME)
        state = read_state(file, what="ACRNN checkpoint")
        try:
            dims = (state["conv1.weight"].shape[0], state["conv2.weight"].shape[0], state["linear1.weight"].shape[0],
                    state["rnn.weight_hh_l0"].shape[1])
            classes = state["fc2.weight"].shape[0]
        except KeyError as err:
            raise ConfigError(f"{file}: not an ACRNN classifier (no {err.args[0]})") from None
        model = ACRNN(dims, classes)
        load_state_strictly(model, state, f"{file}: weights do not fit an ACRNN")
        return cls(model, read_labels(file, classes))

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model.classify(self.model(acrnn_features(wave).to(device)))

    def prepare_training(self, config: dict) -> None:
        pass

    def start_epoch(self, epoch: int, config: dict) -> None:
        pass

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(directory / LABELS_FILE, lambda tmp: tmp.write_text(json.dumps(list(self.labels)) + "\n"))
        save_weights(self.model.state_dict(), directory / (ACRNN_NAME + WEIGHTS_SUFFIX))


def load_classifier(path: str | Path) -> HFClassifier | ACRNNClassifier:
    """A trained classifier directory of either kind."""
    return ACRNNClassifier.load(path) if weights_file(Path(path), ACRNN_NAME).is_file() else HFClassifier.load(path)

"""The ``hf`` backend of the SER branch: a Hugging Face wav2vec 2.0 / HuBERT / WavLM encoder or
audio-classification checkpoint, by hub id or local directory (``ser_path``). The embedding is the
time-averaged hidden state of ``layer`` (default -1, the last), or with ``"layer": "penultimate"``
the input of the classification checkpoint's final ``classifier`` layer (its pooled projection).
Audio is resampled to the feature extractor's ``sampling_rate`` and normalised as it says
(``do_normalize``: zero mean, unit variance per utterance).
"""
from __future__ import annotations

import torch
from torch import nn

from emospoof.core.config import ConfigError
from models.encoders.hf_audio import load_hf_audio_model, prepare_waveform, waveform_settings


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

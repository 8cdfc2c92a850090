"""The SSL front end (models/ssl.py): loading, layer selection, freezing, gradient checkpointing
and the fairseq checkpoint mapping, on tiny randomly initialised models built offline."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from emospoof.core.config import ConfigError
from models.encoders.hf_audio import prepare_waveform, save_random_ssl, save_with_extractor, tiny_audio_config
from models.encoders.ssl import SSLEncoder, _read_checkpoint
from tests.conftest import fairseq_name


def _wave(batch: int = 2, samples: int = 8000, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm"])
@pytest.mark.parametrize("layers", ["last", "weighted", [0, 2]])
def test_feature_shapes(tmp_path, single_thread, kind, layers):
    encoder = SSLEncoder(str(save_random_ssl(tmp_path / kind, kind, hidden_size=24)), layers)
    features = encoder(_wave(samples=16000))
    # three convolutions of stride 5, 4, 4: one frame per 80 samples
    assert features.shape == (2, 199, 24) and encoder.output_dim == 24
    assert features.dtype == torch.float32 and torch.isfinite(features).all()


def test_last_and_single_layer_are_the_models_hidden_states(tiny_ssl_dir, single_thread):
    wave = _wave()
    last = SSLEncoder(str(tiny_ssl_dir), "last")
    first = SSLEncoder(str(tiny_ssl_dir), [0])
    values = prepare_waveform(wave, 16000, True)
    with torch.no_grad():
        hidden = last.model(input_values=values, output_hidden_states=True).hidden_states
        output = last.model(input_values=values).last_hidden_state
    torch.testing.assert_close(last(wave), output)
    torch.testing.assert_close(first(wave), hidden[0])
    torch.testing.assert_close(SSLEncoder(str(tiny_ssl_dir), [1])(wave), hidden[1])
    torch.testing.assert_close(SSLEncoder(str(tiny_ssl_dir), [2])(wave), output)


def test_frozen_ssl_is_untouched_by_training_but_layer_weights_learn(tiny_ssl_dir, single_thread):
    encoder = SSLEncoder(str(tiny_ssl_dir), "weighted", freeze=True)
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    encoder.train()
    assert not encoder.model.training and all(not p.requires_grad for p in encoder.model.parameters())
    with torch.no_grad():
        values = prepare_waveform(_wave(), 16000, True)
        target = encoder.model(input_values=values, output_hidden_states=True).hidden_states[1]
    optimizer = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    assert [p is encoder.layer_weights for p in encoder.parameters() if p.requires_grad] == [True]
    losses = []
    for _ in range(30):
        loss = (encoder(_wave()) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses
    assert torch.softmax(encoder.layer_weights, 0).argmax() == 1  # it found the layer holding the target
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_fine_tuning_with_gradient_checkpointing_matches_plain_backprop(tiny_ssl_dir, single_thread):
    grads = []
    for checkpointing in (False, True):
        encoder = SSLEncoder(str(tiny_ssl_dir), "last", freeze=False, gradient_checkpointing=checkpointing)
        encoder.train()
        torch.manual_seed(0)
        encoder(_wave()).pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in encoder.model.named_parameters() if p.grad is not None})
    assert any(getattr(module, "gradient_checkpointing", False) for module in encoder.model.modules())
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_no_time_masking_when_fine_tuning(tmp_path, single_thread):
    """Checkpoints ask for SpecAugment-style masking (pre-training); the countermeasure must see
    unmasked features, so with dropout off a training-mode pass equals an eval-mode one."""
    from transformers import AutoModel

    config = tiny_audio_config("wav2vec2", 16, 2, mask_time_prob=0.5, mask_time_length=2, hidden_dropout=0.0,
                               attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)
    encoder = SSLEncoder(str(save_with_extractor(AutoModel.from_config(config), tmp_path / "masking")), freeze=False)
    wave = _wave()
    with torch.no_grad():
        training = encoder.train()(wave)
        evaluation = encoder.eval()(wave)
    torch.testing.assert_close(training, evaluation)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layers": "middle"}, "ssl_layers"),
    ({"layers": [0, 0]}, "ssl_layers"),
    ({"layers": [3]}, "hidden states 0..2"),
])
def test_bad_layer_choice_is_one_line_error(tiny_ssl_dir, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SSLEncoder(str(tiny_ssl_dir), **kwargs)


def test_missing_model_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="model_config.ssl_path: directory not found: .*nowhere"):
        SSLEncoder(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="SSL checkpoint not found"):
        SSLEncoder(str(tmp_path / "xlsr2_300m.pt"))


# ---------------------------------------------------------------------------------------------
# fairseq checkpoints: written here in fairseq's own layout from a transformers model


def _write_fairseq_checkpoint(model, path, style: str) -> None:
    config = model.config
    layer_norm_extractor = config.feat_extract_norm == "layer"
    state = {fairseq_name(k, layer_norm_extractor): v for k, v in model.state_dict().items()}
    state["quantizer.vars"] = torch.randn(1, 8, 16)  # pre-training parts the loader must drop
    state["project_q.weight"] = torch.randn(16, 16)
    state["final_proj.weight"] = torch.randn(16, config.hidden_size)
    model_cfg = {
        "_name": "wav2vec2", "extractor_mode": "layer_norm" if layer_norm_extractor else "default",
        "conv_feature_layers": " + ".join(f"[({c}, {k}, {s})]" for c, k, s in
                                          zip(config.conv_dim, config.conv_kernel, config.conv_stride)),
        "conv_bias": config.conv_bias, "encoder_layers": config.num_hidden_layers,
        "encoder_embed_dim": config.hidden_size, "encoder_ffn_embed_dim": config.intermediate_size,
        "encoder_attention_heads": config.num_attention_heads, "activation_fn": "gelu",
        "layer_norm_first": config.do_stable_layer_norm, "conv_pos": config.num_conv_pos_embeddings,
        "conv_pos_groups": config.num_conv_pos_embedding_groups, "dropout": 0.1, "encoder_layerdrop": 0.05,
    }
    task_cfg = {"_name": "audio_pretraining", "sample_rate": 16000, "normalize": True}
    if style == "cfg":  # hydra-era checkpoints such as xlsr2_300m.pt
        checkpoint = {"cfg": {"model": model_cfg, "task": task_cfg}, "model": state,
                      "extra_state": {"best_loss": np.float64(2.5), "epoch": np.int64(3)}}
    else:  # older checkpoints keep one argparse Namespace
        fields = {k: v for k, v in {**model_cfg, **task_cfg}.items() if k != "_name"}
        checkpoint = {"args": argparse.Namespace(arch="wav2vec2", task="audio_pretraining", **fields), "model": state}
    torch.save(checkpoint, path)


@pytest.mark.parametrize(("stable", "style"), [(True, "cfg"), (False, "args")])
def test_fairseq_checkpoint_maps_onto_the_same_model(tmp_path, single_thread, stable, style):
    from transformers import Wav2Vec2Model

    torch.manual_seed(1)
    config = tiny_audio_config("wav2vec2", 32, 2, do_stable_layer_norm=stable, conv_bias=stable,
                               feat_extract_norm="layer" if stable else "group", layer_norm_eps=1e-5)
    source = Wav2Vec2Model(config).eval()
    with torch.no_grad():  # no parameter keeps its initial value, so swapped norms would show
        for parameter in source.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    path = tmp_path / "checkpoint.pt"
    _write_fairseq_checkpoint(source, path, style)
    state = _read_checkpoint(path)["model"]
    norm_key = "feature_extractor.conv_layers.0.2.1.weight" if stable else "feature_extractor.conv_layers.0.2.weight"
    assert {norm_key, "encoder.layers.1.self_attn_layer_norm.bias", "encoder.pos_conv.0.weight_g"} <= state.keys()

    encoder = SSLEncoder(str(path), "weighted")
    assert encoder.normalize and encoder.model.config.num_hidden_layers == 2
    assert encoder.model.config.do_stable_layer_norm == stable
    values = prepare_waveform(_wave(), 16000, True)
    with torch.no_grad():
        expected = source(input_values=values, output_hidden_states=True)
        mapped = encoder.model(input_values=values, output_hidden_states=True)
    assert len(mapped.hidden_states) == len(expected.hidden_states) == 3
    for got, want in zip(mapped.hidden_states + (mapped.last_hidden_state,),
                         expected.hidden_states + (expected.last_hidden_state,)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(SSLEncoder(str(path), "last")(_wave()), expected.last_hidden_state, rtol=0, atol=1e-5)


def test_fairseq_weights_that_do_not_fit_are_one_line_error(tmp_path):
    from transformers import Wav2Vec2Model

    path = tmp_path / "checkpoint.pt"
    _write_fairseq_checkpoint(Wav2Vec2Model(tiny_audio_config("wav2vec2", 32, 1)), path, "cfg")
    checkpoint = _read_checkpoint(path)
    del checkpoint["model"]["encoder.layers.0.fc1.weight"]
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match=r"do not fit the mapped model \(missing keys: "
                                          r"\['encoder.layers.0.feed_forward.intermediate_dense.weight'\]"):
        SSLEncoder(str(path))


class _Opaque:
    """Stands for objects a safe loader must not unpickle (e.g. omegaconf containers)."""


def test_unsafe_or_foreign_fairseq_files_are_refused(tmp_path):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"cfg": _Opaque(), "model": {}}, unsafe)
    with pytest.raises(ConfigError, match="not a loadable SSL checkpoint"):
        SSLEncoder(str(unsafe))
    finetuned = tmp_path / "finetuned.pt"
    torch.save({"cfg": {"model": {"_name": "wav2vec_ctc"}, "task": {}},
                "model": {"w2v_encoder.w2v_model.mask_emb": torch.zeros(4)}}, finetuned)
    with pytest.raises(ConfigError, match="only fairseq wav2vec 2.0"):
        SSLEncoder(str(finetuned))

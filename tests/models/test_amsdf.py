"""AMSDF: node-set shapes, frozen SSL and SER stay bit-identical under training, a tiny AMSDF
learns the devkit from scratch to below chance through main.py (train, --eval with per-attack and
per-emotion reports) and runs through inference.py (optimised, eager and ONNX)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emospoof.cm.config import load_config, validate_config
from emospoof.core.checkpoint import load_weights
from emospoof.core.config import ConfigError
from models import build_model
from tests.conftest import (REPO, assert_inference_paths_agree, assert_learned_below_chance, fairseq_name,
                            train_then_evaluate_again)
from utils import trainable_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "architecture": "AMSDF", "nb_samp": 8000, "first_conv": 32, "filts": [20, [1, 4], [4, 4], [4, 8], [8, 8]],
    "gat_dim": 16, "text_dim": 32, "emotion_pool": [3, 1], "view_norm": "feature",
}
TINY_ACRNN = {"backend": "acrnn", "ser_path": None, "acrnn_dims": [8, 16, 32, 16]}


def amsdf(ssl_dir, ser_config=None, **extra) -> torch.nn.Module:
    return build_model({**TINY, "ssl_path": str(ssl_dir), "ser_config": ser_config or TINY_ACRNN, **extra})


def waves(n: int, samples: int = 8000, seed: int = 0) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).standard_normal((n, samples)), dtype=torch.float32)


@pytest.mark.parametrize("backend", ["acrnn", "hf"])
def test_shapes_and_equal_view_node_counts(tiny_ssl_dir, tiny_ser_dir, backend):
    ser = TINY_ACRNN if backend == "acrnn" else {"backend": "hf", "ser_path": str(tiny_ser_dir), "layer": -1}
    torch.manual_seed(0)
    model = amsdf(tiny_ssl_dir, ser, nb_samp=16000).eval()
    x = waves(3, 16000)
    with torch.no_grad():
        hidden, logits = model(x)
        views = model.views(x)
        raw_audio = model.audio_view_extract(x)
    assert hidden.shape == (3, 6 * 16) and logits.shape == (3, 2)
    # 1 s of audio: 7 audio-encoder frames, the fewest of the three views, so every view keeps 7.
    assert raw_audio.shape == (3, 7, 8)
    assert {name: tuple(v.shape) for name, v in views.items()} == {name: (3, 7, 16) for name in ("audio", "text", "emo")}
    assert torch.isfinite(logits).all()
    with torch.no_grad():
        assert {tuple(v.shape) for v in amsdf(tiny_ssl_dir, ser, view_nodes=4).eval().views(waves(2)).values()} == {(2, 3, 16)}


def state_of(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_ssl_and_ser_stay_unchanged(tiny_ssl_dir, freeze):
    torch.manual_seed(0)
    ser_config = {**TINY_ACRNN, "freeze": freeze}
    model = amsdf(tiny_ssl_dir, ser_config, freeze_ssl=freeze)
    ssl, ser = model.text_view_extract.model, model.emo_view_extract.model
    ssl_before, ser_before = state_of(ssl), state_of(ser)
    head_before = state_of(model.Core_AET)
    trainable = {id(p) for p in trainable_parameters(model)}
    assert all((id(p) in trainable) != freeze for p in [*ssl.parameters(), *ser.parameters()])
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=1e-2)
    model.train()
    assert ssl.model.training != freeze and ser.encoder.training != freeze
    rng = np.random.default_rng(0)
    for step in range(3):
        loss = F.cross_entropy(model(waves(4, seed=step))[1], torch.tensor(rng.integers(0, 2, 4)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unchanged = [all(torch.equal(before[k], after[k]) for k in before)
                 for before, after in ((ssl_before, state_of(ssl)), (ser_before, state_of(ser)))]
    assert unchanged == [freeze, freeze]
    assert not all(torch.equal(head_before[k], v) for k, v in state_of(model.Core_AET).items())


def batch_norm_statistics(model: torch.nn.Module, batches: list) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Reference for SWA's BatchNorm update: a plain pass in train mode, frozen parts as they are,
    and for each BatchNorm that updates its statistics the average over the batches of its input's
    batch mean and unbiased variance (what a cumulative update gives)."""
    seen: dict[str, list] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            def keep(module, inputs, name=name):
                if module.training:
                    x = inputs[0].transpose(0, 1).flatten(1)  # channel first, everything else flattened
                    seen.setdefault(name, []).append((x.mean(dim=1), x.var(dim=1)))
            hooks.append(module.register_forward_pre_hook(keep))
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch.x)
    for hook in hooks:
        hook.remove()
    return {name: tuple(torch.stack(values).mean(dim=0) for values in zip(*stats)) for name, stats in seen.items()}


def test_swa_batchnorm_update_keeps_the_frozen_emotion_view_intact(tiny_ssl_dir):
    """SWA's BatchNorm re-estimation must run the frozen ACRNN on its own statistics: the trainable
    BatchNorm layers end up with the statistics of their inputs in a pass with the frozen branch
    intact (the emotion view's BatchNorm among them), not of inputs that a reset ACRNN corrupted."""
    from torch.optim.swa_utils import AveragedModel, update_bn

    from data_utils import LoadedTrial, Trial, collate_trials
    from emospoof.cm.training import update_bn_of_trainable

    torch.manual_seed(0)
    model = amsdf(tiny_ssl_dir)  # ACRNN and SSL frozen
    acrnn_bn = model.emo_view_extract.model.encoder.net.bn
    with torch.no_grad():  # a trained ACRNN's statistics, far from a reset BatchNorm's
        acrnn_bn.running_mean.uniform_(-2, 2)
        acrnn_bn.running_var.uniform_(0.1, 4)
    frozen_before = state_of(model.emo_view_extract.model)
    batches = [collate_trials([LoadedTrial(x[None], Trial(f"{seed}-{i}", "-", i % 2)) for i, x in enumerate(waves(4, seed=seed))])
               for seed in (5, 6)]
    torch.manual_seed(1)  # the same dropout draws in the reference pass and in the update
    expected = batch_norm_statistics(model, batches)
    assert "emo_view_extract.bn" in expected and not any(name.startswith("emo_view_extract.model") for name in expected)

    swa = AveragedModel(model)
    momentum = model.emo_view_extract.bn.momentum
    torch.manual_seed(1)
    update_bn_of_trainable(batches, swa, torch.device("cpu"))
    updated = dict(swa.module.named_modules())
    for name, (mean, var) in expected.items():
        torch.testing.assert_close(updated[name].running_mean, mean, atol=1e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(updated[name].running_var, var, atol=1e-5, rtol=1e-4, msg=name)
        assert updated[name].momentum == momentum
    frozen_after = state_of(swa.module.emo_view_extract.model)
    assert all(torch.equal(frozen_after[k], v) for k, v in frozen_before.items())

    # torch's update_bn alone (statistics restored only afterwards) estimates the emotion view's on corrupted inputs.
    old = AveragedModel(model)
    torch.manual_seed(1)
    update_bn((batch.x for batch in batches), old)
    assert not torch.allclose(old.module.emo_view_extract.bn.running_mean, expected["emo_view_extract.bn"][0], atol=1e-3)


def test_config_checks():
    base = load_config(REPO / "config/AMSDF.conf")
    assert base["model_config"]["ssl_path"] == "facebook/wav2vec2-xls-r-300m"
    assert base["model_config"]["ser_config"]["backend"] == "acrnn"
    devkit = load_config(REPO / "config/AMSDF_devkit.conf")
    assert devkit["model_config"]["ssl_path"] == "./models/weights/ssl_random_wav2vec2"
    for change, message in [
        ({"ser_config": {"backend": "hf", "ser_path": "x", "layer": "penultimate"}}, "frame-level"),
        ({"text_pool": [4]}, "model_config.text_pool"),
        ({"view_nodes": 0}, "model_config.view_nodes"),
        ({"temperatures": [2.0]}, "model_config.temperatures"),
        ({"ssl_layers": "first"}, "model_config.ssl_layers"),
        ({"ssl_normalize": "sometimes"}, "model_config.ssl_normalize"),
        ({"ssl_path": ""}, "model_config.ssl_path"),
        ({"gat_dims": [64, 32]}, "unknown config key 'model_config.gat_dims'"),
    ]:
        config = json.loads(json.dumps(devkit))
        config["model_config"].update(change)
        with pytest.raises(ConfigError, match=message):
            validate_config(config)


def test_feature_pool_wider_than_the_features_is_a_config_error(tiny_ssl_dir):
    with pytest.raises(ConfigError, match="model_config.emotion_pool: a feature pool of 64 leaves none of the 32"):
        amsdf(tiny_ssl_dir, emotion_pool=[3, 64])


def test_trains_on_the_devkit_below_chance_then_runs_through_eval_inference_and_onnx(shared_dir, tiny_ssl_dir,
                                                                                     tmp_path):
    """A tiny AMSDF (random text encoder, ACRNN emotion view trained along) from scratch through
    main.py on the whole devkit: 6 epochs of 0.5-s crops, batch 16, learning rate 3e-3, scored over
    back-to-back 0.5-s windows. Asserted by ``assert_learned_below_chance``, with the loss below
    0.95 of its start (the weighted cross-entropy falls slowly here while the EER drops fast).
    Measured at main.py's default seed (loss ratio, dev / LA eval EER): 0.92, 20.0 / 27.6 % (2026-12-03);
    at seeds 1 and 2, with the code of commit 752c23c: 0.91, 24.7 / 29.8 % and 0.84, 20.0 / 18.0 %.
    Then --eval, inference.py and ONNX export on the trained weights."""
    config = json.loads((REPO / "config/AMSDF_devkit.conf").read_text())
    config.pop("eval_datasets", None)  # the genuine-speech sets: tests/cm/test_operating_points.py
    config["model_config"].update({**TINY, "ssl_path": str(tiny_ssl_dir), "ser_config": TINY_ACRNN})
    config["optim_config"]["base_lr"] = 3e-3
    config.update(database_path=str(shared_dir / "data/devkit/LA"), emo_dataset=str(shared_dir / "data/devkit/DSES"),
                  emotion_labels=str(shared_dir / "data/devkit/meta.tsv"), num_epochs=6, batch_size=16,
                  num_workers=0, eval_mode="full", eval_hop=8000, swa=False)
    config_path = tmp_path / "amsdf.conf"
    config_path.write_text(json.dumps(config))

    run_dir, report = train_then_evaluate_again(config_path, tmp_path)
    assert report["n_skipped"] == 0 and report["la_eval"]["min_tdcf"] is not None
    # The devkit's meta.tsv labels every LA eval file: eight emotions, nothing unlabelled.
    assert set(report["la_eval"]["per_emotion"]) == {"angry", "calm", "disgust", "fearful", "happy", "neutral",
                                                     "sad", "surprised"}
    assert report["la_eval"]["n_unlabelled"] == {"bonafide": 0, "spoof": 0}
    print("AMSDF", assert_learned_below_chance(run_dir, report, loss_ratio=0.95))
    scores = assert_inference_paths_agree(config_path, run_dir / "weights/final.safetensors", shared_dir / "examples", tmp_path)
    assert len(scores) == 4


# ---------------------------------------------------------------------------------------------
# The authors' layout (ItzJuny/AMSDF): M1-M3 load strictly after convert_state_dict

XLSR_CONV = {"conv_dim": (8,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2)}


def xlsr_like(tmp_path_factory, hidden: int) -> str:
    """A random one-layer encoder built like XLS-R (its convolution strides: 201 frames per 64 600
    samples; pre-LN, layer-normalised convolutions with bias)."""
    from transformers import AutoModel

    from models.encoders.hf_audio import save_with_extractor, tiny_audio_config

    torch.manual_seed(0)
    config = tiny_audio_config("wav2vec2", hidden, 1, intermediate_size=16, do_stable_layer_norm=True,
                               conv_bias=True, feat_extract_norm="layer", layer_norm_eps=1e-5, **XLSR_CONV)
    return str(save_with_extractor(AutoModel.from_config(config), tmp_path_factory.mktemp("xlsr") / "ssl"))


def test_authors_configuration_has_their_parameter_count(tmp_path_factory):
    """675 413 parameters outside XLS-R and the ACRNN, as the authors' Module has (counted from
    their code: audio view 211 074, the rest graphs, fusions, readout and head)."""
    config = load_config(REPO / "config/AMSDF.conf")["model_config"]
    config.update(ssl_path=xlsr_like(tmp_path_factory, 1024), ser_config={"backend": "acrnn", "ser_path": None})
    model = build_model(config)
    encoders = sum(p.numel() for view in (model.text_view_extract, model.emo_view_extract) for p in view.model.parameters())
    assert sum(p.numel() for p in model.parameters()) - encoders == 675_413
    assert sum(p.numel() for p in model.audio_view_extract.parameters()) == 211_074
    assert sum(p.numel() for p in model.emo_view_extract.model.parameters()) == 7_319_043  # theirs + fc1/fc2: 7 335 751
    assert model.text_view_extract.bn.num_features == 50 and model.emo_view_extract.bn.num_features == 50


AUTHORS_TINY = {"architecture": "AMSDF", "nb_samp": 64600, "first_conv": 128, "filts": [20, [1, 4], [4, 4], [4, 8], [8, 8]],
                "gat_dim": 16, "text_dim": 32, "ssl_normalize": False, "ser_config": TINY_ACRNN}


def save_in_authors_layout(model, path) -> dict:
    """``model``'s weights as the authors' main_AMSDF.py saves them: fairseq names in the text view,
    the ACRNN with its emotion classifier, output rows in their 0 = real order, behind ``module.``."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("text_view_extract.model.model."):
            key = "text_view_extract.model." + fairseq_name(key.removeprefix("text_view_extract.model.model."), True)
        key = key.replace("emo_view_extract.model.encoder.net.", "emo_view_extract.model.")
        state["module." + key] = value.flip(0) if key.startswith("out_layer2.") else value
    cells = model.emo_view_extract.model.embedding_dim
    state |= {"module.text_view_extract.model.quantizer.vars": torch.randn(1, 8, 4),
              "module.emo_view_extract.model.fc1.weight": torch.randn(64, cells), "module.emo_view_extract.model.fc1.bias": torch.randn(64),
              "module.emo_view_extract.model.fc2.weight": torch.randn(4, 64), "module.emo_view_extract.model.fc2.bias": torch.randn(4)}
    torch.save(state, path)
    return state


def test_checkpoint_in_the_authors_layout_loads_strictly(tmp_path_factory, tmp_path):
    config = {**AUTHORS_TINY, "ssl_path": xlsr_like(tmp_path_factory, 32)}
    torch.manual_seed(1)
    source = build_model(config).eval()
    with torch.no_grad():  # no tensor keeps its initial value, so a misplaced one shows
        for key, tensor in source.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.05 * (torch.rand_like(tensor) if "running_var" in key else torch.randn_like(tensor)))
    path = tmp_path / "M1.pth"
    saved = save_in_authors_layout(source, path)
    expected_shapes = {  # from the authors' code (BatchNorm1d(50) over positions, HGFM, GRS, two-layer head)
        "module.text_view_extract.linear.weight": (32, 32), "module.text_view_extract.bn.running_mean": (50,),
        "module.emo_view_extract.bn.weight": (50,), "module.audio_view_extract.encoder.5.0.conv2.weight": (8, 8, 2, 3),
        "module.GAT_audio.att_weight": (16, 1), "module.pool_emo.proj.weight": (1, 16),
        "module.Core_AET.stack_node": (1, 1, 16), "module.Core_AE.HtrgGAT_layer2.att_weightM": (16, 1),
        "module.GRS_group3.pool2.proj.weight": (1, 16), "module.out_layer.weight": (16, 96),
        "module.out_layer2.weight": (2, 16), "module.text_view_extract.model.encoder.pos_conv.0.weight_g": (1, 1, 16),
        "module.emo_view_extract.model.conv1.weight": (8, 3, 5, 3), "module.emo_view_extract.model.rnn.weight_hh_l0_reverse": (64, 16),
    }
    assert {key: tuple(saved[key].shape) for key in expected_shapes} == expected_shapes

    torch.manual_seed(2)
    loaded = build_model(config).eval()
    load_weights(loaded, path, torch.device("cpu"))
    assert all(torch.equal(tensor, loaded.state_dict()[key]) for key, tensor in source.state_dict().items())
    wave = 0.1 * torch.randn(2, 64600, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden, logits = loaded(wave)
        torch.testing.assert_close(logits, source(wave)[1], rtol=0, atol=0)
        # The authors' score (their logit 1 = fake) is emospoof's spoof logit, index 0.
        authors_logits = F.linear(F.linear(hidden, saved["module.out_layer.weight"], saved["module.out_layer.bias"]),
                                  saved["module.out_layer2.weight"], saved["module.out_layer2.bias"])
        torch.testing.assert_close(authors_logits.flip(1), logits)
        with pytest.raises(ValueError, match="expects 50 node positions"):
            loaded(wave[:, :32000])
    assert build_model(config).convert_state_dict(loaded.state_dict()).keys() == loaded.state_dict().keys()

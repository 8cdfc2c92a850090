"""AASIST_WAV2VEC (SSL front end + AASIST back end) on a tiny random SSL model: structure,
parameter groups, training through main.py (with resume), inference paths, devkit learning, and
checkpoints in the layout of Tak et al.'s code (fairseq SSL names, nn.DataParallel prefix)."""
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import inference
import main as main_module
from data_utils import load_audio, random_crop
from emospoof.cm.config import load_config
from emospoof.core.checkpoint import load_weights
from emospoof.core.config import ConfigError
from emospoof.corpora.asvspoof import la_trials
from emospoof.scoring.onnx import export_onnx
from emospoof.scoring.windows import threaded_cpu_forward
from emospoof.training.optim import create_optimizer, parameter_groups
from models import build_model
from models.encoders.hf_audio import save_with_extractor, tiny_audio_config
from models.layers.blocks import ResidualBlock
from models.layers.fused import FusedResidualBlock, optimise_for_cpu
from tests.conftest import REPO, fairseq_name, make_config, stop_after_first_checkpoint
from utils import trainable_parameters

BACK_END = {"filts": [48, [1, 8], [8, 8], [8, 16], [16, 16]], "gat_dims": [16, 16],
            "pool_ratios": [0.5, 0.5, 0.5, 0.5], "temperatures": [2.0, 2.0, 100.0, 100.0]}


def model_config(ssl_dir, **extra) -> dict:
    return {"architecture": "AASIST_WAV2VEC", "nb_samp": 8000, "ssl_path": str(ssl_dir), **BACK_END, **extra}


def test_structure_follows_the_published_model(tiny_ssl_dir, single_thread):
    config = load_config(REPO / "config/AASIST_WAV2VEC_devkit.conf")["model_config"]
    model = build_model({**config, "ssl_path": str(tiny_ssl_dir)}).eval()
    assert model.LL.in_features == 32 and model.LL.out_features == 128
    assert model.pos_S.shape == (1, 42, 64)  # 128 projected features max-pooled by 3
    assert not hasattr(model, "conv_time")
    assert all(isinstance(block[0].pool, torch.nn.Identity) for block in model.encoder)  # no max-pooling
    names = set(model.state_dict())
    assert {"LL.weight", "first_bn1.running_mean", "attention.0.weight", "attention.2.weight",
            "attention.3.weight", "encoder.5.0.conv2.weight", "HtrgGAT_layer_ST22.att_weightM",
            "out_layer.weight", "ssl_model.layer_weights"} <= names
    with torch.no_grad():
        hidden, logits = model(torch.randn(3, 16000))
    assert hidden.shape == (3, 5 * 32) and logits.shape == (3, 2)


def test_frozen_ssl_stays_out_of_training(tiny_ssl_dir, single_thread):
    model = build_model(model_config(tiny_ssl_dir, freeze_ssl=True))
    ssl_ids = {id(p) for p in model.ssl_model.model.parameters()}
    assert not ssl_ids & {id(p) for p in trainable_parameters(model)}
    groups = parameter_groups(model, {"base_lr": 1e-3, "ssl_lr": 1e-5})
    assert len(groups) == 1 and len(groups[0]["params"]) == len(trainable_parameters(model))
    model.train()
    assert not model.ssl_model.model.training and model.LL.training


def test_ssl_lr_makes_a_second_parameter_group(tiny_ssl_dir):
    model = build_model(model_config(tiny_ssl_dir, ssl_layers="weighted"))
    optim_config = {"base_lr": 1e-3, "ssl_lr": 1e-5, "lr_min": 1e-6, "scheduler": "cosine"}
    optimizer, scheduler = create_optimizer(parameter_groups(model, optim_config), optim_config, 10)
    base, ssl = optimizer.param_groups
    assert {id(p) for p in ssl["params"]} == {id(p) for p in model.ssl_model.model.parameters()}
    assert any(p is model.ssl_model.layer_weights for p in base["params"])  # part of the back end
    assert len(base["params"]) + len(ssl["params"]) == len(list(model.parameters()))
    assert (base["lr"], ssl["lr"]) == (1e-3, 1e-5)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert ssl["lr"] == pytest.approx(1e-5 * 1e-6 / 1e-3) and base["lr"] == pytest.approx(1e-6)
    assert parameter_groups(model, {"base_lr": 1e-3}) == trainable_parameters(model)


def test_weighted_layers_survive_layerdrop(tmp_path, single_thread):
    from transformers import AutoModel

    ssl_dir = save_with_extractor(AutoModel.from_config(tiny_audio_config("wav2vec2", 16, 3, layerdrop=0.9)),
                                  tmp_path / "layerdrop")
    model = build_model(model_config(ssl_dir, ssl_layers="weighted")).train()
    for _ in range(3):  # with LayerDrop kept, most passes would list fewer hidden states
        assert model(torch.randn(2, 8000))[1].shape == (2, 2)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["model_config"].pop("ssl_path"), "model_config.ssl_path"),
    (lambda c: c["model_config"].update(ssl_layers="all"), "model_config.ssl_layers"),
    (lambda c: c["model_config"].update(freeze_ssl="sometimes"), "model_config.freeze_ssl"),
    (lambda c: c["model_config"].update(ssl_normalize="raw"), "model_config.ssl_normalize"),
    (lambda c: c["model_config"].update(first_conv=128), "unknown config key 'model_config.first_conv'"),
    (lambda c: c["optim_config"].update(ssl_lr=-1), "optim_config.ssl_lr"),
    (lambda c: c.update(augmentation=["rawboost"]), "'augmentation': expected an object"),
])
def test_config_errors(tmp_path, change, message):
    config = json.loads((REPO / "config/AASIST_WAV2VEC_devkit.conf").read_text())
    change(config)
    path = tmp_path / "bad.conf"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_shipped_configs():
    hub = load_config(REPO / "config/AASIST_WAV2VEC.conf")
    assert hub["model_config"]["ssl_path"] == "facebook/wav2vec2-xls-r-300m"
    assert hub["model_config"]["filts"][0] == 128 and hub["batch_size"] == 14
    assert hub["optim_config"]["base_lr"] == 1e-6 and hub["augmentation"] == {"rawboost": {"algo": 5}}  # as published
    devkit = load_config(REPO / "config/AASIST_WAV2VEC_devkit.conf")
    assert devkit["model_config"]["ssl_path"] == "./models/weights/ssl_random_wav2vec2"


def test_main_trains_and_resumes_with_two_parameter_groups_without_swa(tmp_path, tiny_la, tiny_ssl_dir, monkeypatch):
    config = make_config(tmp_path, tiny_la, model_config=model_config(tiny_ssl_dir, ssl_layers="weighted"),
                         augmentation={}, swa="False")
    optim = json.loads(config.read_text())
    optim["optim_config"]["ssl_lr"] = 1e-4
    config.write_text(json.dumps(optim))
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "full"), "--seed", "3"])
    full = next((tmp_path / "full").iterdir())
    checkpoint = torch.load(full / "checkpoint.pth", weights_only=True)
    assert [g["lr"] for g in checkpoint["optimizer"]["param_groups"]][1] < 1e-4  # decayed ssl_lr
    assert checkpoint["task"]["swa_model"] is None and not (full / "weights/swa.safetensors").exists()  # no SWA copy

    stop_after_first_checkpoint(monkeypatch, main_module.main,
                                ["--config", str(config), "--output_dir", str(tmp_path / "split"), "--seed", "3"])
    split = next((tmp_path / "split").iterdir())
    main_module.main(["--resume", str(split)])
    a = load_file(full / "weights/final.safetensors")
    b = load_file(split / "weights/final.safetensors")
    assert any(k.startswith("ssl_model.model.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    assert (full / "eval_scores.txt").read_text() == (split / "eval_scores.txt").read_text()


def test_inference_paths_agree(tiny_ssl_dir, tmp_path, single_thread):
    model = build_model(model_config(tiny_ssl_dir, ssl_layers="weighted")).eval()
    x = torch.randn(3, 8000)
    with torch.no_grad():
        eager = model(x)[1].numpy()
    fast = threaded_cpu_forward(optimise_for_cpu(model), 2)(x)
    np.testing.assert_allclose(fast, eager, atol=1e-4)
    difference = export_onnx(model, tmp_path / "model.onnx", 8000)
    assert difference is not None and difference < 1e-4


@pytest.mark.parametrize("channels_last", [True, False], ids=["as-main.py", "as-inference.py"])
def test_cpu_twin_copies_only_the_blocks_it_replaces(tiny_ssl_dir, single_thread, channels_last):
    """optimise_for_cpu runs at every dev scoring of a training run: everything it does not
    replace (the frozen SSL encoder above all) is the original's tensors, and the training model
    keeps its modules, values, memory format and mode."""
    model = build_model(model_config(tiny_ssl_dir, freeze_ssl=True)).train()
    if channels_last:  # as main.py trains it
        model = model.to(memory_format=torch.channels_last)
    original = model.state_dict()
    values = {name: tensor.clone() for name, tensor in original.items()}
    layout = {name: (tensor.data_ptr(), tensor.stride()) for name, tensor in original.items()}
    modules = [(name, type(module), module.training) for name, module in model.named_modules()]

    fast = optimise_for_cpu(model)
    assert not any(isinstance(m, ResidualBlock) for m in fast.modules())
    assert sum(isinstance(m, FusedResidualBlock) for m in fast.modules()) == len(model.encoder)
    twin = fast.state_dict()
    kept = [name for name in twin if name in original]
    assert {name for name in original if name not in twin} == {
        name for name in original if name.startswith("encoder.")}  # only the residual blocks are replaced
    assert any(name.startswith("ssl_model.model.") for name in kept)
    for name in kept:
        converted = original[name].dim() == 4 and not original[name].is_contiguous(memory_format=torch.channels_last)
        assert (twin[name].data_ptr() == original[name].data_ptr()) != converted, name
        assert twin[name].is_contiguous(memory_format=torch.channels_last) or twin[name].dim() != 4, name

    assert [(name, type(module), module.training) for name, module in model.named_modules()] == modules
    after = model.state_dict()
    assert {name: (tensor.data_ptr(), tensor.stride()) for name, tensor in after.items()} == layout
    assert all(torch.equal(after[name], values[name]) for name in values)
    x = torch.randn(2, 8000)
    with torch.no_grad():
        np.testing.assert_allclose(fast(x)[1].numpy(), model.eval()(x)[1].numpy(), atol=1e-4)


def test_learns_on_devkit_speech(shared_dir, tiny_ssl_dir, single_thread):
    """Real devkit speech, bona fide vs spoof, half-second crops, from scratch (random tiny SSL
    model, fine-tuned at ``ssl_lr``): the training loss must fall and fresh crops of the training
    clips must be ranked mostly right. (Held-out separation needs far more steps than a test has.)"""
    trials = la_trials(shared_dir / "data/devkit/LA", "train")
    rng = np.random.default_rng(0)
    chosen = {label: rng.choice([t for t in trials if t.label == label], 12, replace=False) for label in (0, 1)}
    audio = {label: [load_audio(t.path) for t in chosen[label]] for label in (0, 1)}
    torch.manual_seed(0)
    np.random.seed(0)  # random_crop draws from numpy's global generator
    model = build_model(model_config(tiny_ssl_dir, ssl_layers="weighted"))
    optim_config = {"base_lr": 3e-3, "ssl_lr": 3e-4, "scheduler": "none"}
    optimizer, _ = create_optimizer(parameter_groups(model, optim_config), optim_config, 1)
    model.train()
    losses = []
    for _ in range(150):
        labels = torch.tensor([0, 1] * 4)
        waves = [random_crop(audio[int(y)][rng.integers(12)], 8000) for y in labels]
        loss = F.cross_entropy(model(torch.from_numpy(np.stack(waves)).float())[1], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"devkit loss: first 30 steps {np.mean(losses[:30]):.3f}, last 30 {np.mean(losses[-30:]):.3f}")
    assert np.mean(losses[-30:]) < 0.75 * np.mean(losses[:30]), losses
    model.eval()
    with torch.no_grad():
        scores = {label: model(torch.from_numpy(np.stack([random_crop(a, 8000) for a in audio[label]])).float())[1]
                  for label in (0, 1)}
    margin = {label: (s[:, 1] - s[:, 0]).numpy() for label, s in scores.items()}
    ranked_right = (margin[1][:, None] > margin[0][None, :]).mean()
    assert ranked_right > 0.7, ranked_right


# ---------------------------------------------------------------------------------------------
# Published checkpoints of the reference code (LA_model.pth etc.), written here in its layout


@pytest.fixture(scope="module")
def xlsr_like_dir(tmp_path_factory):
    """A tiny SSL model built like XLS-R: pre-LN transformer, layer-normalised conv layers with bias."""
    from transformers import AutoModel

    torch.manual_seed(0)
    config = tiny_audio_config("wav2vec2", 32, 2, do_stable_layer_norm=True, conv_bias=True,
                               feat_extract_norm="layer", layer_norm_eps=1e-5)
    return save_with_extractor(AutoModel.from_config(config), tmp_path_factory.mktemp("xlsr_like") / "ssl")


def _trained_looking_model(config: dict, seed: int):
    """A model in which no tensor keeps its initial value (BatchNorm statistics included), so a
    tensor that is skipped or loaded into the wrong place changes the output."""
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():  # variances stay positive
                tensor.add_(0.1 * (torch.rand_like(tensor) if "running_var" in key else torch.randn_like(tensor)))
    return model


def _save_in_reference_layout(model, path) -> None:
    """``model``'s weights as the reference code saves them: the SSL part under fairseq's names,
    pre-training heads included, every key behind nn.DataParallel's ``module.``."""
    layer_norm_extractor = model.ssl_model.model.config.feat_extract_norm == "layer"
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("ssl_model.model."):
            key = "ssl_model.model." + fairseq_name(key.removeprefix("ssl_model.model."), layer_norm_extractor)
        state["module." + key] = value
    state["module.ssl_model.model.quantizer.vars"] = torch.randn(1, 8, 16)
    state["module.ssl_model.model.project_q.weight"] = torch.randn(16, 16)
    torch.save(state, path)


def test_reference_checkpoint_loads_strictly_and_scores_the_same(xlsr_like_dir, tmp_path, single_thread):
    config = model_config(xlsr_like_dir, ssl_normalize=False)
    source = _trained_looking_model(config, seed=1)
    path = tmp_path / "LA_model.pth"
    _save_in_reference_layout(source, path)
    saved = torch.load(path, weights_only=True)
    assert {"module.LL.weight", "module.ssl_model.model.encoder.pos_conv.0.weight_g",
            "module.ssl_model.model.feature_extractor.conv_layers.0.2.1.weight",
            "module.ssl_model.model.encoder.layers.1.self_attn_layer_norm.bias"} <= saved.keys()

    loaded = _trained_looking_model(config, seed=2)
    wave = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = loaded(wave)[1]
        load_weights(loaded, path, torch.device("cpu"))
        after, expected = loaded(wave)[1], source(wave)[1]
    assert not torch.allclose(before, expected)
    assert loaded.state_dict().keys() == source.state_dict().keys()
    assert all(torch.equal(tensor, loaded.state_dict()[key]) for key, tensor in source.state_dict().items())
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    # As in the reference: the raw waveform in, the encoder's output (after its final LayerNorm) out.
    with torch.no_grad():
        raw_output = loaded.ssl_model.model(input_values=wave).last_hidden_state
    torch.testing.assert_close(loaded.ssl_model(wave), raw_output, rtol=0, atol=0)
    assert build_model(model_config(xlsr_like_dir)).ssl_model.normalize  # default: the feature extractor's


def test_own_checkpoints_pass_conversion_unchanged(tiny_ssl_dir):
    model = build_model(model_config(tiny_ssl_dir, ssl_layers="weighted"))
    state = model.state_dict()
    converted = model.convert_state_dict(state)
    assert list(converted) == list(state) and all(converted[key] is state[key] for key in state)


def test_reference_checkpoint_through_main_and_inference(xlsr_like_dir, tmp_path, tiny_la):
    config = make_config(tmp_path, tiny_la, model_config=model_config(xlsr_like_dir, ssl_normalize=False),
                         augmentation={}, swa="False")
    model = _trained_looking_model(model_config(xlsr_like_dir, ssl_normalize=False), seed=3)
    ours, reference = tmp_path / "ours.pth", tmp_path / "reference.pth"
    torch.save(model.state_dict(), ours)
    _save_in_reference_layout(model, reference)
    scores = {}
    for weights in (ours, reference):
        main_module.main(["--config", str(config), "--eval", "--eval_model_weights", str(weights),
                          "--output_dir", str(tmp_path / "eval"), "--comment", weights.stem])
        run_dir = next((tmp_path / "eval").glob(f"*_{weights.stem}"))
        output = tmp_path / f"{weights.stem}.tsv"
        assert inference.main(["--config", str(config), "--test_dir", str(tiny_la / "ASVspoof2019_LA_eval"),
                               "--weights", str(weights), "--output_file", str(output), "--num_workers", "0",
                               "--no_progress", "--eager"]) == 0
        scores[weights.stem] = ((run_dir / "eval_scores.txt").read_text(),
                                [row["score"] for row in csv.DictReader(open(output), delimiter="\t")])
    assert len(scores["ours"][1]) == 8 and scores["reference"] == scores["ours"]


def test_reference_checkpoint_that_does_not_fit_is_one_line_error(xlsr_like_dir, tmp_path, single_thread):
    from transformers import AutoModel

    path = tmp_path / "LA_model.pth"
    _save_in_reference_layout(build_model(model_config(xlsr_like_dir)), path)
    torch.manual_seed(0)
    narrow = save_with_extractor(AutoModel.from_config(tiny_audio_config(
        "wav2vec2", 16, 2, do_stable_layer_norm=True, conv_bias=True, feat_extract_norm="layer")), tmp_path / "ssl16")
    with pytest.raises(ConfigError) as error:
        load_weights(build_model(model_config(narrow)), path, torch.device("cpu"))
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "does not fit model_config.ssl_path" in message and "checkpoint (32,), model (16,)" in message
    other_back_end = {**model_config(xlsr_like_dir), "filts": [60, *BACK_END["filts"][1:]]}
    with pytest.raises(ConfigError, match=r"weights do not fit the model \(size mismatch for pos_S") as error:
        load_weights(build_model(other_back_end), path, torch.device("cpu"))
    assert "\n" not in str(error.value)

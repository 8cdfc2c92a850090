"""The DPHuBERT front end: a tiny checkpoint written here in DPHuBERT's layout (torchaudio's wav2vec 2.0
component names, a pruned size per layer: a convolution with fewer channels, layers with 2, 1 and 0
attention heads and different feed-forward widths) loads strictly and computes what a direct
functional computation of that layout computes; ssl_layers and freezing work; the SSL model
takes the AASIST or the SEMAA back end."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emospoof.cm.config import load_config, validate_config
from emospoof.core.config import ConfigError
from models import build_model
from models.encoders.ssl import SSLEncoder
from tests.conftest import REPO, assert_inference_paths_agree, assert_learns, small_devkit, train_then_evaluate_again
from utils import count_parameters, trainable_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

DIM, HEAD_DIM = 16, 4
CONFIG = {
    "extractor_mode": "group_norm", "extractor_conv_layer_config": [[6, 10, 5], [5, 3, 2], [7, 2, 2]],
    "extractor_conv_bias": False, "encoder_embed_dim": DIM, "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 8, "encoder_pos_conv_groups": 2, "encoder_num_layers": 3,
    "encoder_use_attention": [True, True, False], "encoder_use_feed_forward": [True, True, True],
    "encoder_num_heads": [2, 1, 0], "encoder_head_dim": HEAD_DIM, "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_features": [12, 5, 9], "encoder_ff_interm_dropout": 0.0, "encoder_dropout": 0.1,
    "encoder_layer_norm_first": False, "encoder_layer_drop": 0.05, "aux_num_out": None, "normalize_waveform": False,
    "extractor_prune_conv_channels": False, "encoder_prune_attention_heads": False,
    "encoder_prune_attention_layer": False, "encoder_prune_feed_forward_intermediate": False,
    "encoder_prune_feed_forward_layer": False,
}


def layout_shapes(config: dict) -> dict:
    """Parameter names and shapes of torchaudio's Wav2Vec2Model components as DPHuBERT saves them."""
    shapes, in_ch = {}, 1
    for i, (out_ch, kernel, _) in enumerate(config["extractor_conv_layer_config"]):
        shapes[f"feature_extractor.conv_layers.{i}.conv.weight"] = (out_ch, in_ch, kernel)
        if i == 0:  # group_norm mode: one GroupNorm, in the first block
            shapes |= {f"feature_extractor.conv_layers.0.layer_norm.{p}": (out_ch,) for p in ("weight", "bias")}
        in_ch = out_ch
    shapes["feature_extractor.dummy_weight"] = (in_ch,)
    dim, kernel, groups = config["encoder_embed_dim"], config["encoder_pos_conv_kernel"], config["encoder_pos_conv_groups"]
    shapes |= {"encoder.feature_projection.layer_norm.weight": (in_ch,), "encoder.feature_projection.layer_norm.bias": (in_ch,),
               "encoder.feature_projection.projection.weight": (dim, in_ch), "encoder.feature_projection.projection.bias": (dim,),
               "encoder.transformer.pos_conv_embed.conv.weight_g": (1, 1, kernel),
               "encoder.transformer.pos_conv_embed.conv.weight_v": (dim, dim // groups, kernel),
               "encoder.transformer.pos_conv_embed.conv.bias": (dim,),
               "encoder.transformer.layer_norm.weight": (dim,), "encoder.transformer.layer_norm.bias": (dim,)}
    for i in range(config["encoder_num_layers"]):
        layer = f"encoder.transformer.layers.{i}"
        heads, hidden = config["encoder_num_heads"][i], config["encoder_ff_interm_features"][i]
        if config["encoder_use_attention"][i] and heads:
            width = heads * config["encoder_head_dim"]
            for proj in ("q_proj", "k_proj", "v_proj"):
                shapes |= {f"{layer}.attention.{proj}.weight": (width, dim), f"{layer}.attention.{proj}.bias": (width,)}
            shapes |= {f"{layer}.attention.out_proj.weight": (dim, width), f"{layer}.attention.out_proj.bias": (dim,)}
        if config["encoder_use_feed_forward"][i] and hidden:
            shapes |= {f"{layer}.feed_forward.intermediate_dense.weight": (hidden, dim),
                       f"{layer}.feed_forward.intermediate_dense.bias": (hidden,),
                       f"{layer}.feed_forward.output_dense.weight": (dim, hidden),
                       f"{layer}.feed_forward.output_dense.bias": (dim,)}
        shapes |= {f"{layer}.{norm}.{p}": (dim,) for norm in ("layer_norm", "final_layer_norm") for p in ("weight", "bias")}
    return shapes


def write_checkpoint(path, config=CONFIG, seed=0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    state = {key: 0.3 * torch.randn(shape, generator=generator) for key, shape in layout_shapes(config).items()}
    state["feature_extractor.dummy_weight"] = torch.rand(state["feature_extractor.dummy_weight"].shape, generator=generator)
    torch.save({"state_dict": state, "config": config, "distill_linear_projs": {"0.weight": torch.zeros(2, 2)}}, path)
    return state


def direct_hidden_states(state: dict, config: dict, wave: torch.Tensor) -> list[torch.Tensor]:
    """The layout's computation written out with functional ops: projection, then every layer."""
    x = wave.unsqueeze(1)
    for i, (out_ch, _, stride) in enumerate(config["extractor_conv_layer_config"]):
        x = F.conv1d(x, state[f"feature_extractor.conv_layers.{i}.conv.weight"], stride=stride)
        if i == 0:
            x = F.group_norm(x, out_ch, state["feature_extractor.conv_layers.0.layer_norm.weight"],
                             state["feature_extractor.conv_layers.0.layer_norm.bias"])
        x = F.gelu(x)
    x = x.transpose(1, 2) * state["feature_extractor.dummy_weight"]
    p = "encoder.feature_projection."
    x = F.linear(F.layer_norm(x, x.shape[-1:], state[p + "layer_norm.weight"], state[p + "layer_norm.bias"]),
                 state[p + "projection.weight"], state[p + "projection.bias"])
    hidden = [x]
    t = "encoder.transformer."
    weight = torch._weight_norm(state[t + "pos_conv_embed.conv.weight_v"], state[t + "pos_conv_embed.conv.weight_g"], 2)
    kernel = config["encoder_pos_conv_kernel"]
    pos = F.conv1d(x.transpose(1, 2), weight, state[t + "pos_conv_embed.conv.bias"], padding=kernel // 2,
                   groups=config["encoder_pos_conv_groups"])[..., : x.size(1)]
    x = x + F.gelu(pos).transpose(1, 2)
    norm = lambda x, name: F.layer_norm(x, (DIM,), state[name + ".weight"], state[name + ".bias"])  # noqa: E731
    x = norm(x, t + "layer_norm")
    for i, heads in enumerate(config["encoder_num_heads"]):
        layer = f"{t}layers.{i}."
        if heads:
            q, k, v = (F.linear(x, state[f"{layer}attention.{n}_proj.weight"], state[f"{layer}attention.{n}_proj.bias"])
                       .unflatten(-1, (heads, HEAD_DIM)).transpose(1, 2) for n in "qkv")
            attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
            x = x + F.linear(attended, state[layer + "attention.out_proj.weight"], state[layer + "attention.out_proj.bias"])
        x = norm(x, layer + "layer_norm")
        inner = F.gelu(F.linear(x, state[layer + "feed_forward.intermediate_dense.weight"],
                                state[layer + "feed_forward.intermediate_dense.bias"]))
        x = x + F.linear(inner, state[layer + "feed_forward.output_dense.weight"], state[layer + "feed_forward.output_dense.bias"])
        hidden.append(norm(x, layer + "final_layer_norm"))
        x = hidden[-1]
    return hidden


@pytest.fixture(scope="module")
def dphubert_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dphubert") / "DPHuBERT-tiny.pth"
    return path, write_checkpoint(path)


def test_checkpoint_loads_strictly_and_matches_the_direct_computation(dphubert_file):
    path, state = dphubert_file
    encoder = SSLEncoder(str(path), layers="last", freeze=True)
    model = encoder.model
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())
    assert [layer.attention is None for layer in model.encoder.transformer.layers] == [False, False, True]
    assert [layer.feed_forward.intermediate_dense.out_features for layer in model.encoder.transformer.layers] == [12, 5, 9]
    assert count_parameters(model) == sum(t.numel() for t in state.values())
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(3))
    expected = direct_hidden_states(state, CONFIG, wave)
    torch.testing.assert_close(encoder(wave), expected[-1], rtol=1e-5, atol=1e-5)
    output = model(wave, output_hidden_states=True)
    assert len(output.hidden_states) == 4
    for got, want in zip(output.hidden_states, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert encoder.frame_count(4000) == expected[0].size(1)


def test_layer_choices_and_freezing(dphubert_file):
    path, state = dphubert_file
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(4))
    expected = direct_hidden_states(state, CONFIG, wave)
    listed = SSLEncoder(str(path), layers=[2, 3], freeze=True)
    torch.testing.assert_close(listed(wave), (expected[2] + expected[3]) / 2, rtol=1e-5, atol=1e-5)
    weighted = SSLEncoder(str(path), layers="weighted", freeze=False)
    assert weighted.layer_weights.shape == (4,) and weighted.model.config.layerdrop == 0.0
    assert {id(p) for p in trainable_parameters(weighted)} >= {id(p) for p in weighted.model.parameters() if p.requires_grad}
    assert all(not p.requires_grad for p in listed.model.parameters()) and listed.layer_weights.requires_grad
    listed.train()
    assert not listed.model.training  # frozen: stays in eval mode
    with pytest.raises(ConfigError, match="hidden states 0..3"):
        SSLEncoder(str(path), layers=[4])


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    pruning = dict(CONFIG, encoder_prune_attention_heads=True)
    write_checkpoint(tmp_path / "pruning.pth", pruning)
    with pytest.raises(ConfigError, match="taken during pruning"):
        SSLEncoder(str(tmp_path / "pruning.pth"))
    state = write_checkpoint(tmp_path / "other.pth")
    torch.save({"state_dict": state, "config": dict(CONFIG, encoder_ff_interm_features=[12, 6, 9])}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="weights do not fit the checkpoint's own config.*size mismatch"):
        SSLEncoder(str(tmp_path / "other.pth"))
    torch.save({"weights": {}}, tmp_path / "neither.pth")
    with pytest.raises(ConfigError, match="neither a fairseq checkpoint .* nor a torchaudio-layout one"):
        SSLEncoder(str(tmp_path / "neither.pth"))


BACK_END = {"filts": [32, [1, 8], [8, 8], [8, 16], [16, 16]], "gat_dims": [16, 8],
            "pool_ratios": [0.5, 0.5, 0.5, 0.5], "temperatures": [2.0, 2.0, 100.0, 100.0]}


@pytest.mark.parametrize("back_end", ["AASIST", "SEMAA"])
def test_dphubert_front_end_with_either_back_end_trains(dphubert_file, back_end):
    path, _ = dphubert_file
    torch.manual_seed(0)
    model = build_model({"architecture": "AASIST_WAV2VEC", "nb_samp": 8000, "ssl_path": str(path),
                         "ssl_layers": [1, 2, 3], "back_end": back_end, **BACK_END})
    names = model.state_dict().keys()
    if back_end == "SEMAA":  # the hackathon's ModelWithSEMAA names
        assert {"attention.att_weights", "attention_asp.0.weight"} <= names and "first_bn1.weight" not in names
        assert model.pos_S.shape == (1, 10, 32) and model.out_layer.in_features == 9 * 8
    else:
        assert {"first_bn1.weight", "attention.0.weight"} <= names and model.out_layer.in_features == 5 * 8

    def batch(n, rng):
        y = torch.tensor(rng.integers(0, 2, n))
        t = torch.arange(8000) / 16000
        freq = torch.where(y == 1, 300.0, 2500.0).unsqueeze(1)
        noise = torch.tensor(rng.standard_normal((n, 8000)), dtype=torch.float32)
        return torch.sin(2 * torch.pi * freq * t) + 0.1 * noise, y

    if back_end == "AASIST":  # SEMAA's learning is tested on its own (test_semaa_rawformer.py)
        assert_learns(model, batch, steps=30, lr=3e-3, n_test=8)
        return
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = model.attention.att_weights.detach().clone()
    x, y = batch(8, np.random.default_rng(0))
    loss = F.cross_entropy(model.train()(x)[1], y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.attention.att_weights)
    assert model.ssl_model.layer_weights.grad is not None  # the gradient reaches the front end


def test_shipped_config():
    config = load_config(REPO / "config/AASIST_DPHuBERT.conf")
    model_config = config["model_config"]
    assert model_config["ssl_path"].endswith("DPHuBERT-sp0.75.pth") and model_config["ssl_layers"] == [10, 11, 12]
    bad = json.loads(json.dumps(config))
    bad["model_config"]["back_end"] = "RawNet"
    with pytest.raises(ConfigError, match="model_config.back_end: expected one of AASIST, SEMAA"):
        validate_config(bad)


def test_onnx_export_of_both_back_ends(dphubert_file, tmp_path):
    from emospoof.scoring.onnx import export_onnx

    path, _ = dphubert_file
    for back_end in ("AASIST", "SEMAA"):
        model = build_model({"architecture": "AASIST_WAV2VEC", "nb_samp": 8000, "ssl_path": str(path),
                             "ssl_layers": [1, 2, 3], "back_end": back_end, **BACK_END}).eval()
        difference = export_onnx(model, tmp_path / f"{back_end}.onnx", 8000)
        assert difference is not None and difference < 1e-4, back_end


def test_main_eval_and_inference_with_the_semaa_back_end(dphubert_file, shared_dir, tmp_path):
    """config/AASIST_DPHuBERT.conf with the tiny checkpoint and the SEMAA back end: main.py trains
    (one epoch on a few devkit trials; random weights, so this shows the plumbing, not learning),
    --eval reports per attack and per emotion, and inference.py scores a folder the same eagerly
    and on the optimised CPU path."""
    path, _ = dphubert_file
    config = json.loads((REPO / "config/AASIST_DPHuBERT.conf").read_text())
    config["model_config"].update(nb_samp=16000, ssl_path=str(path), ssl_layers="weighted", back_end="SEMAA",
                                  **BACK_END)
    config.update(database_path=str(small_devkit(shared_dir, tmp_path / "LA")),
                  emo_dataset=str(shared_dir / "data/devkit/DSES"), emo_bonafide_system="ESD", num_epochs=1,
                  batch_size=8, num_workers=0, eval_mode="first", swa=False)
    config_path = tmp_path / "dphubert.conf"
    config_path.write_text(json.dumps(config))
    run_dir, _ = train_then_evaluate_again(config_path, tmp_path)
    scores = assert_inference_paths_agree(config_path, run_dir / "weights/final.safetensors", shared_dir / "examples", tmp_path,
                                          onnx=False)
    assert len(scores) == 4

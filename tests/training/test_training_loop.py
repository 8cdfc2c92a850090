"""The training loop's speed and scale settings on CPU: gradient accumulation, precision (bf16
autocast, fp16 with loss scaling, fp32 parity with TF32 off), torch.compile, the training loader's
seeding, cuDNN switches, TensorBoard and the training-curve PNG."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from torch import nn

import main as main_module
from data_utils import Batch, SkipReport, TrialDataset, make_loader
from emospoof.core.config import ConfigError
from emospoof.corpora.asvspoof import la_trials
from emospoof.scoring.windows import torch_forward
from emospoof.training.acceleration import resolve_precision, set_tf32
from emospoof.training.engine import Trainer, TrainSettings, weighted_cross_entropy
from models import build_model
from tests.conftest import TINY_MODEL, TINY_RAWNET2, make_config
from utils import seed_everything

CLASS_WEIGHT = torch.tensor([0.1, 0.9])


class TinyTask:
    """A countermeasure-like task: class-weighted cross-entropy of a model's logits."""

    def __init__(self, model: nn.Module, logits_of=lambda net, x: net(x)) -> None:
        self.model, self.logits_of = model, logits_of

    def loss(self, net, batch):
        return weighted_cross_entropy(self.logits_of(net, batch.x), batch.labels, CLASS_WEIGHT)


def batch_of(x: torch.Tensor, labels: list[int]) -> Batch:
    return Batch(x, torch.tensor(labels), [str(i) for i in range(len(labels))], [1] * len(labels), [])


def train(model: nn.Module, batches: list[Batch], settings: TrainSettings, lr: float = 0.1, **task) -> Trainer:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(TinyTask(model, **task), optimizer, scheduler, torch.device("cpu"), settings, SkipReport())
    trainer.run_epoch(batches, "test")
    return trainer


def test_gradient_accumulation_takes_the_step_of_the_whole_batch():
    """Two accumulated micro-batches of 4 step exactly as one batch of 8, class weights included
    (a mean of the micro-batches' means would not: their class mixes differ); an accumulation
    left open by a skipped last batch still steps."""
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(0))
    labels = [1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0]
    empty = Batch(torch.empty(0, 0), torch.empty(0, dtype=torch.long), [], [], [("bad.flac", "corrupt")])
    torch.manual_seed(0)
    whole, accumulated = nn.Linear(6, 2), nn.Linear(6, 2)
    accumulated.load_state_dict(whole.state_dict())
    start = {k: v.clone() for k, v in whole.state_dict().items()}
    train(whole, [batch_of(x[:8], labels[:8]), batch_of(x[8:], labels[8:])], TrainSettings())
    micro = [batch_of(x[i:i + 4], labels[i:i + 4]) for i in (0, 4, 8)]
    trainer = train(accumulated, micro + [empty], TrainSettings(grad_accum_steps=2))
    assert trainer.scheduler.last_epoch == 2  # two optimiser steps, as for the whole batches
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[key], value, rtol=0, atol=1e-6)
        assert not torch.allclose(value, start[key])


def tone_batches(n_batches: int, size: int, nb_samp: int, seed: int = 0) -> list[Batch]:
    """Learnable audio: bona fide = low tone, spoof = high tone, both with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(nb_samp) / 16000
    batches = []
    for _ in range(n_batches):
        labels = rng.integers(0, 2, size)
        freqs = np.where(labels == 1, rng.uniform(150, 300, size), rng.uniform(2500, 4000, size))
        x = 0.3 * np.sin(2 * np.pi * freqs[:, None] * t) + 0.05 * rng.standard_normal((size, nb_samp))
        batches.append(batch_of(torch.tensor(x, dtype=torch.float32), labels.tolist()))
    return batches


def test_bf16_autocast_trains_on_cpu(single_thread):
    torch.manual_seed(0)
    model = build_model({**TINY_MODEL, "nb_samp": 4000})
    seen = set()
    model.out_layer.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(TinyTask(model, lambda net, x: net(x)[1]), optimizer, scheduler, torch.device("cpu"),
                      TrainSettings(precision="bf16"), SkipReport())
    batches = tone_batches(4, 8, 4000)
    losses = [trainer.run_epoch(batches, "bf16")["train_loss"] for _ in range(4)]
    assert seen == {torch.bfloat16}  # the model ran under bf16 autocast
    assert not trainer.scaler.is_enabled()  # bf16 has float32's range: no loss scaling
    assert losses[-1] < 0.7 * losses[0], losses


def test_fp16_scales_the_loss_and_steps_as_fp32_does():
    torch.manual_seed(0)
    fp32, fp16 = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)), nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    fp16.load_state_dict(fp32.state_dict())
    batches = [batch_of(torch.randn(8, 6, generator=torch.Generator().manual_seed(i)), [0, 1] * 4) for i in range(3)]
    train(fp32, batches, TrainSettings(precision="fp32"))
    trainer = train(fp16, batches, TrainSettings(precision="fp16"))
    assert trainer.scaler.is_enabled() and trainer.state_dict()["scaler"]["scale"] > 1
    for key, value in fp32.state_dict().items():
        torch.testing.assert_close(fp16.state_dict()[key], value, rtol=0, atol=2e-2)


def test_precision_resolution(monkeypatch):
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision(None, torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ConfigError, match="'precision'"):
        resolve_precision("fp8", torch.device("cpu"))


# (name, compute capability, what auto picks): bf16 only where the tensor cores compute in it.
GPUS = [("Tesla V100-SXM2-32GB", (7, 0), "fp16"), ("Tesla T4", (7, 5), "fp16"),
        ("NVIDIA A100-SXM4-80GB", (8, 0), "bf16"), ("NVIDIA H200", (9, 0), "bf16")]


def stub_gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    """A CUDA device of ``capability``, as torch reports it; torch also says bf16 is supported,
    as it does on a V100 (emulated)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)


@pytest.mark.parametrize("name,capability,expected", GPUS)
def test_auto_precision_is_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, capsys, name, capability,
                                                                        expected):
    stub_gpu(monkeypatch, name, capability)
    for requested in ("auto", None):
        assert resolve_precision(requested, torch.device("cuda")) == expected
    assert resolve_precision("fp16", torch.device("cuda")) == "fp16"
    assert capsys.readouterr().out == ""


def test_explicit_bf16_on_a_gpu_without_native_bf16_runs_after_one_warning(monkeypatch, capsys):
    stub_gpu(monkeypatch, "Tesla V100-PCIE-16GB (stub)", (7, 0))
    for _ in range(3):  # every dev scoring resolves the precision again: one warning per process
        assert resolve_precision("bf16", torch.device("cuda:0")) == "bf16"
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["warning: precision bf16 on Tesla V100-PCIE-16GB (stub) (compute capability 7.0) is emulated "
                     "and slow; fp16 (precision auto) uses its tensor cores"]
    stub_gpu(monkeypatch, "NVIDIA H200 (stub)", (9, 0))
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"
    assert capsys.readouterr().out == ""


def test_cudnn_autotuner_whenever_determinism_is_not_requested():
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        seed_everything(0, deterministic=False)
        assert torch.backends.cudnn.benchmark
        seed_everything(0, deterministic=True)
        assert not torch.backends.cudnn.benchmark
        seed_everything(0, deterministic=True, benchmark=True)  # among deterministic kernels
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def test_fp32_reproduces_reference_outputs_with_tf32_off(shared_dir):
    """The parity setting: official AASIST-L weights scored in fp32 (on the GPU when there is
    one) reproduce the reference logits; TF32 is off in fp32 and on in reduced precision."""
    set_tf32("bf16")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    set_tf32("fp32")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    reference = json.loads((shared_dir / "reference/aasist_reference_outputs.json").read_text())
    outputs = np.load(shared_dir / "reference/aasist_reference_outputs.npz")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model({"architecture": "AASIST", **reference["AASIST-L"]["model_config"]}).to(device).eval()
    model.load_state_dict(torch.load(shared_dir / "reference/weights/AASIST-L.pth", weights_only=True,
                                     map_location=device))
    logits = torch_forward(model, device, precision="fp32")(torch.tensor(outputs["inputs"], dtype=torch.float32))
    np.testing.assert_allclose(logits, outputs["AASIST_L_logits"], atol=1e-4)


def inductor_unavailable() -> str | None:
    if sys.platform == "win32":
        return "torch.compile's inductor backend does not run on Windows here"
    if not shutil.which("c++") and not shutil.which("g++"):
        return "torch.compile on CPU needs a C++ compiler (none found)"
    return None


@pytest.mark.skipif(inductor_unavailable() is not None, reason=str(inductor_unavailable()))
def test_compile_gives_the_eager_logits(single_thread):
    """Scoring through torch.compile (inductor) matches eager fp32 within 1e-4 (measured 1e-7).
    Compiling the tiny AASIST takes 10-100 s on a 2-core CPU, the first time most."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL).eval()
    x = 0.1 * torch.randn(3, TINY_MODEL["nb_samp"], generator=torch.Generator().manual_seed(1))
    eager = torch_forward(model, torch.device("cpu"), precision="fp32")(x)
    compiled = torch_forward(model, torch.device("cpu"), precision="fp32", compile_model=True)(x)
    np.testing.assert_allclose(compiled, eager, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiling a training step is checked on a GPU "
                    "(benchmarks/gpu_checks.sh); on this CPU it takes minutes")
def test_compiled_training_steps_match_eager_on_gpu():
    """Three fp32 training steps of a tiny RawNet2 (no dropout), eager and compiled, on the GPU."""
    device = torch.device("cuda")
    set_tf32("fp32")
    torch.manual_seed(0)
    eager, compiled = build_model(TINY_RAWNET2).to(device), build_model(TINY_RAWNET2).to(device)
    compiled.load_state_dict(eager.state_dict())
    batches = tone_batches(3, 8, TINY_RAWNET2["nb_samp"])
    for model, settings in ((eager, TrainSettings()), (compiled, TrainSettings(compile=True))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        trainer = Trainer(TinyTask(model, lambda net, x: net(x)[1]), optimizer,
                          torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), device, settings,
                          SkipReport())
        trainer.run_epoch(batches, "gpu")
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[key], value, rtol=1e-4, atol=1e-4)


def test_loader_gives_each_item_the_same_crop_whatever_the_processes_and_workers(tiny_la):
    """The training loader: one process with no workers, or two ranks with two persistent workers
    each, load the same crop of each trial in an epoch (each rank an equal, disjoint share); a
    loader built afresh at epoch 2, as after --resume, repeats epoch 2; epochs differ."""
    dataset = TrialDataset(la_trials(tiny_la, "train"), 4000, "train")

    def epochs(loader, numbers) -> list[dict[str, np.ndarray]]:
        result = []
        for epoch in numbers:
            loader.sampler.set_epoch(epoch)
            crops = {}
            for batch in loader:
                crops.update({utt: x.numpy() for utt, x in zip(batch.utt_ids, batch.x)})
            result.append(crops)
        return result

    single = epochs(make_loader(dataset, 4, True, 0, seed=3), (1, 2))
    ranks = [epochs(make_loader(dataset, 2, True, 2, seed=3, rank=rank, world_size=2), (1, 2)) for rank in (0, 1)]
    fresh = epochs(make_loader(dataset, 4, True, 0, seed=3), (2,))
    for epoch in (0, 1):
        shares = [ranks[0][epoch], ranks[1][epoch]]
        assert {**shares[0], **shares[1]}.keys() == single[epoch].keys()
        for share in shares:
            assert all(np.array_equal(crop, single[epoch][utt]) for utt, crop in share.items())
    assert fresh[0].keys() == single[1].keys()
    assert all(np.array_equal(crop, single[1][utt]) for utt, crop in fresh[0].items())
    # every clip is longer than the 4000-sample crop: the crops are random, and change every epoch
    assert all(not np.array_equal(single[0][utt], single[1][utt]) for utt in single[0].keys() & single[1].keys())


@pytest.mark.parametrize("overrides,expected", [
    ({"precision": "fp8"}, "config key 'precision': expected one of auto, bf16, fp16, fp32"),
    ({"grad_accum_steps": 0}, "config key 'grad_accum_steps': expected a positive integer"),
    ({"compile": "maybe"}, "config key 'compile'"),
    ({"sync_batchnorm": "yes"}, "config key 'sync_batchnorm'"),
])
def test_training_keys_are_checked(tmp_path, tiny_la, overrides, expected):
    from emospoof.cm.config import load_config
    with pytest.raises(ConfigError, match=expected):
        load_config(make_config(tmp_path, tiny_la, **overrides))


def test_bf16_run_logs_to_tensorboard_and_draws_its_curves(tmp_path, tiny_la, single_thread):
    """main.py --precision bf16 --tensorboard: the report records the precision, the run folder
    holds the training-curve PNG and TensorBoard scalars per step and per epoch."""
    pytest.importorskip("tensorboard", reason="TensorBoard is an optional dependency (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config(tmp_path, tiny_la, num_epochs=2)
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "o"), "--precision", "bf16",
                      "--tensorboard", "--device", "cpu"])
    run_dir = next((tmp_path / "o").iterdir())
    training = json.loads((run_dir / "eval_report.json").read_text())["training"]
    assert training["precision"] == "bf16" and training["world_size"] == 1
    assert json.loads((run_dir / "config.conf").read_text())["precision"] == "bf16"  # kept for --resume
    assert (run_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "epoch/dev_eer", "epoch/train_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("epoch/dev_eer")] == [1, 2]
    assert len(events.Scalars("train/loss")) == 2 * 4  # 16 loadable training files, batch 4, 2 epochs


def test_tensorboard_missing_is_one_line(tmp_path, tiny_la, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    config = make_config(tmp_path, tiny_la, num_epochs=1)
    with pytest.raises(SystemExit) as stopped:
        main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "o"), "--tensorboard",
                          "--device", "cpu"])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --tensorboard needs the tensorboard package (pip install tensorboard)"]

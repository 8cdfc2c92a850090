"""Shared test fixtures and helpers: where ../shared lives, tiny datasets, configs and models,
entry-point runners, a local HTTP server. Test files import helpers from here only."""
from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# One compute thread per test process (and the processes tests start, which inherit this) when
# other work keeps the machine's cores busy: on the 2-core machine shared with a two-thread
# training job, OpenMP regions of two threads waited on each other and the suite took 24.6 min
# (the devkit test 830 s); with one thread it took 10.4 min (218 s). An idle machine keeps them all.
# The README's command runs the suite in parallel (pytest-xdist): its worker processes share the
# cores already, so each one gets a single thread too.
_busy = os.getloadavg()[0] >= 0.5 * (os.cpu_count() or 1)
if "OMP_NUM_THREADS" not in os.environ and (_busy or "PYTEST_XDIST_WORKER" in os.environ):
    os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


RAVDESS = "data/ravdess_a01-12"  # under ../shared


def shared_path() -> Path:
    return Path(os.environ.get("EMOSPOOF_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only reference folder; tests needing it skip in a clone without it."""
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"shared reference folder not found at {path} (set EMOSPOOF_SHARED)")
    return path


@pytest.fixture(scope="session")
def tiny_ser_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised wav2vec 2.0 emotion classifier saved as a Hugging Face
    directory (config, safetensors weights, feature extractor), loaded by path in the tests."""
    from models.encoders.hf_audio import save_random_hf_ser
    return save_random_hf_ser(tmp_path_factory.mktemp("ser") / "tiny_wav2vec2")


@pytest.fixture(scope="session")
def tiny_ssl_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised wav2vec 2.0 encoder (hidden size 32, 2 layers) saved as a
    Hugging Face directory, for the SSL front end's tests."""
    from models.encoders.hf_audio import save_random_ssl
    return save_random_ssl(tmp_path_factory.mktemp("ssl") / "tiny_wav2vec2")


@pytest.fixture(scope="session")
def ravdess_cuts(shared_dir, tmp_path_factory) -> Path:
    """Real RAVDESS speech of actors 1-3, each clip cut to 1.5 s from 0.5 s on (mostly speech)
    under its own name: with 1.5-s crops every clip is the same input in every epoch, so a
    tiny random model learns from it within a few dozen steps."""
    root = tmp_path_factory.mktemp("ravdess_cuts")
    for actor in (1, 2, 3):
        for path in sorted((shared_dir / RAVDESS / f"Actor_{actor:02d}").glob("*.flac")):
            audio, rate = sf.read(path, dtype="float32")
            (root / path.parent.name).mkdir(exist_ok=True)
            sf.write(root / path.parent.name / path.name, audio[rate // 2:2 * rate], rate)
    return root


@pytest.fixture(scope="session")
def egemaps_cache(shared_dir, tmp_path_factory) -> Path:
    """The eGeMAPS feature cache of the RAVDESS clips that the shipped eGeMAPS configs use (actors
    1-12, five TTS emotions: 528 clips), filled once per test run. Extraction is the slow part
    (about 50 s); the cache lies in the run's temporary folder that every xdist worker shares, and
    the first worker to need it extracts while the others wait for it, where each used to extract
    the same clips again. The cache is keyed by file size and modification time."""
    from filelock import FileLock

    from data_utils import SkipReport
    from emospoof.ser.egemaps import egemaps_features
    from emospoof.ser.ravdess import make_splits, read_ravdess

    root = tmp_path_factory.getbasetemp()
    root = root.parent if "PYTEST_XDIST_WORKER" in os.environ else root  # the parent of every popen-gwN
    cache = root / "egemaps_features.csv"
    with FileLock(str(root / "egemaps_features.lock")):
        if not cache.is_file():
            config = {**json.loads((REPO / "config/SER_egemaps_linear.conf").read_text()),
                      "database_path": str(shared_dir / RAVDESS)}
            splits = make_splits(read_ravdess(config["database_path"]), config, seed=0)
            egemaps_features([t for trials in splits.values() for t in trials], cache, SkipReport())
    return cache


@pytest.fixture
def single_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster
    than two that contend with other processes (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stop_after_first_checkpoint(monkeypatch, entry, args: list) -> None:
    """Run ``entry(args)`` (a ``main()`` of main.py or train_ser.py) and stop it as a kill would
    (KeyboardInterrupt) right after its first checkpoint is written, so it can be resumed."""
    from emospoof.training import engine

    real_save = engine.save_checkpoint

    def save_then_stop(state, run_dir):
        real_save(state, run_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        entry(args)
    monkeypatch.setattr(engine, "save_checkpoint", real_save)


def run_script(script: str, *args, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run one of the project's entry points (e.g. ``main.py``) in a fresh interpreter. That costs
    about 3 s of CPU where the script imports torch (main.py; evaluation.py, which does not, about
    0.3 s): keep it for what only a process shows (its exit code through ``if __name__ ==
    "__main__"``, a traceback, environment variables); ``run_main`` runs ``main(argv)`` in this
    process for what a command computes, prints or writes."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture
def run_main(capsys, monkeypatch, single_thread):
    """``run_main(entry.main, *args)`` runs an entry point's ``main(argv)`` in this process as
    ``run_script`` runs the script in a fresh interpreter, without the imports: from the repository
    folder, with the script in ``sys.argv[0]`` (argparse names it in usage and errors) and the help
    width of output to a pipe (80 columns). Returns a ``subprocess.CompletedProcess`` with the exit
    code (main's return value, as ``sys.exit(main())`` makes it, or the code of the SystemExit it
    raises; 0 for None) and what it printed to stdout and stderr (tqdm's bars go to stderr,
    ``tqdm.write`` to stdout). Any other exception propagates: a process would print its traceback
    and exit with code 1.

    What a run changes for the whole process is put back after the test: the working folder,
    ``sys.argv`` and the environment (monkeypatch), torch's thread count (``single_thread``: one
    thread meanwhile), the cuDNN and TF32 switches (``seed_everything``, ``set_tf32``) and the
    torch, numpy and ``random`` generators (a run seeds them)."""
    import random

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("COLUMNS", "80")
    switches = [(torch.backends.cudnn, "deterministic"), (torch.backends.cudnn, "benchmark"),
                (torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]
    before = [getattr(owner, name) for owner, name in switches]
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()

    def run(main, *args) -> subprocess.CompletedProcess:
        argv = [str(arg) for arg in args]
        monkeypatch.setattr(sys, "argv", [str(REPO / f"{main.__module__.replace('.', '/')}.py"), *argv])
        capsys.readouterr()  # what the test printed before is not the command's
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        if isinstance(code, str):  # sys.exit("message"): the message on stderr, exit code 1
            err, code = err + code + "\n", 1
        return subprocess.CompletedProcess(list(sys.argv), code or 0, out, err)

    yield run
    for (owner, name), value in zip(switches, before):
        setattr(owner, name, value)
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


def devkit_half_train(shared_dir: Path, root: Path, with_eval: bool = True) -> Path:
    """The devkit's LA layout with every other training trial (236 of 472: 76 bona fide, 160
    spoof) and the rest linked as it is (the eval split left out unless ``with_eval``): with
    batches of 8 a learning test keeps the 29 steps of an epoch at half their cost."""
    devkit = shared_dir / "data/devkit/LA"
    splits = ["train", "dev", "eval"] if with_eval else ["train", "dev"]
    root.mkdir()
    for name in [f"ASVspoof2019_LA_{split}" for split in splits] + ["ASVspoof2019_LA_asv_scores"]:
        (root / name).symlink_to(devkit / name)
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir()
    for name in sorted((devkit / "ASVspoof2019_LA_cm_protocols").iterdir()):
        if ".train." in name.name:
            (protocols / name.name).write_text("\n".join(name.read_text().splitlines()[::2]) + "\n")
        elif any(f".{split}." in name.name for split in splits):
            (protocols / name.name).symlink_to(name)
    return root


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def safetensors_weights(path: Path) -> dict:
    """The tensors of ``path``, which must be a safetensors file: ``safetensors.torch.load_file``
    reads it and ``torch.load(weights_only=True)`` cannot read it as a pickle (given the bytes: by
    name, torch.load hands any ``*.safetensors`` file to safetensors itself)."""
    import io

    from safetensors.torch import load_file

    tensors = load_file(path)
    with pytest.raises(Exception):
        torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    return tensors


# ---------------------------------------------------------------------------------------------
# A tiny LA-layout dataset and countermeasure config

# A small AASIST for 0.5-s windows (main.py and inference.py tests).
TINY_MODEL = {
    "architecture": "AASIST", "nb_samp": 8000, "first_conv": 32,
    "filts": [20, [1, 8], [8, 8], [8, 16], [16, 16]], "gat_dims": [16, 16],
    "pool_ratios": [0.5, 0.7, 0.5, 0.5], "temperatures": [2.0, 2.0, 100.0, 100.0],
}
# A tiny RawNet2: BatchNorm and no dropout, so two set-ups can be compared step for step.
TINY_RAWNET2 = {
    "architecture": "RawNet2Spoof", "nb_samp": 8000, "first_conv": 128, "in_channels": 1,
    "filts": [20, [20, 20], [20, 32], [32, 32]], "blocks": [2, 4], "nb_fc_node": 32, "gru_node": 32,
    "nb_gru_layer": 1, "nb_classes": 2,
}
# The AASIST keys of the tiny emotion-conditioned models (0.25-s windows).
TINY_AASIST = {
    "nb_samp": 4000, "first_conv": 32, "filts": [20, [1, 4], [4, 4], [4, 8], [8, 8]], "gat_dims": [8, 8],
    "pool_ratios": [0.5, 0.7, 0.5, 0.5], "temperatures": [2.0, 2.0, 100.0, 100.0],
}


def write_split(root, split, prefix, n_per_class, rng, corrupt=False):
    audio_dir = root / f"ASVspoof2019_LA_{split}" / "flac"
    audio_dir.mkdir(parents=True)
    lines = []
    for i in range(2 * n_per_class):
        bonafide = i % 2 == 0
        utt = f"LA_{prefix}_{i:07d}"
        t = np.arange(int(rng.uniform(0.3, 0.6) * 16000)) / 16000
        # Learnable: bona fide = low harmonic tone, spoof = high tone; both with noise.
        freq = rng.uniform(150, 300) if bonafide else rng.uniform(2500, 4000)
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(audio_dir / f"{utt}.flac", wave.astype(np.float32), 16000)
        lines.append(f"SPK{i % 3} {utt} - {'-' if bonafide else 'A0' + str(1 + i // 2 % 2)} "
                     f"{'bonafide' if bonafide else 'spoof'}")
    if corrupt:
        (audio_dir / f"LA_{prefix}_9999999.flac").write_bytes(b"corrupt")
        lines.append(f"SPK0 LA_{prefix}_9999999 - A01 spoof")
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(exist_ok=True)
    name = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}[split]
    (protocols / f"ASVspoof2019.LA.cm.{name}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def tiny_la(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "LA"
    write_split(root, "train", "T", 8, rng, corrupt=True)
    write_split(root, "dev", "D", 4, rng)
    write_split(root, "eval", "E", 4, rng)
    return root


def make_config(tmp_path, database, name="tiny.conf", **overrides):
    config = {
        "database_path": str(database), "model_path": str(tmp_path / "none.pth"),
        "batch_size": 4, "num_epochs": 2, "loss": "CCE", "track": "LA",
        "eval_all_best": "False", "eval_output": "eval_scores.txt",
        "cudnn_deterministic_toggle": "True", "cudnn_benchmark_toggle": "False", "num_workers": 0,
        "model_config": dict(TINY_MODEL),
        "optim_config": {"optimizer": "adam", "amsgrad": "False", "base_lr": 0.001, "lr_min": 0.00005,
                         "betas": [0.9, 0.999], "weight_decay": 0.0001, "scheduler": "cosine"},
    }
    config.update(overrides)
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


# ---------------------------------------------------------------------------------------------
# A local HTTP server for the download tests


class FileServer:
    """In-memory files over HTTP with Range support and injectable faults."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)
        self.ignore_range: set[str] = set()
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                requested = self.headers.get("Range")
                if requested and self.path not in server.ignore_range:
                    start = int(requested.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = server.cut_after.pop(self.path, None)
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def ranges(self, path: str) -> list[str | None]:
        return [headers.get("Range") for p, headers in self.requests if p == path]


@pytest.fixture
def server(monkeypatch):
    from emospoof.downloads import http

    monkeypatch.setattr(http, "RETRY_DELAY_S", 0.0)
    files = FileServer()
    files.thread.start()
    yield files
    files.httpd.shutdown()
    files.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# fairseq naming of wav2vec 2.0 parameters (to write checkpoints in fairseq's layout)


def fairseq_name(name: str, layer_norm_extractor: bool) -> str:
    """transformers Wav2Vec2Model parameter name -> the name fairseq's Wav2Vec2Model gives it."""
    conv = re.match(r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(\w+)$", name)
    if conv:
        index, part, leaf = conv.groups()
        position = "0" if part == "conv" else ("2.1" if layer_norm_extractor else "2")
        return f"feature_extractor.conv_layers.{index}.{position}.{leaf}"
    fixed = {
        "masked_spec_embed": "mask_emb",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v",
        "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv.0.bias",
    }
    if name in fixed:
        return fixed[name]
    name = name.replace("feature_projection.layer_norm.", "layer_norm.")
    name = name.replace("feature_projection.projection.", "post_extract_proj.")
    name = re.sub(r"(encoder\.layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm.", name)
    name = name.replace(".attention.", ".self_attn.")
    name = name.replace(".feed_forward.intermediate_dense.", ".fc1.")
    return name.replace(".feed_forward.output_dense.", ".fc2.")



# ---------------------------------------------------------------------------------------------
# Learning checks


def tone_batch(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 (bona fide) a low tone, class 0 a high tone, both in white noise (0.25 s)."""
    labels = np.arange(n) % 2
    freqs = np.where(labels == 1, rng.uniform(200, 500, n), rng.uniform(3000, 5000, n))
    t = np.arange(4000) / 16000
    wave = rng.uniform(0.3, 1.0, (n, 1)) * np.sin(2 * np.pi * freqs[:, None] * t + rng.uniform(0, 6, (n, 1)))
    return torch.tensor(wave + 0.3 * rng.standard_normal((n, 4000)), dtype=torch.float32), torch.tensor(labels)


def assert_learns(model, make_batch, steps: int, lr: float, n_test: int) -> None:
    """Adam on fresh batches from ``make_batch(n, rng)`` must halve the loss and, in eval mode,
    rank every held-out bona fide clip above every spoof clip by logit 1 - logit 0."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x_test, y_test = make_batch(n_test, rng)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        x, y = make_batch(8, rng)
        loss = F.cross_entropy(model(x)[1], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    model.eval()
    with torch.no_grad():
        logits = model(x_test)[1]
    scores = logits[:, 1] - logits[:, 0]
    assert scores[y_test == 1].min() > scores[y_test == 0].max(), scores


# ---------------------------------------------------------------------------------------------
# Devkit subsets


def small_devkit(shared_dir, root, train: int = 8, test: int = 6, spoof_per_attack: int = 2):
    """A few devkit trials in the LA layout (protocol subsets, audio and ASV scores linked): ``train``
    bona fide and as many spoof train trials, ``test`` bona fide dev and eval trials and
    ``spoof_per_attack`` spoofs of each attack."""
    devkit = shared_dir / "data/devkit/LA"
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True)
    (root / "ASVspoof2019_LA_asv_scores").symlink_to(devkit / "ASVspoof2019_LA_asv_scores")
    for split, name, keep in (("train", "train.trn", train), ("dev", "dev.trl", test), ("eval", "eval.trl", test)):
        (root / f"ASVspoof2019_LA_{split}").mkdir()
        (root / f"ASVspoof2019_LA_{split}" / "flac").symlink_to(devkit / f"ASVspoof2019_LA_{split}" / "flac")
        lines = (devkit / f"ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{name}.txt").read_text().splitlines()
        bonafide = [line for line in lines if line.endswith("bonafide")][:keep]
        by_attack = {}
        for line in lines:
            if line.endswith("spoof") and len(by_attack.setdefault(line.split()[3], [])) < spoof_per_attack:
                by_attack[line.split()[3]].append(line)
        spoof = [line for group in by_attack.values() for line in group][:keep if split == "train" else None]
        (protocols / f"ASVspoof2019.LA.cm.{name}.txt").write_text("\n".join(bonafide + spoof) + "\n")
    return root


DEVKIT_EVAL_ATTACKS = {"T01", "T03", "T06", "V01", "V03", "V04"}


def train_then_evaluate_again(config_path: Path, tmp_path: Path) -> tuple[Path, dict]:
    """main.py trains ``config_path`` (a devkit LA layout and DSES), metrics.csv has a row per
    epoch, the report covers LA eval's attacks and DSES's emotions, and ``--eval`` of the final
    weights gives the same LA eval EER. Returns the run folder and its report.

    The ``--eval`` run scores LA eval alone: the EER compared is LA eval's, and scoring the
    emotional set a second time would prove nothing more."""
    import main as main_module

    main_module.main(["--config", str(config_path), "--output_dir", str(tmp_path / "runs")])
    run_dir = next((tmp_path / "runs").iterdir())
    config = json.loads(config_path.read_text())
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + config["num_epochs"]
    report = json.loads((run_dir / "eval_report.json").read_text())
    assert set(report["la_eval"]["per_attack"]) == DEVKIT_EVAL_ATTACKS
    assert set(report["emotional_set"]["per_emotion"]) == {"angry", "happy", "neutral", "sad", "surprised"}
    la_only = config_path.with_name(f"{config_path.stem}_la_eval.conf")
    la_only.write_text(json.dumps({key: value for key, value in config.items()
                                   if key not in ("emo_dataset", "emo_bonafide_system")}))
    main_module.main(["--config", str(la_only), "--eval", "--eval_model_weights", str(run_dir / "weights/final.safetensors"),
                      "--output_dir", str(tmp_path / "eval"), "--comment", "again"])
    again = json.loads(next((tmp_path / "eval").iterdir()).joinpath("eval_report.json").read_text())
    assert again["la_eval"]["eer"] == pytest.approx(report["la_eval"]["eer"])
    return run_dir, report


def assert_learned_below_chance(run_dir: Path, report: dict, loss_ratio: float) -> str:
    """The devkit run in ``run_dir`` learned: the last epoch's training loss is below
    ``loss_ratio`` of the first; the dev EER of the model main.py selected is below 35 % with its
    95 % bootstrap interval below 50 % (40 bona fide and 90 spoof dev trials: a random scorer's EER
    varies from about 38 to 62 %, its interval spans about 40 to 60 %); the LA eval EER, never
    used for selection and with the unseen attack V04, is below 45 %. Returns the figures."""
    from emospoof.metrics.asvspoof2019 import compute_eer, eer_bootstrap_ci
    from emospoof.metrics.score_files import read_cm_scores

    losses = [float(row["train_loss"]) for row in csv.DictReader(open(run_dir / "metrics.csv"))]
    dev = read_cm_scores(run_dir / "dev_scores.txt")
    bonafide, spoof = dev.scores[dev.keys == "bonafide"], dev.scores[dev.keys == "spoof"]
    eer = 100 * compute_eer(bonafide, spoof)[0]
    low, high = eer_bootstrap_ci(bonafide, spoof)
    figures = (f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, dev EER {eer:.1f} % [{low:.1f}, {high:.1f}], "
               f"LA eval EER {report['la_eval']['eer']:.1f} %")
    assert losses[-1] < loss_ratio * losses[0], figures
    assert eer < 35 and high < 50, figures
    assert report["la_eval"]["eer"] < 45, figures
    return figures


def assert_inference_paths_agree(config_path: Path, weights: Path, folder: Path, tmp_path: Path,
                                 onnx: bool = True) -> list[float]:
    """inference.py scores ``folder`` the same (to 1e-4) on the optimised CPU path, eagerly and,
    with ``onnx``, through an ONNX export of ``weights``. Returns the eager scores."""
    import inference

    common = ["--config", str(config_path), "--test_dir", str(folder), "--num_workers", "0", "--no_progress"]
    paths = {"optimised": ["--weights", str(weights)], "eager": ["--weights", str(weights), "--eager"]}
    if onnx:
        onnx_path = tmp_path / "model.onnx"
        assert inference.main(["--config", str(config_path), "--weights", str(weights), "--export-onnx",
                               str(onnx_path)]) == 0
        paths["onnx"] = ["--onnx", str(onnx_path)]
    scores = {}
    for name, extra in paths.items():
        output = tmp_path / f"{name}.tsv"
        assert inference.main([*common, "--output_file", str(output), *extra]) == 0
        scores[name] = [float(row["score"]) for row in csv.DictReader(open(output), delimiter="\t")]
    for name in scores:
        np.testing.assert_allclose(scores[name], scores["eager"], atol=1e-4, err_msg=name)
    return scores["eager"]

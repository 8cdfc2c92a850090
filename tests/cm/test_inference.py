"""inference.py: folder scoring on real and broken audio, the optimised CPU path, ONNX, weights
download on first use, thresholds."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import inference
from data_utils import load_audio, sliding_windows
from emospoof.cm.config import load_config
from emospoof.core.checkpoint import load_weights
from emospoof.downloads import registry
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.scoring.windows import threaded_cpu_forward
from models import build_model
from models.layers.blocks import ResidualBlock
from models.layers.fused import FusedResidualBlock, optimise_for_cpu
from tests.conftest import REPO, TINY_MODEL


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The optimised path sets torch to one thread per process; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def read_tsv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def file_scores(path) -> dict[str, float]:
    return {row["path"]: float(row["score"]) for row in read_tsv(path)}


def speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise-excited harmonics with a syllable-rate envelope: not silent, not a pure tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(100, 220)
    voiced = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * envelope * voiced + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The official weights on real audio


@pytest.fixture(scope="module")
def official(shared_dir):
    """AASIST with the official weights, the example files' windows and their eager scores."""
    config = load_config(REPO / "config/AASIST.conf")
    model = build_model(config["model_config"])
    load_weights(model, shared_dir / "reference/weights/AASIST.pth", torch.device("cpu"))
    model.eval()
    examples = shared_dir / "examples"
    labels = {row["file"]: row["key"] for row in read_tsv(examples / "labels.tsv")}
    windows = {name: torch.from_numpy(sliding_windows(load_audio(examples / name), 64600, 32300))
               for name in sorted(labels)}
    with torch.inference_mode():
        logits = model(torch.cat(list(windows.values())))[1].numpy()
    window_scores = np.split(logits[:, 1] - logits[:, 0], np.cumsum([len(w) for w in windows.values()])[:-1])
    return {"model": model, "labels": labels, "windows": windows, "examples": examples,
            "eager": dict(zip(windows, window_scores))}


def test_optimised_cpu_path_equals_eager_on_the_official_weights(official):
    fast = optimise_for_cpu(official["model"])
    assert sum(isinstance(m, FusedResidualBlock) for m in fast.modules()) == 6
    forward = threaded_cpu_forward(fast, threads=2)
    logits = forward(torch.cat(list(official["windows"].values())))
    eager = np.concatenate(list(official["eager"].values()))
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], eager, atol=1e-4)
    means = {name: s.mean() for name, s in official["eager"].items()}
    bonafide = [means[n] for n, key in official["labels"].items() if key == "bonafide"]
    spoof = [means[n] for n, key in official["labels"].items() if key == "spoof"]
    assert min(bonafide) > max(spoof)


def test_onnx_export_and_onnx_scoring_match_pytorch(official, shared_dir, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    onnx_file = tmp_path / "AASIST.onnx"
    weights = ["--config", str(REPO / "config/AASIST.conf"),
               "--weights", str(shared_dir / "reference/weights/AASIST.pth")]
    assert inference.main(weights + ["--export-onnx", str(onnx_file)]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    out = tmp_path / "onnx_scores.tsv"
    code = inference.main(weights + ["--onnx", str(onnx_file), "--test_dir", str(official["examples"]),
                                     "--output_file", str(out), "--num_workers", "0", "--no_progress"])
    assert code == 0
    scores = file_scores(out)
    assert sorted(scores) == sorted(official["labels"])
    for name, window_scores in official["eager"].items():
        assert scores[name] == pytest.approx(window_scores.mean(), abs=1e-4)


def write_edge_cases(folder, examples) -> dict[str, str]:
    """The examples (one under a folder name with spaces and accents) plus generated edge cases;
    returns the files that must fail, with a word their reason must contain."""
    nested = folder / "sub dir" / "ñandú é"
    nested.mkdir(parents=True)
    for name in ("ex2.flac", "ex3.flac", "ex4.flac"):
        shutil.copy(examples / name, folder / name)
    shutil.copy(examples / "ex1.flac", nested / "ex1 copy.flac")
    speech = load_audio(examples / "ex1.flac")
    low = soxr.resample(speech, 16000, 8000)
    sf.write(folder / "phone 8k stereo.wav", np.stack([low, 0.5 * low], axis=1), 8000)
    sf.write(folder / "short.flac", speech[:3200], 16000)  # 0.2 s
    sf.write(folder / "long.flac", np.tile(speech, 40 * 16000 // len(speech) + 1)[:40 * 16000], 16000)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.flac").write_bytes(np.random.default_rng(0).bytes(5000))
    sf.write(folder / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    whole = (examples / "ex2.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(whole[:len(whole) // 2])
    (folder / "notes.txt").write_text("not audio: ignored")
    return {"empty.wav": "empty", "garbage.flac": "unreadable", "silent.wav": "silent",
            "truncated.flac": "unreadable"}


def test_folder_of_real_and_broken_files_with_official_weights(shared_dir, tmp_path, capsys):
    folder = tmp_path / "recordings"
    bad = write_edge_cases(folder, shared_dir / "examples")
    out = tmp_path / "scores.tsv"
    code = inference.main([
        "--config", str(REPO / "config/AASIST-L.conf"), "--weights", str(shared_dir / "reference/weights/AASIST-L.pth"),
        "--test_dir", str(folder), "--output_file", str(out), "--batch_size", "4", "--hop", "64600",
        "--num_workers", "1", "--no_progress"])
    printed = capsys.readouterr().out
    assert code == 1  # some files failed
    rows = read_tsv(out)
    assert list(rows[0]) == ["path", "score", "p_bonafide", "decision", "duration_s"]
    paths = [row["path"] for row in rows]
    assert paths == sorted(paths) == ["ex2.flac", "ex3.flac", "ex4.flac", "long.flac", "phone 8k stereo.wav",
                                      "short.flac", "sub dir/ñandú é/ex1 copy.flac"]
    by_path = {row["path"]: row for row in rows}
    assert float(by_path["long.flac"]["duration_s"]) == pytest.approx(40.0)
    assert float(by_path["short.flac"]["duration_s"]) == pytest.approx(0.2)
    assert float(by_path["phone 8k stereo.wav"]["duration_s"]) == pytest.approx(1.765, abs=0.01)
    for row in rows:
        assert float(row["p_bonafide"]) == pytest.approx(1 / (1 + np.exp(-float(row["score"]))), abs=1e-6)
        assert row["decision"] == ("bonafide" if float(row["score"]) > 0 else "spoof")
    bonafide = [float(by_path[p]["score"]) for p in ("sub dir/ñandú é/ex1 copy.flac", "ex2.flac")]
    spoof = [float(by_path[p]["score"]) for p in ("ex3.flac", "ex4.flac")]
    assert min(bonafide) > max(spoof)
    errors = read_tsv(tmp_path / "scores.errors.tsv")
    assert {row["path"] for row in errors} == set(bad)
    for row in errors:
        assert bad[row["path"]] in row["reason"]
        assert sum(row["path"] in line and "warning" in line for line in printed.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Batching, aggregation, output formats (tiny random model: fast)


@pytest.fixture
def tiny(tmp_path):
    """A tiny AASIST with random weights saved as a state dict, its config, and a folder of clips."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, so folding them matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    weights = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), weights)
    config = tmp_path / "tiny.conf"
    config.write_text(json.dumps({
        "database_path": "unused", "model_path": str(weights), "batch_size": 3, "num_epochs": 1,
        "model_config": TINY_MODEL, "optim_config": {"base_lr": 1e-3}, "num_workers": 0}))
    folder = tmp_path / "clips"
    folder.mkdir()
    lengths = {"a.wav": 0.3, "b.flac": 1.7, "c.flac": 0.5, "d/e.wav": 2.2, "d/f.ogg": 0.9}
    for index, (name, seconds) in enumerate(lengths.items()):
        (folder / name).parent.mkdir(exist_ok=True)
        sf.write(folder / name, speech_like(seconds, 16000, index), 16000)
    return {"model": model, "config": config, "weights": weights, "folder": folder, "names": sorted(lengths)}


def run_tiny(tiny, tmp_path, *extra: str, name: str = "scores.tsv") -> tuple[int, object]:
    out = tmp_path / name
    code = inference.main(["--config", str(tiny["config"]), "--test_dir", str(tiny["folder"]),
                           "--output_file", str(out), "--no_progress", *extra])
    return code, out


def test_file_scores_are_window_averages_whatever_the_batching(tiny, tmp_path):
    expected = {}
    with torch.inference_mode():
        for name in tiny["names"]:
            windows = torch.from_numpy(sliding_windows(load_audio(tiny["folder"] / name), 8000, 4000))
            logits = tiny["model"](windows)[1]
            expected[name] = (logits[:, 1] - logits[:, 0]).numpy()
    for batch_size in ("1", "4", "64"):
        code, out = run_tiny(tiny, tmp_path, "--batch_size", batch_size, name=f"s{batch_size}.tsv")
        assert code == 0
        scores = file_scores(out)
        assert list(scores) == tiny["names"]
        for name, windows in expected.items():
            assert scores[name] == pytest.approx(windows.mean(), abs=1e-4)
    code, out = run_tiny(tiny, tmp_path, "--aggregate", "min", "--eager", "--window_scores",
                         str(tmp_path / "windows.tsv"), name="min.tsv")
    assert code == 0
    for name, windows in expected.items():
        assert file_scores(out)[name] == pytest.approx(windows.min(), abs=1e-4)
    rows = read_tsv(tmp_path / "windows.tsv")
    assert len(rows) == sum(len(w) for w in expected.values())
    long_file = [row for row in rows if row["path"] == "d/e.wav"]  # 2.2 s = 35200 samples
    assert [float(r["start_s"]) for r in long_file] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.7]
    assert float(long_file[-1]["end_s"]) == pytest.approx(2.2)


def test_json_lines_and_determinism(tiny, tmp_path):
    _, first = run_tiny(tiny, tmp_path, "--format", "json", name="a.jsonl")
    _, second = run_tiny(tiny, tmp_path, "--format", "json", name="b.jsonl")
    assert first.read_bytes() == second.read_bytes()
    records = [json.loads(line) for line in first.read_text().splitlines()]
    assert [r["path"] for r in records] == tiny["names"]
    assert set(records[0]) == {"path", "score", "p_bonafide", "decision", "duration_s"}


def test_calibrated_threshold_is_stored_with_the_weights_and_reused(tiny, tmp_path, capsys):
    labels = tmp_path / "labels.tsv"
    keys = dict(zip(tiny["names"], ["bonafide", "spoof", "bonafide", "spoof", "spoof"]))
    labels.write_text("file\tkey\n" + "".join(f"{n}\t{k}\n" for n, k in keys.items()))
    code, out = run_tiny(tiny, tmp_path, "--calibrate", str(labels))
    assert code == 0
    scores = file_scores(out)
    stored = json.loads((tmp_path / "tiny.pth.threshold.json").read_text())
    _, threshold = compute_eer([scores[n] for n, k in keys.items() if k == "bonafide"],
                               [scores[n] for n, k in keys.items() if k == "spoof"])
    assert stored["threshold"] == pytest.approx(threshold, abs=1e-6)
    capsys.readouterr()
    code, out = run_tiny(tiny, tmp_path, name="again.tsv")  # no flag: the stored threshold applies
    assert "tiny.pth.threshold.json" in capsys.readouterr().out
    decisions = {row["path"]: row["decision"] for row in read_tsv(out)}
    assert decisions == {n: "bonafide" if s > stored["threshold"] else "spoof" for n, s in scores.items()}
    _, out = run_tiny(tiny, tmp_path, "--threshold", str(max(scores.values())), name="strict.tsv")
    assert {row["decision"] for row in read_tsv(out)} == {"spoof"}


def test_calibration_labels_that_are_not_utf8_are_one_line_naming_the_file_and_line(tiny, tmp_path, capsys):
    labels = tmp_path / "labels.tsv"
    names = tiny["names"]
    labels.write_bytes(f"file\tkey\n{names[0]}\tbonafide\n".encode() + "caf\xe9.wav\tspoof\n".encode("latin-1"))
    code, out = run_tiny(tiny, tmp_path, "--calibrate", str(labels))
    assert code == 2 and not out.exists()  # stopped before scoring
    assert capsys.readouterr().err.splitlines() == [f"error: {labels}:3: not UTF-8 text"]
    # A byte-order mark (as some editors write) is not part of the header.
    labels.write_bytes(b"\xef\xbb\xbf" + "".join(f"{n}\t{k}\n" for n, k in [
        ("file", "key"), (names[0], "bonafide"), (names[1], "spoof")]).encode())
    code, _ = run_tiny(tiny, tmp_path, "--calibrate", str(labels))
    assert code == 0


# ---------------------------------------------------------------------------------------------
# The fused block itself


@pytest.mark.parametrize("channels,pool,length", [
    ((1, 8), (1, 3), 301), ((8, 8), (1, 3), 300), ((8, 16), (1, 3), 299), ((8, 8), None, 50)])
def test_fused_block_equals_the_residual_block(channels, pool, length):
    torch.manual_seed(1)
    block = ResidualBlock(list(channels), first=channels[0] == 1, pool=pool).eval()
    with torch.no_grad():
        block.bn2.running_mean.uniform_(-1, 1)
        block.bn2.running_var.uniform_(0.3, 3)
        block.bn2.weight.uniform_(0.5, 1.5)
        block.bn2.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, channels[0], 7, length)
    # A tiny chunk budget forces many chunks, so every halo and edge case is exercised.
    fused = FusedResidualBlock(block, chunk_bytes=4 * channels[1] * 8 * 12)
    with torch.inference_mode():
        np.testing.assert_allclose(fused(x).numpy(), block(x).numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Start-up problems and the weights download


@pytest.mark.parametrize("problem", ["missing dir", "no audio", "missing weights", "garbage weights"])
def test_start_up_problems_are_one_line_and_exit_2(tiny, tmp_path, capsys, problem):
    folder, weights = tiny["folder"], tiny["weights"]
    if problem == "missing dir":
        folder = tmp_path / "nowhere"
    elif problem == "no audio":
        folder = tmp_path / "only text"
        folder.mkdir()
        (folder / "readme.txt").write_text("hello")
    elif problem == "missing weights":
        weights = tmp_path / "absent.pth"
    else:
        weights.write_bytes(b"\x00not a state dict")
    code = inference.main(["--config", str(tiny["config"]), "--test_dir", str(folder),
                           "--weights", str(weights), "--output_file", str(tmp_path / "s.tsv"), "--no_progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert str(folder if "dir" in problem or "audio" in problem else weights) in err


def test_offline_run_names_the_download_command(tiny, tmp_path, capsys):
    weights = tmp_path / "models/weights/AASIST.pth"
    code = inference.main(["--config", str(REPO / "config/AASIST.conf"), "--test_dir", str(tiny["folder"]),
                           "--weights", str(weights), "--offline", "--no_progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"python download_weights.py --model AASIST --output_dir {weights.parent}" in err
    assert not weights.exists()


def test_missing_official_weights_are_downloaded_on_first_run(server, shared_dir, tiny, tmp_path,
                                                              monkeypatch, capsys):
    official = (shared_dir / "reference/weights/AASIST-L.pth").read_bytes()
    server.files["/AASIST-L.pth"] = official
    entry = dataclasses.replace(registry.REGISTRY["AASIST-L"], url=server.url("/AASIST-L.pth"))
    monkeypatch.setitem(registry.REGISTRY, "AASIST-L", entry)
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(tiny["folder"] / "a.wav", folder / "a.wav")
    weights = tmp_path / "models/weights/AASIST-L.pth"
    code = inference.main(["--config", str(REPO / "config/AASIST-L.conf"), "--test_dir", str(folder),
                           "--weights", str(weights), "--output_file", str(tmp_path / "s.tsv"),
                           "--num_workers", "0", "--no_progress"])
    assert code == 0
    assert "downloading the official AASIST-L weights" in capsys.readouterr().out
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == entry.sha256
    assert list(file_scores(tmp_path / "s.tsv")) == ["a.wav"]


# ---------------------------------------------------------------------------------------------
# --run: a training run's config, weights, windows, preprocessing and dev threshold


@pytest.mark.parametrize("eval_mode", ["first", "full"])
def test_run_applies_the_runs_dev_threshold_and_decides_as_main_eval(tmp_path, tiny_la, eval_mode):
    """A run trained by main.py scores a folder through inference.py --run exactly as its own
    evaluation scored the same files: the same scores (within the optimised CPU path's 1e-4), the
    run's dev EER threshold, and so the same decisions; trimmed and normalised in both when the
    config says so."""
    from main import main as main_entry
    from tests.conftest import make_config

    folder = tmp_path / "mine"
    audio = tiny_la / "ASVspoof2019_LA_eval" / "flac"
    protocol = (tiny_la / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt").read_text().split("\n")
    rows = ["path\tkey"]
    for line in filter(None, protocol):
        _, utt, _, _, key = line.split()
        (folder / key).mkdir(parents=True, exist_ok=True)
        shutil.copy(audio / f"{utt}.flac", folder / key / f"{utt}.flac")
        rows.append(f"{key}/{utt}.flac\t{key}")
    (folder / "protocol.tsv").write_text("\n".join(rows) + "\n")
    config = make_config(tmp_path, tiny_la, num_epochs=1, eval_mode=eval_mode, eval_hop=4000,
                         preprocess="trim_normalise",
                         eval_datasets=[{"name": "mine", "format": "protocol_tsv", "path": str(folder / "protocol.tsv")}])
    main_entry(["--config", str(config), "--output_dir", str(tmp_path / "runs")])
    run = next((tmp_path / "runs").iterdir())
    report = json.loads((run / "eval_report.json").read_text())["datasets"]["mine"]
    threshold = report["operating_points"]["fixed"]["threshold"]
    main_scores = {f"{utt}.flac": score for utt, score in
                   (line.split()[0::3] for line in open(report["score_file"]).read().splitlines())}
    out = tmp_path / "inference.tsv"
    assert inference.main(["--run", str(run), "--test_dir", str(folder), "--output_file", str(out),
                           "--no_progress", "--threads", "1"]) == 0
    rows = read_tsv(out)
    assert len(rows) == len(main_scores) == 8
    for row in rows:
        main_score = float(main_scores[row["path"]])
        assert float(row["score"]) == pytest.approx(main_score, abs=1e-4)
        if abs(main_score - threshold) > 1e-3:
            assert row["decision"] == ("bonafide" if main_score > threshold else "spoof"), row
    assert {row["decision"] for row in rows} <= {"bonafide", "spoof"}
    with pytest.raises(SystemExit):  # the run brings its own config
        inference.parse_args(["--run", str(run), "--config", str(config), "--test_dir", str(folder)])

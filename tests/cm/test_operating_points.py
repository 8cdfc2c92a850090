"""main.py --eval at one threshold: genuine-speech sets in RAVDESS's names (as recorded and
trimmed-and-normalised) reported at the dev threshold, the printed table, and report.html."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import main as main_module
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.score_files import read_cm_scores
from models import build_model
from tests.conftest import REPO, TINY_MODEL, make_config, write_lines

pytestmark = pytest.mark.usefixtures("single_thread")
CODES = {1: "neutral", 2: "calm", 3: "happy", 5: "angry"}


def write_ravdess(root, rng) -> None:
    """RAVDESS-named genuine recordings of actors 11 and 12 with a second of silence around each,
    as RAVDESS records them; a song and a foreign name that must be left out."""
    for actor in (11, 12):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for code in CODES:
            for statement in (1, 2):
                t = np.arange(int(0.6 * 16000)) / 16000
                tone = 0.05 * np.sin(2 * np.pi * rng.uniform(120, 280) * t)
                wave = np.concatenate([1e-4 * rng.standard_normal(16000), tone, 1e-4 * rng.standard_normal(12000)])
                sf.write(folder / f"03-01-{code:02d}-01-{statement:02d}-01-{actor:02d}.wav", wave.astype(np.float32),
                         16000)
        sf.write(folder / f"03-02-01-01-01-01-{actor:02d}.wav", np.zeros(1600, np.float32), 16000)  # a song
        sf.write(folder / "notes.wav", np.zeros(1600, np.float32), 16000)


@pytest.fixture
def evaluated(tmp_path, tiny_la):
    rng = np.random.default_rng(0)
    write_ravdess(tmp_path / "ravdess", rng)
    torch.manual_seed(0)
    torch.save(build_model(TINY_MODEL).state_dict(), tmp_path / "w.pth")
    dev = write_lines(tmp_path / "dev.txt", [f"D{i} - {'bonafide' if i % 2 else 'spoof'} {rng.normal(i % 2):.4f}"
                                             for i in range(100)])
    genuine = {"format": "ravdess", "path": str(tmp_path / "ravdess"), "actors": [11]}
    config = make_config(tmp_path, tiny_la, model_path=str(tmp_path / "w.pth"),
                         eval_datasets=[{"name": "genuine", **genuine},
                                        {"name": "genuine_trimmed", **genuine, "preprocess": "trim_normalise"}])
    return config, dev


def test_genuine_sets_are_reported_at_the_dev_threshold(tmp_path, evaluated, capsys):
    config, dev = evaluated
    main_module.main(["--config", str(config), "--eval", "--dev_scores", str(dev), "--output_dir", str(tmp_path / "ev")])
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "ev").iterdir())
    report = json.loads((run_dir / "eval_report.json").read_text())
    scores = read_cm_scores(dev)
    _, threshold = compute_eer(scores.scores[scores.keys == "bonafide"], scores.scores[scores.keys == "spoof"])
    genuine, trimmed, la = (report["datasets"][name] for name in ("genuine", "genuine_trimmed", "la_eval"))
    for name, one in (("genuine", genuine), ("genuine_trimmed", trimmed)):
        assert one["one_class"] == "bonafide" and one["n_bonafide"] == 8, name  # actor 11, songs left out
        point = one["operating_points"]["fixed"]
        assert point["threshold"] == pytest.approx(threshold) and point["source"].startswith("dev EER threshold")
        assert set(point["groups"]["emotion"]) == set(CODES.values())
        assert set(point["groups"]["arousal"]) == {"high", "low"}
        file_scores = read_cm_scores(one["score_file"], both_classes=False).scores
        assert point["pooled"]["frr"]["errors"] == int(np.sum(file_scores <= threshold))
        assert one["acceptance"] == pytest.approx(100 * np.mean(file_scores > threshold))
    as_recorded = read_cm_scores(genuine["score_file"], both_classes=False)
    after = read_cm_scores(trimmed["score_file"], both_classes=False)
    assert list(as_recorded.utt_ids) == list(after.utt_ids)
    # scored on their first half second, the recordings as made show the model nothing but silence,
    # so they all get one score; trimmed, the model sees each one's speech
    assert np.ptp(as_recorded.scores) < 1e-5 < np.ptp(after.scores)
    assert la["operating_points"]["fixed"]["threshold"] == pytest.approx(threshold)
    assert "set_eer" in la["operating_points"] and "set_eer" not in genuine["operating_points"]
    assert "genuine: 8 bona fide trials only (no EER); accepted as bona fide" in out
    assert "emotion=angry" in out and f"at threshold {threshold:.4f}" in out
    page = (run_dir / "report.html").read_text()
    assert page.count("<table") >= 5 and page.count("data:image/png;base64,") >= 4
    assert "genuine_trimmed" in page and "Error rates at the fixed threshold" in page


def test_a_threshold_given_on_the_command_line(tmp_path, evaluated):
    config, _ = evaluated
    main_module.main(["--config", str(config), "--eval", "--threshold", "0.25", "--output_dir", str(tmp_path / "ev")])
    report = json.loads((next((tmp_path / "ev").iterdir()) / "eval_report.json").read_text())
    point = report["datasets"]["genuine"]["operating_points"]["fixed"]
    assert point["threshold"] == 0.25 and point["source"] == "--threshold"
    with pytest.raises(SystemExit):
        main_module.main(["--config", str(config), "--eval", "--threshold", "calibrated", "--output_dir",
                          str(tmp_path / "ev2")])


def test_emotion_calibrated_system_is_reported_and_applied_by_inference(tmp_path, tiny_la):
    """A run with emotion_calibration: its calibrated system gets a report folder of its own (a
    config, scores, error rates at its own dev threshold) and inference.py --run
    --emotion_calibrated gives the same calibrated scores for the same files."""
    import inference

    ser = {"backend": "egemaps", "ser_path": str(REPO / "models/weights/ser_egemaps_ravdess.json")}
    config = make_config(tmp_path, tiny_la, num_epochs=1, eval_mode="full",
                         emotion_calibration={"ser_config": ser, "features": "arousal_valence"})
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "runs")])
    run = next((tmp_path / "runs").iterdir())
    folder = run / "emotion_calibrated"
    report = json.loads((folder / "eval_report.json").read_text())
    assert json.loads((folder / "config.conf").read_text())["emotion_calibration"]["features"] == "arousal_valence"
    la = report["datasets"]["la_eval"]
    record = json.loads((folder / "emotion_calibration.json").read_text())
    assert len(record["covariate_weights"]) == 2 and la["operating_points"]["fixed"]["threshold"] == pytest.approx(
        record["dev_eer_threshold"])
    assert json.loads((run / "eval_report.json").read_text())["emotion_calibrated"]["folder"] == str(folder)
    calibrated = read_cm_scores(la["score_file"])
    out = tmp_path / "scores.tsv"
    eval_audio = tiny_la / "ASVspoof2019_LA_eval" / "flac"
    assert inference.main(["--run", str(run), "--emotion_calibrated", "--test_dir", str(eval_audio),
                           "--output_file", str(out), "--no_progress", "--threads", "1"]) == 0
    rows = {line.split("\t")[0][:-5]: float(line.split("\t")[1]) for line in out.read_text().splitlines()[1:]}
    for utt, score in zip(calibrated.utt_ids, calibrated.scores):
        assert rows[utt] == pytest.approx(score, abs=1e-3)
    # A number given for the run's scores: the run is reported at it, its calibrated system (LLRs)
    # at its own dev EER threshold, labelled a system of its own.
    main_module.main(["--config", str(run / "config.conf"), "--eval", "--eval_model_weights",
                      str(run / "weights" / "final.safetensors"), "--dev_scores", str(run / "dev_scores.txt"),
                      "--threshold", "0.25", "--output_dir", str(tmp_path / "ev")])
    evaluated = next((tmp_path / "ev").iterdir())
    fixed = json.loads((evaluated / "eval_report.json").read_text())["datasets"]["la_eval"]["operating_points"]["fixed"]
    assert fixed["threshold"] == 0.25
    again = json.loads((evaluated / "emotion_calibrated" / "eval_report.json").read_text())
    point = again["datasets"]["la_eval"]["operating_points"]["fixed"]
    assert again["system"] == "emotion calibration" and point["source"].startswith("dev EER threshold")
    assert point["threshold"] == pytest.approx(record["dev_eer_threshold"])
    # --run with a threshold of its own needs no dev scores
    (run / "dev_scores.txt").unlink()
    assert inference.main(["--run", str(run), "--threshold", "0.1", "--test_dir", str(eval_audio),
                           "--output_file", str(out), "--no_progress", "--threads", "1"]) == 0


def test_a_failed_emotion_calibration_leaves_the_report_whole(tmp_path, evaluated, capsys):
    """An SER without an emotion classifier gives no arousal/valence: the calibrated system is
    not made, said in one line and in the report, and the run's own report is written in full."""
    config, dev = evaluated
    settings = json.loads(config.read_text())
    settings["emotion_calibration"] = {"ser_config": {"backend": "acrnn"}, "features": "arousal_valence"}
    config.write_text(json.dumps(settings))
    main_module.main(["--config", str(config), "--eval", "--dev_scores", str(dev), "--output_dir", str(tmp_path / "ev")])
    report = json.loads((next((tmp_path / "ev").iterdir()) / "eval_report.json").read_text())
    assert "arousal/valence" in report["emotion_calibrated"]["error"]
    assert report["datasets"]["genuine"]["operating_points"]["fixed"]["pooled"]["frr"]["n"] == 8
    assert "warning: emotion_calibration not done" in capsys.readouterr().out


def test_scores_from_re_reports_a_runs_scores_without_scoring(tmp_path, evaluated, capsys):
    """--scores_from reads the score files an evaluation wrote (here altered by hand, which a new
    forward pass would undo) and reports them at another threshold; a set the folder lacks is one line."""
    config, dev = evaluated
    main_module.main(["--config", str(config), "--eval", "--dev_scores", str(dev), "--output_dir", str(tmp_path / "ev")])
    first = next((tmp_path / "ev").iterdir())
    genuine = first / json.loads((first / "eval_report.json").read_text())["datasets"]["genuine"]["score_file"]
    genuine = genuine if genuine.is_file() else first / genuine.name
    rows = [line.split() for line in genuine.read_text().splitlines()]
    genuine.write_text("".join(f"{u} {a} {k} {0.5 if i % 2 else -0.5}\n" for i, (u, a, k, _) in enumerate(rows)))
    main_module.main(["--config", str(config), "--eval", "--scores_from", str(first), "--threshold", "0",
                      "--output_dir", str(tmp_path / "again")])
    report = json.loads((next((tmp_path / "again").iterdir()) / "eval_report.json").read_text())
    frr = report["datasets"]["genuine"]["operating_points"]["fixed"]["pooled"]["frr"]
    assert frr["n"] == 8 and frr["errors"] == 4
    settings = json.loads(config.read_text())
    settings["eval_datasets"].append({"name": "other", "format": "ravdess", "path": str(tmp_path / "ravdess")})
    config.write_text(json.dumps(settings))
    with pytest.raises(SystemExit):
        main_module.main(["--config", str(config), "--eval", "--scores_from", str(first), "--output_dir",
                          str(tmp_path / "third")])
    assert "has no scores of set 'other'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_module.main(["--config", str(config), "--eval", "--scores_from", str(first), "--dev_scores",
                          str(tmp_path / "missing.txt"), "--output_dir", str(tmp_path / "fourth")])
    assert "--dev_scores: file not found" in capsys.readouterr().err

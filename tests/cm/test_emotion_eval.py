"""The emotional evaluation set: layout and protocol readers, the per-emotion / per-system report,
its table and chart, and main.py scoring it after LA eval (--eval and at the end of training)."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import main as main_module
from emospoof.core.emotions import TTS5_EMOTIONS, arousal_of
from emospoof.corpora.emotional import read_emotional_layout, read_emotional_protocol, read_emotional_set
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.groups import emotion_report
from emospoof.reports.tables import format_emotion_table
from models import build_model
from tests.conftest import TINY_AASIST, TINY_MODEL, make_config, write_split

pytestmark = pytest.mark.usefixtures("single_thread")

def write_tone(path, bonafide: bool, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.3 * 16000)) / 16000
    freq = rng.uniform(150, 300) if bonafide else rng.uniform(2500, 4000)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32), 16000)


@pytest.fixture
def emotional_tree(tmp_path):
    """ESD (bona fide) and two TTS systems, two speakers, one file per emotion; TTS2 lacks 'sad'
    and the 'happy' folder of TTS2/spk2 is empty."""
    rng = np.random.default_rng(0)
    root = tmp_path / "DSES"
    for system in ("ESD", "TTS1", "TTS2"):
        for speaker in ("spk1", "spk2"):
            for emotion in TTS5_EMOTIONS:
                folder = root / system / speaker / emotion
                if system == "TTS2" and emotion == "sad":
                    continue
                if (system, speaker) == ("TTS2", "spk2") and emotion == "happy":
                    folder.mkdir(parents=True)
                    continue
                write_tone(folder / f"1.{'wav' if speaker == 'spk1' else 'flac'}", system == "ESD", rng)
    return root


def test_layout_reader(emotional_tree):
    emo_set = read_emotional_layout(emotional_tree)
    assert len(emo_set.trials) == 3 * 2 * 5 - 3
    by_id = {t.utt_id: t for t in emo_set.trials}
    trial = by_id["ESD/spk1/angry/1"]
    assert (trial.label, trial.attack, trial.speaker, trial.emotion) == (1, "ESD", "spk1", "angry")
    assert by_id["TTS1/spk2/sad/1"].label == 0 and by_id["TTS1/spk2/sad/1"].path.suffix == ".flac"
    assert sorted(p.split(str(emotional_tree))[1] for p in emo_set.missing) == [
        "/TTS2/spk1/sad: folder missing", "/TTS2/spk2/happy: no audio files", "/TTS2/spk2/sad: folder missing"]

    with pytest.raises(ValueError, match="bona fide system folder 'Bona' not found"):
        read_emotional_layout(emotional_tree, "Bona")
    with pytest.raises(ValueError, match="emotional set not found"):
        read_emotional_set(emotional_tree / "nothing")


def test_layout_reader_maps_emotion_spellings_and_reads_every_audio_suffix(tmp_path):
    """ESD spells its folders 'Surprise', 'Angry', ...: they are the report's emotions, so
    'surprised' keeps its place in the arousal groups; any audio suffix counts, as everywhere."""
    rng = np.random.default_rng(1)
    root = tmp_path / "ESD_layout"
    for system in ("ESD", "TTS"):
        for folder in ("Angry", "Happy", "Neutral", "Sad", "Surprise"):
            write_tone(root / system / "0011" / folder / "1.wav", system == "ESD", rng)
    ogg = root / "ESD" / "0011" / "Surprise" / "2.ogg"
    sf.write(ogg, (0.1 * rng.standard_normal(4800)).astype(np.float32), 16000, format="OGG", subtype="VORBIS")
    (root / "ESD" / "0011" / "Surprise" / "notes.txt").write_text("not audio")
    emo_set = read_emotional_layout(root)
    assert emo_set.missing == []
    assert sorted({t.emotion for t in emo_set.trials}) == sorted(TTS5_EMOTIONS)
    surprised = [t for t in emo_set.trials if t.emotion == "surprised" and t.label == 1]
    assert sorted(t.path.suffix for t in surprised) == [".ogg", ".wav"]
    assert arousal_of(surprised[0].emotion) == "high"


def test_protocol_reader(tmp_path, emotional_tree):
    protocol = emotional_tree / "protocol.txt"
    protocol.write_text("ESD/spk1/angry/1.wav bonafide ESD spk1 Angry\n\n"
                        f"{emotional_tree}/TTS1/spk1/sad/1.wav spoof TTS1 spk1 sad\n")
    emo_set = read_emotional_set(protocol)
    assert [(t.label, t.attack, t.emotion) for t in emo_set.trials] == [(1, "ESD", "angry"), (0, "TTS1", "sad")]
    assert all(t.path.is_file() for t in emo_set.trials) and emo_set.bonafide_system == "ESD"
    protocol.write_text("a.wav bonafide ESD spk1 angry\nb.wav fake TTS1 spk1 sad\n")
    with pytest.raises(ValueError, match=r"protocol.txt:2: expected 'UTT_PATH bonafide\|spoof"):
        read_emotional_protocol(protocol)


def test_emotion_report_cells():
    rng = np.random.default_rng(0)
    rows = [(key, system, emotion) for emotion in ("angry", "sad") for key, system in
            [("bonafide", "ESD")] * 6 + [("spoof", "A")] * 5 + [("spoof", "B")] * 4]
    rows += [("spoof", "B", "happy")] * 3  # no bona fide 'happy': reported, not dropped
    keys, systems, emotions = (np.array(column) for column in zip(*rows))
    scores = rng.normal(size=len(rows)) + np.where(keys == "bonafide", 1.0, 0.0)
    scores[(systems == "A") & (emotions == "sad")] += 3.0  # A's sad spoofs look bona fide
    report = emotion_report(scores, keys, systems, emotions, n_boot=200)

    def eer(bona_mask, spoof_mask):
        return 100 * compute_eer(scores[bona_mask & (keys == "bonafide")],
                                            scores[spoof_mask & (keys == "spoof")])[0]
    sad, spoof_a = emotions == "sad", systems == "A"
    cell = report["per_system_emotion"]["A"]["sad"]
    assert cell["eer"] == pytest.approx(eer(sad, sad & spoof_a)) and cell["eer"] > 50
    assert (cell["n_bonafide"], cell["n_spoof"]) == (6, 5)
    assert cell["ci95"][0] <= cell["eer"] <= cell["ci95"][1]
    assert report["per_emotion"]["sad"]["eer"] == pytest.approx(eer(sad, sad))
    assert report["per_system"]["B"]["eer"] == pytest.approx(eer(np.ones_like(sad), systems == "B"))
    assert report["per_system"]["B"]["n_bonafide"] == 12 and report["per_system"]["B"]["n_spoof"] == 11
    assert report["pooled"]["n_bonafide"] + report["pooled"]["n_spoof"] == len(rows)
    assert report["per_emotion"]["happy"]["eer"] is None
    assert report["empty"] == ["emotion happy: no bona fide trials", "A x happy: no bona fide trials",
                               "B x happy: no bona fide trials"]

    table = format_emotion_table(report)
    assert all(word in table for word in ("angry", "happy", "sad", "all systems", "A", "B", "n/a (0+3)", "(6+5)"))


def test_eval_prints_emotion_table_on_devkit_dses(tmp_path, shared_dir, tiny_ser_dir, capsys):
    """--eval end to end: LA eval (generated) plus the devkit's DSES set (real audio)."""
    write_split(tmp_path / "LA", "eval", "E", 3, np.random.default_rng(0))
    model_config = {"architecture": "AASIST_FiLM", **TINY_AASIST, "film_at": ["embedding", "graph"],
                    "ser_config": {"backend": "hf", "ser_path": str(tiny_ser_dir)}}
    torch.save(build_model(model_config).state_dict(), tmp_path / "w.pth")
    config = make_config(tmp_path, tmp_path / "LA", model_path=str(tmp_path / "w.pth"), batch_size=16,
                         model_config=model_config, emo_dataset=str(shared_dir / "data/devkit/DSES"))
    main_module.main(["--config", str(config), "--eval", "--output_dir", str(tmp_path / "ev")])
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "ev").iterdir())
    report = json.loads((run_dir / "eval_report.json").read_text())
    emo = report["emotional_set"]
    assert set(emo["per_emotion"]) == set(TTS5_EMOTIONS) and set(emo["per_system"]) == {"Espeak", "GriffinLim", "WORLD"}
    cells = [c for row in emo["per_system_emotion"].values() for c in row.values()]
    assert len(cells) == 15 and all(c["n_bonafide"] == 4 and c["n_spoof"] == 4 for c in cells)
    assert emo["pooled"]["n_bonafide"] == 20 and emo["pooled"]["n_spoof"] == 60 and emo["missing"] == []
    eers = {e: c["eer"] for e, c in emo["per_emotion"].items()}
    assert emo["worst_emotion"] == {"emotion": max(eers, key=eers.get), "eer": max(eers.values())}
    high, low = [eers[e] for e in ("angry", "happy", "surprised")], [eers[e] for e in ("neutral", "sad")]
    assert emo["arousal_gap"] == pytest.approx(np.mean(high) - np.mean(low))
    assert report["datasets"]["emotional_set"]["per_emotion"] == emo["per_emotion"]
    assert report["la_eval"]["n_bonafide"] == 3
    table_lines = [line for line in out.splitlines()  # the per-system table, not the indented per-set tables
                   if line.split()[:1] and line.split()[0] in TTS5_EMOTIONS and not line.startswith(" ")]
    assert len(table_lines) == 5 and "GriffinLim" in out
    assert len((run_dir / "emo_scores.txt").read_text().splitlines()) == 80
    assert (run_dir / "emo_eer_per_emotion.png").read_bytes()[:4] == b"\x89PNG"


def test_training_ends_with_the_emotional_report(tmp_path, emotional_tree, tiny_ser_dir):
    rng = np.random.default_rng(1)
    for split, prefix in (("train", "T"), ("dev", "D"), ("eval", "E")):
        write_split(tmp_path / "LA", split, prefix, 3, rng)
    model_config = {"architecture": "AASIST_GFiLM", **TINY_AASIST,
                    "ser_config": {"backend": "hf", "ser_path": str(tiny_ser_dir)}}
    config = make_config(tmp_path, tmp_path / "LA", num_epochs=1, swa="False", model_config=model_config,
                         emo_dataset=str(emotional_tree), emo_bonafide_system="ESD")
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "runs")])
    report = json.loads((next((tmp_path / "runs").iterdir()) / "eval_report.json").read_text())
    emo = report["emotional_set"]
    assert "la_eval" in report and emo["pooled"]["n_bonafide"] == 10 and emo["pooled"]["n_spoof"] == 17
    assert len(emo["missing"]) == 3
    assert emo["per_system_emotion"]["TTS2"]["sad"]["eer"] is None
    assert emo["per_system_emotion"]["TTS2"]["sad"]["note"] == "no spoof trials"


def test_missing_emotional_set_is_a_one_line_error(tmp_path, capsys):
    write_split(tmp_path / "LA", "eval", "E", 2, np.random.default_rng(0))
    config = make_config(tmp_path, tmp_path / "LA", emo_dataset=str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as exit_info:
        main_module.main(["--config", str(config), "--eval", "--output_dir", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "'emo_dataset'" in err and "nowhere" in err


def test_eval_with_ablations_reports_the_change_per_emotion(tmp_path, emotional_tree, tiny_ser_dir):
    write_split(tmp_path / "LA", "eval", "E", 3, np.random.default_rng(0))
    model_config = {"architecture": "AASIST_FiLM", **TINY_AASIST, "film_at": ["embedding"],
                    "ser_config": {"backend": "hf", "ser_path": str(tiny_ser_dir)}}
    torch.manual_seed(0)
    model = build_model(model_config)
    torch.nn.init.normal_(model.film["embedding"].generator.weight, std=2.0)  # the emotion matters
    with torch.no_grad():  # statistics as training leaves them: four emotion classes
        waves = torch.tensor(np.random.default_rng(3).standard_normal((8, 4000)), dtype=torch.float32)
        model.set_emotion_statistics(model.raw_emotion(waves), ["angry", "happy", "sad", "neutral"] * 2)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    config = make_config(tmp_path, tmp_path / "LA", model_path=str(tmp_path / "w.pth"), batch_size=16,
                         model_config=model_config, emo_dataset=str(emotional_tree), emo_bonafide_system="ESD")
    main_module.main(["--config", str(config), "--eval", "--ablations", "--output_dir", str(tmp_path / "ev")])
    run_dir = next((tmp_path / "ev").iterdir())
    summary = json.loads((run_dir / "ablations.json").read_text())["emotional_set"]
    assert set(summary["pooled"]) == {"none", "zero", "mean", "shuffle"}
    for name in ("zero", "mean", "shuffle"):  # each change is that ablation's per-emotion EER minus none's
        sub = json.loads((run_dir / "ablations" / name / "eval_report.json").read_text())["emotional_set"]
        none = json.loads((run_dir / "ablations/none/eval_report.json").read_text())["emotional_set"]
        for emotion, change in summary["change_vs_none"][name].items():
            assert change == pytest.approx(sub["per_emotion"][emotion]["eer"] - none["per_emotion"][emotion]["eer"])
    assert any(abs(c) > 0 for c in summary["change_vs_none"]["zero"].values())
    assert any(abs(c) > 0 for c in summary["change_vs_none"]["shuffle"].values())
    report = json.loads((run_dir / "eval_report.json").read_text())
    assert report["ablations"]["emotional_set"] == summary and "la_eval" in report
    assert (run_dir / "ablations_per_emotion.png").read_bytes()[:4] == b"\x89PNG"


def test_ablations_need_an_emotion_model(tmp_path, capsys):
    write_split(tmp_path / "LA", "eval", "E", 2, np.random.default_rng(0))
    torch.save(build_model(TINY_MODEL).state_dict(), tmp_path / "w.pth")
    config = make_config(tmp_path, tmp_path / "LA", model_path=str(tmp_path / "w.pth"))
    with pytest.raises(SystemExit):
        main_module.main(["--config", str(config), "--eval", "--ablations", "--output_dir", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--ablations: AASIST has no emotion input" in err

"""The dataset readers (corpora/): each on a tiny layout written here in its corpus's format, each
with a malformed line or layout that must give one error naming the file (and line); the spec
checks of the config; emotion label files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emospoof.core.config import ConfigError
from emospoof.corpora import FORMATS, check_spec, dataset_name, read_dataset
from emospoof.corpora.common import DatasetError
from emospoof.corpora.emotional import emofake_labels
from tests.conftest import REPO, write_lines, write_split


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def one_line_error(spec: dict, where: str) -> str:
    """The reader's error for ``spec``: one line starting with ``where`` (file or file:line)."""
    with pytest.raises(DatasetError) as err:
        read_dataset(spec)
    message = str(err.value)
    assert "\n" not in message and message.startswith(where), message
    return message


def summary(trials) -> list[tuple]:
    return [(t.utt_id, t.label, t.attack, t.speaker, t.emotion, t.conditions) for t in trials]


def test_asvspoof2019_la(tmp_path):
    write_split(tmp_path / "LA", "dev", "D", 2, np.random.default_rng(0))
    spec = {"format": "asvspoof2019_la", "path": str(tmp_path / "LA"), "split": "dev"}
    trials = read_dataset(spec).trials
    assert [(t.label, t.attack) for t in trials] == [(1, "-"), (0, "A01"), (1, "-"), (0, "A02")]
    assert all(t.path.is_file() for t in trials) and dataset_name(spec) == "asvspoof2019_la_dev"
    protocol = tmp_path / "LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt"
    protocol.write_text(protocol.read_text() + "SPK0 LA_D_9 - A01 fake\n")
    one_line_error(spec, f"{protocol}:5: expected 'SPEAKER UTT - ATTACK bonafide|spoof'")


LA21 = ["LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval",
        "LA_0009 LA_E_1000001 none loc_tx bonafide bonafide notrim eval",
        "LA_0010 LA_E_2000002 gsm sin_tx A13 spoof notrim progress",
        "LA_0011 LA_E_3000003 opus mad_tx - bonafide trim hidden"]


def test_asvspoof2021_la_keys_subsets_and_conditions(tmp_path):
    root = tmp_path / "ASVspoof2021_LA_eval"
    keys = write_lines(touch(root / "keys/LA/CM/trial_metadata.txt"), LA21)
    spec = {"format": "asvspoof2021_la", "path": str(root)}
    assert summary(read_dataset(spec).trials) == [
        ("LA_E_9332881", 0, "A07", "LA_0009", "-", (("codec", "alaw"), ("transmission", "ita_tx"))),
        ("LA_E_1000001", 1, "-", "LA_0009", "-", (("codec", "none"), ("transmission", "loc_tx"))),
    ]
    assert read_dataset(spec).trials[0].path == root / "flac/LA_E_9332881.flac"
    assert [t.utt_id for t in read_dataset({**spec, "subset": "progress"}).trials] == ["LA_E_2000002"]
    assert len(read_dataset({**spec, "subset": "all"}).trials) == 4
    write_lines(keys, LA21 + ["LA_0012 LA_E_4 alaw ita_tx A07 spoof eval"])
    one_line_error(spec, f"{keys}:5: expected 8 fields")
    write_lines(keys, LA21[:1] + ["LA_0012 LA_E_4 alaw ita_tx A07 spoof notrim evaluation"])
    one_line_error(spec, f"{keys}:2: subset 'evaluation' is not one of eval, progress, hidden")
    one_line_error({**spec, "keys": str(tmp_path / "none.txt")}, f"{tmp_path / 'none.txt'}: ASVspoof 2021 LA keys not found")


def test_asvspoof2021_df_full_and_stage1_keys(tmp_path):
    root = tmp_path / "ASVspoof2021_DF_eval"
    keys = write_lines(touch(tmp_path / "DF-keys/trial_metadata.txt"), [
        "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim eval traditional_vocoder - - - -",
        "TEF2 DF_E_2000012 low_m4a vcc2020 - bonafide notrim eval bonafide - - - -",
        "LA_0024 DF_E_2000013 mp3m4a asvspoof A09 spoof notrim eval",  # stage-1 keys stop at subset
    ])
    trials = read_dataset({"format": "asvspoof2021_df", "path": str(root), "keys": str(keys)}).trials
    assert summary(trials)[:2] == [
        ("DF_E_2000011", 0, "A14", "LA_0023", "-",
         (("codec", "nocodec"), ("source", "asvspoof"), ("vocoder", "traditional_vocoder"))),
        ("DF_E_2000012", 1, "-", "TEF2", "-", (("codec", "low_m4a"), ("source", "vcc2020"), ("vocoder", "bonafide"))),
    ]
    assert trials[2].conditions == (("codec", "mp3m4a"), ("source", "asvspoof"))
    write_lines(keys, ["LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim eval traditional_vocoder -"])
    one_line_error({"format": "asvspoof2021_df", "path": str(root), "keys": str(keys)}, f"{keys}:1: expected 8 or 13")


def test_asvspoof5(tmp_path):
    protocol = write_lines(touch(tmp_path / "ASVspoof5_protocols/ASVspoof5.eval.track_1.tsv"), [
        "E_0001 E_0000000001 F C05 3 E_0000009999 AC2 A17 spoof -",
        "E_0002 E_0000000002 M - 0 - - bonafide bonafide -",
    ])
    spec = {"format": "asvspoof5", "path": str(tmp_path), "split": "eval"}
    trials = read_dataset(spec).trials
    assert summary(trials) == [
        ("E_0000000001", 0, "A17", "E_0001", "-",
         (("codec", "C05"), ("codec_q", "3"), ("attack_tag", "AC2"), ("gender", "F"))),
        ("E_0000000002", 1, "-", "E_0002", "-", (("codec", "-"), ("codec_q", "0"), ("attack_tag", "-"), ("gender", "M"))),
    ]
    assert trials[0].path == tmp_path / "flac_E_eval/E_0000000001.flac"
    write_lines(protocol, ["E_0001 E_0000000001 F C05 3 E_0000009999 AC2 A17 genuine -"])
    one_line_error(spec, f"{protocol}:1: key 'genuine' is neither bonafide nor spoof")
    one_line_error({**spec, "split": "train"}, f"{tmp_path / 'ASVspoof5_protocols/ASVspoof5.train.tsv'}: file not found")


def test_in_the_wild(tmp_path):
    meta = write_lines(tmp_path / "meta.csv", ["file,speaker,label", "0.wav,Alec Guinness,spoof",
                                               '1.wav,"Obama, Barack",bona-fide'])
    trials = read_dataset({"format": "in_the_wild", "path": str(tmp_path)}).trials
    assert summary(trials) == [("0", 0, "-", "Alec Guinness", "-", ()), ("1", 1, "-", "Obama, Barack", "-", ())]
    assert trials[1].path == tmp_path / "1.wav"
    write_lines(meta, ["file,speaker,label", "0.wav,Alec Guinness,spoof", "1.wav,Alec Guinness,bonafide"])
    one_line_error({"format": "in_the_wild", "path": str(tmp_path)}, f"{meta}:3: key 'bonafide' is neither bona-fide")
    write_lines(meta, ["file,label", "0.wav,spoof"])
    one_line_error({"format": "in_the_wild", "path": str(tmp_path)}, f"{meta}:1: no 'speaker' column")


def test_fake_or_real(tmp_path):
    version = tmp_path / "for-norm"
    for name in ("testing/real/file1.wav", "testing/real/file2.wav", "testing/fake/file9.mp3", "testing/fake/notes.txt"):
        touch(version / name)
    spec = {"format": "fake_or_real", "path": str(version), "split": "testing"}
    assert [(t.utt_id, t.label) for t in read_dataset(spec).trials] == [
        ("real/file1", 1), ("real/file2", 1), ("fake/file9", 0)]
    assert [t.utt_id for t in read_dataset({"format": "fake_or_real", "path": str(version / "testing")}).trials][0] == "real/file1"
    one_line_error({**spec, "split": "validation"}, f"{version / 'validation/real'}: folder not found")


def test_emofake(tmp_path):
    split = tmp_path / "English/dev"
    labels = write_lines(touch(split / "label.txt"), ["0011_Sad_000351.wav genuine", "S3_Neutral2Angry_0011_000021.wav fake",
                                               "S5_Happy2Surprise_0012_000022 fake"])
    touch(split / "wav/0011_Sad_000351.wav")
    trials = read_dataset({"format": "emofake", "path": str(tmp_path / "English"), "split": "dev"}).trials
    assert summary(trials) == [
        ("0011_Sad_000351", 1, "-", "-", "sad", ()),
        ("S3_Neutral2Angry_0011_000021", 0, "S3", "-", "angry", (("source_emotion", "neutral"),)),
        ("S5_Happy2Surprise_0012_000022", 0, "S5", "-", "surprised", (("source_emotion", "happy"),)),
    ]
    assert trials[0].path == split / "wav/0011_Sad_000351.wav" and trials[2].path.suffix == ".wav"
    assert emofake_labels("0011_000351") == ("-", "-", "-")  # nothing recognisable: unlabelled
    write_lines(labels, ["0011_Sad_000351.wav genuine", "S3_x.wav"])
    one_line_error({"format": "emofake", "path": str(tmp_path / "English"), "split": "dev"},
                   f"{labels}:2: expected 'FILE genuine|fake'")


def test_emospoof_tts(tmp_path):
    for name in ("ESD/0011/Angry/0011_000351.wav", "ESD/0012/Sad/0012_000001.wav",
                 "StyleTTS2/0011/Angry/a.wav", "F5-TTS/0012/Sadness/b.flac", "F5-TTS/extra/c.wav"):
        touch(tmp_path / name)
    corpus = read_dataset({"format": "emospoof_tts", "path": str(tmp_path)})
    assert summary(corpus.trials) == [
        ("ESD/0011/Angry/0011_000351", 1, "-", "0011", "angry", ()),
        ("ESD/0012/Sad/0012_000001", 1, "-", "0012", "sad", ()),
        ("F5-TTS/0012/Sadness/b", 0, "F5-TTS", "0012", "sad", ()),
        ("F5-TTS/extra/c", 0, "F5-TTS", "-", "-", ()),
        ("StyleTTS2/0011/Angry/a", 0, "StyleTTS2", "0011", "angry", ()),
    ]
    one_line_error({"format": "emospoof_tts", "path": str(tmp_path), "bonafide_system": "Real"},
                   f"{tmp_path / 'Real'}: bona fide (ESD) folder not found")


def test_protocol_tsv_and_emotion_labels(tmp_path):
    tsv = write_lines(touch(tmp_path / "sets/protocol.tsv"), ["path\tkey\tattack\temotion\tcondition",
                                                       "a/1.wav\tbonafide\t-\tAngry\tphone",
                                                       "a/2.flac\tspoof\tT01\tsurprise\t",
                                                       f"{tmp_path}/b.wav\tspoof\tT02\t\tphone"])
    trials = read_dataset({"format": "protocol_tsv", "path": str(tsv)}).trials
    assert summary(trials)[:2] == [("a/1", 1, "-", "-", "angry", (("condition", "phone"),)),
                                   ("a/2", 0, "T01", "-", "surprised", ())]
    assert trials[0].path == tmp_path / "sets/a/1.wav" and trials[2].path == tmp_path / "b.wav"
    assert trials[2].emotion == "-"
    labels = write_lines(tmp_path / "meta.tsv", ["utt_id\tsplit\temotion", "a/1\teval\tcalm", "zzz\teval\tsad"])
    relabelled = read_dataset({"format": "protocol_tsv", "path": str(tsv), "emotion_labels": str(labels)}).trials
    assert [t.emotion for t in relabelled] == ["calm", "surprised", "-"]
    write_lines(labels, ["utt_id\temotion", "a/1\tcalm", "a/1\tsad"])
    one_line_error({"format": "protocol_tsv", "path": str(tsv), "emotion_labels": str(labels)},
                   f"{labels}:3: a/1 is labelled 'calm' and 'sad'")
    write_lines(tsv, ["path\tkey\temotoin", "a/1.wav\tbonafide\tangry"])
    assert "did you mean 'emotion'?" in one_line_error({"format": "protocol_tsv", "path": str(tsv)}, f"{tsv}:1:")
    write_lines(tsv, ["path\tkey", "a/1.wav\tbonafide", "a/2.wav"])
    one_line_error({"format": "protocol_tsv", "path": str(tsv)}, f"{tsv}:3: expected 2 fields")
    write_lines(tsv, ["path\tkey", "my file.wav\tbonafide"])
    one_line_error({"format": "protocol_tsv", "path": str(tsv)}, f"{tsv}:2: utterance id 'my file'")


@pytest.mark.parametrize("spec,message", [
    ({"format": "asvspoof2019_la", "path": "x"}, "'d.split': format asvspoof2019_la needs one of train, dev, eval"),
    ({"format": "asvspoof2021_la", "path": "x", "subset": "dev"}, "'d.subset': expected one of eval, progress"),
    ({"format": "in_the_wild", "path": "x", "split": "eval"}, "unknown config key 'd.split'"),
    ({"format": "protocol_tsv"}, "config key 'd': missing 'path'"),
    ({"format": "protocol_tsv", "path": "x", "name": "my set"}, "'d.name': 'my set' must be letters"),
    ({"format": "emofake", "path": "x", "split": "test", "bonafide_system": "ESD"}, "unknown config key 'd.bonafide_system'"),
    ("LA", "config key 'd': expected an object"),
])
def test_spec_errors(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_spec(spec, "d")


def test_every_format_is_checked_and_documented():
    """Each registered format has a reader with a docstring and is described in docs/data.md."""
    docs = (REPO / "docs/data.md").read_text()
    for name, fmt in FORMATS.items():
        assert f"`{name}`" in docs, name
        spec = {"format": name, "path": "x", **({"split": fmt.splits[0]} if fmt.splits else {})}
        check_spec(spec, "d")

"""Multi-dataset evaluation (main.py --eval over the track's eval set and eval_datasets, one
report), per-emotion reports of LA-layout sets (issue 11), several checkpoints with best / mean /
vote, training on any registered training set, and the tracks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import main as main_module
from emospoof.cm.config import validate_config
from emospoof.cm.data import dev_trials, train_specs, training_trials
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.fusion import fuse_score_matrix
from emospoof.metrics.groups import dataset_report
from emospoof.metrics.score_files import read_cm_scores
from models import build_model
from tests.conftest import TINY_MODEL, make_config, write_lines, write_split

pytestmark = pytest.mark.usefixtures("single_thread")
EMOTIONS = ("angry", "sad", "happy", "neutral")


def test_per_emotion_report_matches_a_hand_computation():
    # angry: bona fide {1, 3} vs spoof {0, 2} -> 50 %; sad: {5} vs {4} -> 0 %; happy: {0} vs {1}
    # -> 100 %; neutral: {2, 3} vs {1} -> 0 %; two unlabelled trials are in no cell.
    rows = [(3, 1, "angry"), (1, 1, "angry"), (2, 0, "angry"), (0, 0, "angry"), (5, 1, "sad"), (4, 0, "sad"),
            (0, 1, "happy"), (1, 0, "happy"), (2, 1, "neutral"), (3, 1, "neutral"), (1, 0, "neutral"),
            (9, 1, "-"), (-9, 0, "-")]
    scores, labels, emotions = (np.array(c) for c in zip(*rows))
    report = dataset_report(scores.astype(float), labels == 1, ["-" if b else "A01" for b in labels], emotions,
                            [()] * len(rows), n_boot=50)
    assert {e: c["eer"] for e, c in report["per_emotion"].items()} == {"angry": 50.0, "sad": 0.0, "happy": 100.0,
                                                                      "neutral": 0.0}
    assert (report["per_emotion"]["angry"]["n_bonafide"], report["per_emotion"]["angry"]["n_spoof"]) == (2, 2)
    assert report["worst_emotion"] == {"emotion": "happy", "eer": 100.0}
    assert report["arousal_gap"] == pytest.approx((50 + 100) / 2 - 0)  # high: angry, happy; low: sad, neutral
    assert report["n_unlabelled"] == {"bonafide": 1, "spoof": 1}
    only_high = dataset_report(scores[:4].astype(float), labels[:4] == 1, ["-"] * 4, emotions[:4], [()] * 4, n_boot=10)
    assert only_high["arousal_gap"] is None


def emotion_of(index: int) -> str:
    """Trials come in (bona fide, spoof) pairs; each pair shares an emotion, the fifth is unlabelled."""
    pair = index // 2
    return "-" if pair % 5 == 4 else EMOTIONS[pair % 5]


@pytest.fixture
def labelled_eval(tmp_path):
    """A tiny LA eval split, an emotion TSV in the devkit's meta.tsv format for it, the same
    trials as a generic protocol TSV with an emotion column, and 2019-format ASV scores."""
    write_split(tmp_path / "LA", "eval", "E", 6, np.random.default_rng(0))
    protocol = (tmp_path / "LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt").read_text().split("\n")
    rows = [line.split() for line in protocol if line]
    meta = write_lines(tmp_path / "meta.tsv", ["utt_id\tsplit\temotion"]
                       + [f"{r[1]}\teval\t{emotion_of(i)}" for i, r in enumerate(rows)])
    tsv = write_lines(tmp_path / "same.tsv", ["path\tkey\tattack\temotion"] + [
        f"LA/ASVspoof2019_LA_eval/flac/{r[1]}.flac\t{r[4]}\t{r[3]}\t{emotion_of(i) if emotion_of(i) != '-' else ''}"
        for i, r in enumerate(rows)])
    rng = np.random.default_rng(1)
    asv = write_lines(tmp_path / "asv.txt", [f"S {k} {rng.normal(-1 if k == 'nontarget' else 3):.3f}"
                                             for k in ("target", "nontarget", "spoof") * 20])
    return tmp_path / "LA", meta, tsv, asv


def test_eval_reports_every_set_with_pictures_and_calibration(tmp_path, labelled_eval, capsys):
    database, meta, tsv, asv = labelled_eval
    torch.manual_seed(0)
    torch.save(build_model(TINY_MODEL).state_dict(), tmp_path / "w.pth")
    rng = np.random.default_rng(2)
    dev = write_lines(tmp_path / "dev.txt", [f"D{i} - {'bonafide' if i % 2 else 'spoof'} {rng.normal(i % 2):.4f}"
                                             for i in range(200)])
    bona_fide_rows = [line.split("\t")[:2] for line in tsv.read_text().splitlines()[1:] if "\tbonafide\t" in line]
    bona_only = write_lines(tmp_path / "bona_only.tsv", ["path\tkey"] + ["\t".join(row) for row in bona_fide_rows[:2]])
    config = make_config(tmp_path, database, model_path=str(tmp_path / "w.pth"), emotion_labels=str(meta),
                         eval_datasets=[{"name": "same", "format": "protocol_tsv", "path": str(tsv),
                                         "asv_scores": str(asv)},
                                        {"name": "bona_only", "format": "protocol_tsv", "path": str(bona_only)}])
    main_module.main(["--config", str(config), "--eval", "--dev_scores", str(dev), "--output_dir", str(tmp_path / "ev")])
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "ev").iterdir())
    report = json.loads((run_dir / "eval_report.json").read_text())
    la, same = report["datasets"]["la_eval"], report["datasets"]["same"]
    assert report["la_eval"] == la and report["score_file"] == la["score_file"]
    assert la["min_tdcf"] is None and same["min_tdcf"] is not None  # t-DCF only where ASV scores exist
    for dataset in (la, same):
        assert dataset["n_bonafide"] == 6 and dataset["n_spoof"] == 6 and set(dataset["per_attack"]) == {"A01", "A02"}
        assert set(dataset["asvspoof5"]) == {"min_dcf", "act_dcf", "cllr", "eer"}
        assert dataset["asvspoof5"]["eer"] == pytest.approx(dataset["eer"])
        for picture in ("det_plot", "histogram"):
            assert open(dataset[picture], "rb").read(4) == b"\x89PNG"
        calibration = dataset["calibration"]
        assert calibration["dev_scores"] == str(dev) and set(calibration["after"]) == {"act_dcf", "cllr", "min_dcf"}
        assert calibration["after"]["min_dcf"] == pytest.approx(calibration["before"]["min_dcf"])
    # Both routes to emotion labels give the same per-emotion report, and it is what the scores say.
    assert la["per_emotion"] == same["per_emotion"] and la["n_unlabelled"] == same["n_unlabelled"] == {
        "bonafide": 1, "spoof": 1}
    assert la["arousal_gap"] == same["arousal_gap"] and la["worst_emotion"] == same["worst_emotion"]
    scores = read_cm_scores(la["score_file"])
    emotion = {line.split("\t")[0]: line.split("\t")[2] for line in meta.read_text().splitlines()[1:]}
    for name in EMOTIONS:
        mask = np.array([emotion[u] == name for u in scores.utt_ids])
        expected = 100 * compute_eer(scores.scores[mask & (scores.keys == "bonafide")],
                                     scores.scores[mask & (scores.keys == "spoof")])[0]
        assert la["per_emotion"][name]["eer"] == pytest.approx(expected)
        assert la["per_emotion"][name]["ci95"][0] <= expected <= la["per_emotion"][name]["ci95"][1]
    assert [row["dataset"] for row in report["summary"]] == ["la_eval", "same", "bona_only"]
    genuine = report["datasets"]["bona_only"]  # genuine speech only: reported at the dev threshold, not refused
    assert genuine["one_class"] == "bonafide" and genuine["n_bonafide"] == 2 and "eer" not in genuine
    fixed = genuine["operating_points"]["fixed"]
    assert fixed["source"].startswith("dev EER threshold") and fixed["pooled"]["far"] is None
    assert fixed["pooled"]["frr"]["n"] == 2 and genuine["acceptance"] == pytest.approx(100 - fixed["pooled"]["frr"]["rate"])
    assert "Summary" in out and "per emotion: worst" in out and "unlabelled 1+1" in out
    assert open(la["emotion_plot"], "rb").read(4) == b"\x89PNG"
    assert len(read_cm_scores(same["calibration"]["score_file"]).scores) == 12


def test_several_checkpoints_best_mean_and_fused(tmp_path, labelled_eval):
    database, _, _, _ = labelled_eval
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        weights.append(tmp_path / f"seed{seed}.pth")
        torch.save(build_model(TINY_MODEL).state_dict(), weights[-1])
    config = make_config(tmp_path, database)
    main_module.main(["--config", str(config), "--eval", "--eval_model_weights", *map(str, weights),
                      "--output_dir", str(tmp_path / "ev")])
    run_dir = next((tmp_path / "ev").iterdir())
    report = json.loads((run_dir / "eval_report.json").read_text())
    assert [c["weights"] for c in report["checkpoints"]] == [str(w) for w in weights]
    singles = [read_cm_scores(c["datasets"]["la_eval"]["score_file"]) for c in report["checkpoints"]]
    assert all(s.utt_ids.tolist() == singles[0].utt_ids.tolist() for s in singles)
    fused = read_cm_scores(report["la_eval"]["score_file"])
    expected = fuse_score_matrix(np.stack([s.scores for s in singles]), "mean")
    assert np.allclose(fused.scores, expected, atol=1e-3)  # the checkpoint files round to 6 decimals
    ensemble = report["ensemble"]["la_eval"]
    eers = [c["datasets"]["la_eval"]["eer"] for c in report["checkpoints"]]
    assert ensemble["best"]["eer"] == min(eers) and ensemble["mean"]["eer"]["mean"] == pytest.approx(np.mean(eers))
    assert set(ensemble["fused"]) == {"mean", "softmax-vote"}
    assert ensemble["fused"]["mean"]["eer"] == pytest.approx(report["la_eval"]["eer"])
    vote = fuse_score_matrix(np.stack([s.scores for s in singles]), "softmax-vote")
    labels = singles[0].keys == "bonafide"
    assert ensemble["fused"]["softmax-vote"]["eer"] == pytest.approx(100 * compute_eer(vote[labels], vote[~labels])[0])
    assert open(report["la_eval"]["det_plot"], "rb").read(4) == b"\x89PNG"


def tsv_split(tmp_path, name: str, n_per_class: int, seed: int) -> str:
    """A split of generated tones listed in a generic protocol TSV."""
    write_split(tmp_path / name, "train", name[0].upper(), n_per_class, np.random.default_rng(seed))
    protocol = tmp_path / name / "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt"
    rows = [line.split() for line in protocol.read_text().splitlines()]
    lines = ["path\tkey\tattack"] + [f"{name}/ASVspoof2019_LA_train/flac/{r[1]}.flac\t{r[4]}\t{r[3]}" for r in rows]
    return str(write_lines(tmp_path / f"{name}.tsv", lines))


def test_training_on_named_sets_ends_calibrated(tmp_path):
    """train_dataset / dev_dataset / eval_datasets replace the track's data (no database_path);
    the run ends with its dev scores and a report calibrated on them."""
    train, dev, evaluation = (tsv_split(tmp_path, n, 4, seed) for seed, n in enumerate(("trn", "dv", "ev")))
    broken = tmp_path / "trn/ASVspoof2019_LA_train/flac/broken.flac"
    broken.write_bytes(b"not audio")
    with open(train, "a") as handle:
        handle.write("trn/ASVspoof2019_LA_train/flac/broken.flac\tspoof\tA01\n")
    config = make_config(tmp_path, tmp_path, num_epochs=1, swa="False",
                         train_dataset={"format": "protocol_tsv", "path": train},
                         dev_dataset={"format": "protocol_tsv", "path": dev},
                         eval_datasets=[{"name": "held_out", "format": "protocol_tsv", "path": evaluation}])
    settings = json.loads(config.read_text())
    del settings["database_path"]
    config.write_text(json.dumps(settings))
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "runs")])
    run_dir = next((tmp_path / "runs").iterdir())
    assert "broken.flac" in (run_dir / "skipped_files.tsv").read_text()  # the named training set was read
    dev_scores = read_cm_scores(run_dir / "dev_scores.txt")
    assert len(dev_scores.scores) == 8
    report = json.loads((run_dir / "eval_report.json").read_text())
    held_out = report["datasets"]["held_out"]
    assert held_out["n_bonafide"] == held_out["n_spoof"] == 4 and "la_eval" not in report
    assert held_out["calibration"]["dev_scores"] == str(run_dir / "dev_scores.txt")
    assert report["training"]["final"] == "best.safetensors"
    # --eval of the run's final weights finds the run's dev scores and calibrates on them.
    main_module.main(["--config", str(config), "--eval", "--eval_model_weights", str(run_dir / "weights/final.safetensors"),
                      "--output_dir", str(tmp_path / "eval_out")])
    report = json.loads((next((tmp_path / "eval_out").iterdir()) / "eval_report.json").read_text())
    assert report["datasets"]["held_out"]["calibration"]["dev_scores"] == str(run_dir / "dev_scores.txt")


def test_tracks_name_their_data(tmp_path):
    base = json.loads(make_config(tmp_path, tmp_path / "LA").read_text())
    df = {**base, "track": "DF", "eval_datasets": [{"format": "asvspoof2021_df", "path": str(tmp_path / "DF")}]}
    validate_config(df)
    assert train_specs(df) == [{"format": "asvspoof2019_la", "path": str(tmp_path / "LA"), "split": "train"}]
    root = tmp_path / "ASVspoof5"
    (root / "ASVspoof5_protocols").mkdir(parents=True)
    for name, prefix in (("train", "T"), ("dev.track_1", "D")):
        write_lines(root / "ASVspoof5_protocols" / f"ASVspoof5.{name}.tsv",
                    [f"{prefix}_0001 {prefix}_000000000{i} F - - - - {'bonafide' if i % 2 else 'A01'} "
                     f"{'bonafide' if i % 2 else 'spoof'} -" for i in range(4)])
    five = {**base, "track": "ASVspoof5", "database_path": str(root)}
    validate_config(five)
    assert [t.utt_id for t in training_trials(five)] == [f"T_000000000{i}" for i in range(4)]
    assert dev_trials(five)[1].path == root / "flac_D/D_0000000001.flac" and dev_trials(five)[1].label == 1

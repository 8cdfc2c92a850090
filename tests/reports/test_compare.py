"""compare.py: means over seeds from synthetic run folders, a paired test that finds a planted
difference and not a null one, and --train that trains missing runs and reuses finished ones."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import compare
from emospoof.core.emotions import arousal_of
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.paired import PairedScores, frr_gap_interval, paired_bootstrap, paired_scores
from tests.conftest import make_config, write_lines

EMOTIONS = ("angry", "happy", "neutral", "sad")


def base_scores(seed: int, n: int = 200) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = np.array(["bonafide"] * (n // 4) + ["spoof"] * (n - n // 4))
    scores = np.where(keys == "bonafide", 1.0, -1.0) + rng.standard_normal(n)
    return [f"U{i:04d}" for i in range(n)], keys, scores


def write_run(root, name: str, config: dict, seed: int, scores: np.ndarray, keys, utts, per_emotion: dict,
              dev_eer: float, threshold: float = 0.0) -> None:
    """A run folder as main.py leaves it: config, eval_report.json (LA eval and the emotional set,
    each with its score file, trial groups and fixed-threshold operating point) and score files."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.conf").write_text(json.dumps(config))
    score_file = write_lines(run / "eval_scores.txt", [f"{u} A01 {k} {s:.6f}" for u, k, s in zip(utts, keys, scores)])
    emotions = [EMOTIONS[i % len(EMOTIONS)] for i in range(len(utts))]
    groups_file = write_lines(run / "eval_scores_groups.tsv", ["utt_id\tkey\temotion\tarousal\tspeaker"] + [
        f"{u}\t{k}\t{e}\t{arousal_of(e)}\t-" for u, k, e in zip(utts, keys, emotions)])
    eer = 100 * compute_eer(scores[keys == "bonafide"], scores[keys == "spoof"])[0]
    fixed = {"threshold": threshold, "source": "dev", "groups": {},
             "pooled": {"frr": {"rate": 100 * np.mean(scores[keys == "bonafide"] <= threshold)},
                        "far": {"rate": 100 * np.mean(scores[keys == "spoof"] > threshold)}}}
    la = {"eer": eer, "min_tdcf": 0.1 * seed, "score_file": str(score_file), "groups_file": str(groups_file),
          "operating_points": {"fixed": fixed}}
    emotional = {"eer": 20.0 + seed, "per_emotion": {e: {"eer": v} for e, v in per_emotion.items()}}
    report = {"datasets": {"la_eval": la, "emotional_set": emotional},
              "training": {"best_epoch_dev_eer": dev_eer, "final": "best.safetensors", "seed": seed}}
    (run / "eval_report.json").write_text(json.dumps(report))


@pytest.fixture
def runs(tmp_path):
    """Baseline A (3 seeds); B: A's scores with bona fide shifted up (a planted improvement);
    C: an order-preserving rescaling of A's scores (the same EERs: no difference)."""
    emotions = {1: {"angry": 30.0, "happy": 25.0, "neutral": 10.0, "sad": 12.0},
                2: {"angry": 34.0, "happy": 27.0, "neutral": 14.0, "sad": 10.0},
                3: {"angry": 32.0, "happy": 29.0, "neutral": 12.0, "sad": 14.0}}
    for seed in (1, 2, 3):
        utts, keys, scores = base_scores(seed)
        write_run(tmp_path, f"LA_A_seed{seed}", {"model": "A"}, seed, scores, keys, utts, emotions[seed], 10.0 + seed)
        write_run(tmp_path, f"LA_B_seed{seed}", {"model": "B"}, seed, scores + 2.5 * (keys == "bonafide"), keys, utts,
                  emotions[seed], 5.0)
        write_run(tmp_path, f"LA_C_seed{seed}", {"model": "C"}, seed, 3 * scores + 2, keys, utts, emotions[seed], 9.0,
                  threshold=2.0)
    return tmp_path


def test_summary_and_paired_tests(runs, tmp_path):
    out = tmp_path / "out"
    assert compare.main([str(runs / f"LA_A_seed{s}") for s in (1, 2, 3)] + [str(runs), "--output_dir", str(out),
                                                                             "--n_boot", "400"]) == 0
    result = json.loads((out / "comparison.json").read_text())
    assert result["baseline"] == "LA_A" and list(result["models"]) == ["LA_A", "LA_B", "LA_C"]
    a = result["models"]["LA_A"]["summary"]
    assert a["dev EER"]["mean"] == pytest.approx(12.0) and a["dev EER"]["sd"] == pytest.approx(1.0)
    assert a["LA eval min t-DCF"]["mean"] == pytest.approx(0.2)
    assert a["emotional set EER angry"]["mean"] == pytest.approx(32.0) and a["emotional set EER angry"]["sd"] == pytest.approx(2.0)
    # worst emotion: angry in every seed (30, 34, 32); arousal gap (angry+happy)/2 - (neutral+sad)/2
    assert a["emotional set worst-emotion EER"]["mean"] == pytest.approx(32.0)
    gaps = [(30 + 25) / 2 - 11, (34 + 27) / 2 - 12, (32 + 29) / 2 - 13]
    assert a["emotional set arousal EER gap"]["mean"] == pytest.approx(np.mean(gaps))
    assert a["LA eval FRR@thr"]["n"] == 3 and a["emotional set EER"]["mean"] == pytest.approx(22.0)
    planted = result["models"]["LA_B"]["paired_vs_baseline"]["LA eval: EER"]
    null = result["models"]["LA_C"]["paired_vs_baseline"]["LA eval: EER"]
    assert planted["difference"] < -5 and planted["p_value"] < 0.01 and planted["ci95"][1] < 0
    assert null["difference"] == pytest.approx(0.0) and null["p_value"] > 0.5
    # B's bona fide scores moved up at the same threshold: fewer genuine trials rejected, aroused ones too
    frr = result["models"]["LA_B"]["paired_vs_baseline"]["LA eval: FRR@thr"]
    aroused = result["models"]["LA_B"]["paired_vs_baseline"]["LA eval: FRR@thr high arousal"]
    assert frr["statistic"] == "frr" and frr["difference"] < -8 and frr["ci95"][1] < 0
    assert aroused["n_bonafide"] == 26 and aroused["ci95"][1] < 0
    assert "| LA_B | 3 |" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").stat().st_size > 0


def test_moved_run_folders_find_their_scores_and_a_missing_file_is_one_line(runs, tmp_path, monkeypatch, capsys):
    """Reports name score files as the run saw them (relative to where it started): a run folder
    read from elsewhere uses the file beside its report; a deleted one is a one-line error."""
    for run in runs.glob("LA_*"):
        report = json.loads((run / "eval_report.json").read_text())
        for name in ("score_file", "groups_file"):  # relative to a folder we are not in
            report["datasets"]["la_eval"][name] = f"runs/{run.name}/{Path(report['datasets']['la_eval'][name]).name}"
        (run / "eval_report.json").write_text(json.dumps(report))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    folders = [str(runs / f"LA_{m}_seed{s}") for m in "AB" for s in (1, 2, 3)]
    assert compare.main(folders + ["--output_dir", str(out), "--n_boot", "50"]) == 0
    assert json.loads((out / "comparison.json").read_text())["models"]["LA_B"]["paired_vs_baseline"]["LA eval: EER"]
    (runs / "LA_B_seed2" / "eval_scores.txt").unlink()
    capsys.readouterr()
    assert compare.main(folders + ["--output_dir", str(out), "--n_boot", "50"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "LA_B_seed2" in error and "eval_scores.txt" in error


def test_a_file_beside_the_report_wins_over_the_same_name_where_compare_runs(runs, monkeypatch):
    """A's report names its scores relative to where A ran ('eval_scores.txt'); run from inside
    B's folder, that name would be B's file: A's own, beside its report, is read."""
    from emospoof.reports.seed_comparison import read_run

    a = runs / "LA_A_seed1"
    report = json.loads((a / "eval_report.json").read_text())
    report["datasets"]["la_eval"]["score_file"] = "eval_scores.txt"
    (a / "eval_report.json").write_text(json.dumps(report))
    monkeypatch.chdir(runs / "LA_B_seed1")
    assert read_run(a).score_file("la_eval").resolve() == (a / "eval_scores.txt").resolve()


def test_unfinished_training_is_left_out_and_a_calibrated_system_is_a_model_of_its_own(runs, tmp_path, capsys):
    """A training run with a weights folder but no final weights has an eval_report.json of an
    epoch's model (eval_all_best): left out of a folder of runs with a note, refused when named.
    A run's emotion-calibrated folder shares its config but is compared as a system of its own."""
    (runs / "LA_C_seed3" / "weights").mkdir()
    for seed in (1, 2):
        (runs / f"LA_C_seed{seed}" / "weights").mkdir()
        (runs / f"LA_C_seed{seed}" / "weights" / "final.safetensors").write_bytes(b"")
    for seed in (1, 2, 3):
        run = runs / f"LA_A_seed{seed}"
        calibrated = run / "emotion_calibrated"
        calibrated.mkdir()
        (calibrated / "config.conf").write_text((run / "config.conf").read_text())
        report = json.loads((run / "eval_report.json").read_text())
        report["system"] = "emotion calibration"
        (calibrated / "eval_report.json").write_text(json.dumps(report))
    out = tmp_path / "out"
    capsys.readouterr()
    folders = [str(runs)] + [str(runs / f"LA_A_seed{s}" / "emotion_calibrated") for s in (1, 2, 3)]
    assert compare.main(folders + ["--output_dir", str(out), "--n_boot", "50"]) == 0
    assert "LA_C_seed3: training not finished; left out" in capsys.readouterr().err
    models = json.loads((out / "comparison.json").read_text())["models"]
    assert list(models) == ["LA_A", "LA_B", "LA_C", "LA_A + emotion calibration"]
    assert len(models["LA_C"]["runs"]) == 2 and len(models["LA_A + emotion calibration"]["runs"]) == 3
    assert compare.main([str(runs / "LA_C_seed3"), "--output_dir", str(out)]) == 2
    assert "training not finished" in capsys.readouterr().err


def test_paired_bootstrap_on_noisy_null_and_small_effect(tmp_path):
    """Two models drawn from the same distribution: not significant; a real but moderate shift: significant."""
    utts, keys, _ = base_scores(0, n=400)
    rng = np.random.default_rng(7)
    files = []
    for name, shift in (("a", 0.0), ("b", 0.0), ("c", 0.8)):
        scores = np.where(keys == "bonafide", 1.0 + shift, -1.0) + rng.standard_normal(len(keys))
        files.append(write_lines(tmp_path / f"{name}.txt", [f"{u} A01 {k} {s:.6f}" for u, k, s in zip(utts, keys, scores)]))
    both = paired_scores(files)
    a, b, c = (type(both)(both.scores[i:i + 1], both.is_bonafide, both.utt_ids) for i in range(3))
    assert paired_bootstrap(a, b, n_boot=500)["p_value"] > 0.05
    assert paired_bootstrap(a, c, n_boot=500)["p_value"] < 0.01


def test_the_seed_level_widens_the_interval_when_seeds_disagree():
    """Two models with the same mean EER: the baseline's three seeds agree, the model's seeds are far
    apart (half its runs much better, half much worse). The trial-only test sees the average of
    the seeds on each resample and is fairly sure there is no difference; the two-level test also
    resamples the seeds, and its interval is much wider, as it should be with so few seeds."""
    rng = np.random.default_rng(3)
    n = 400
    is_bonafide = np.arange(n) < n // 4
    utts = [f"U{i:04d}" for i in range(n)]

    def run(separation: float) -> np.ndarray:
        return np.where(is_bonafide, separation, 0.0) + rng.standard_normal(n)
    baseline = PairedScores(np.stack([run(1.6) for _ in range(4)]), is_bonafide, utts)
    model = PairedScores(np.stack([run(s) for s in (0.6, 2.6, 0.6, 2.6)]), is_bonafide, utts)
    trials_only = paired_bootstrap(baseline, model, "eer", n_boot=400, levels=("trials",))
    two_level = paired_bootstrap(baseline, model, "eer", n_boot=400)
    width = {name: test["ci95"][1] - test["ci95"][0] for name, test in (("trials", trials_only), ("two", two_level))}
    assert abs(two_level["difference"]) < 6 and two_level["ci95"][0] < 0 < two_level["ci95"][1]
    assert width["two"] > 1.5 * width["trials"], width


def test_frr_at_each_runs_threshold_counts_rejections_of_the_subset():
    """The FRR statistic applies each run's own threshold and counts only the chosen bona fide trials."""
    scores = np.array([[0.5, -0.5, 2.0, -3.0], [0.5, -0.5, 2.0, -3.0]])
    is_bonafide = np.array([True, True, True, False])
    utts = ["a", "b", "c", "d"]
    base = PairedScores(scores, is_bonafide, utts, thresholds=np.array([0.0, 0.0]))
    stricter = PairedScores(scores, is_bonafide, utts, thresholds=np.array([1.0, 1.0]))
    test = paired_bootstrap(base, stricter, "frr", n_boot=200)
    assert test["difference"] == pytest.approx(100 * (2 / 3 - 1 / 3))
    first_two = paired_bootstrap(base, stricter, "frr", subset=np.array([True, True, False, False]), n_boot=200)
    assert first_two["difference"] == pytest.approx(50.0) and first_two["n_bonafide"] == 2


def test_train_runs_missing_seeds_and_reuses_finished_ones(tmp_path, tiny_la, capsys):
    config = make_config(tmp_path, tiny_la, num_epochs=1)
    args = ["--train", str(config), "--seeds", "2", "--runs_dir", str(tmp_path / "runs"), "--output_dir",
            str(tmp_path / "out"), "--n_boot", "50"]
    assert compare.main(args) == 0
    result = json.loads((tmp_path / "out/comparison.json").read_text())
    (label, entry), = result["models"].items()
    assert entry["seeds"] == [1, 2] and len(entry["runs"]) == 2 and label == "LA_tiny_ep1_bs4"
    capsys.readouterr()
    assert compare.main(args) == 0
    assert capsys.readouterr().err.count("reusing") == 2


def test_parallel_training_logs_each_run_and_reports_every_failure_at_the_end(tmp_path, tiny_la, capsys):
    """--jobs 2: a config that cannot train (no database) fails both its seeds without stopping the
    good config's; the error names each failed run and its log, the good runs are finished and reused."""
    good = make_config(tmp_path, tiny_la, num_epochs=1)
    broken = make_config(tmp_path, tmp_path / "no_such_database", name="broken.conf", num_epochs=1)
    args = ["--train", str(good), str(broken), "--seeds", "2", "--jobs", "2", "--runs_dir", str(tmp_path / "runs"),
            "--output_dir", str(tmp_path / "out"), "--n_boot", "50"]
    assert compare.main(args) == 2
    err = capsys.readouterr().err
    failures = err.splitlines()[-1]
    assert failures.startswith("error: training failed: ") and failures.count("exit code") == 2
    for seed in (1, 2):
        assert f"LA_broken_ep1_bs4_seed{seed} (exit code" in failures
        assert (tmp_path / f"runs/LA_tiny_ep1_bs4_seed{seed}/eval_report.json").is_file()
        log = tmp_path / f"runs/logs/LA_broken_ep1_bs4_seed{seed}.log"
        assert "no_such_database" in log.read_text() and str(log) in failures
    assert compare.main(args[:2] + args[3:]) == 0
    assert capsys.readouterr().err.count("reusing") == 2


@pytest.mark.parametrize("final", ["swa.safetensors", "swa.pth", "best.safetensors", "best.pth"])
def test_dev_eer_is_the_final_models_in_new_and_older_runs(tmp_path, final):
    """Runs name their final weights swa.safetensors / best.safetensors, older ones swa.pth / best.pth."""
    from emospoof.reports.seed_comparison import Run

    training = {"best_epoch_dev_eer": 4.0, "swa_dev_eer": 3.0, "final": final}
    dev = Run(tmp_path, {}, {"training": training}, 1).metrics()["dev EER"]
    assert dev == (3.0 if final.startswith("swa") else 4.0)


def test_the_arousal_frr_gap_counts_seeds_and_trials():
    """Aroused genuine speech scored lower: a positive gap whose interval excludes zero; the same
    scores for both groups: an interval around zero."""
    rng = np.random.default_rng(5)
    n = 300
    is_bonafide = np.arange(n) < 200
    high = np.arange(n) % 2 == 0
    low = ~high
    utts = [f"U{i:03d}" for i in range(n)]
    shift = np.where(is_bonafide & high, -1.0, 0.0)
    gapped = PairedScores(np.stack([np.where(is_bonafide, 1.0, -1.0) + shift + rng.standard_normal(n)
                                    for _ in range(3)]), is_bonafide, utts, thresholds=np.zeros(3))
    even = PairedScores(np.stack([np.where(is_bonafide, 1.0, -1.0) + rng.standard_normal(n) for _ in range(3)]),
                        is_bonafide, utts, thresholds=np.zeros(3))
    result = frr_gap_interval(gapped, high, low, n_boot=300)
    assert result["gap"] > 15 and result["ci95"][0] > 0 and result["share_at_or_below_zero"] < 0.01
    assert result["n_first"] == 100 and result["n_second"] == 100
    none = frr_gap_interval(even, high, low, n_boot=300)
    assert none["ci95"][0] < 0 < none["ci95"][1]


def test_every_replicate_holds_as_many_trials_of_each_stratum_as_the_set():
    """A subset of three bona fide trials among hundreds: unstratified resampling would often draw none
    of them (an undefined FRR); stratified, each replicate keeps three, and the spoof count too."""
    from emospoof.metrics.paired import resample, strata

    is_bonafide = np.arange(300) < 200
    subset = np.zeros(300, bool)
    subset[[5, 17, 150]] = True
    parts = strata(is_bonafide, subset)
    rng = np.random.default_rng(0)
    for _ in range(50):
        index = resample(rng, parts)
        assert subset[index].sum() == 3 and (~is_bonafide[index]).sum() == 100 and index.size == 300


def test_runs_labelling_a_trial_differently_are_refused_in_one_line(tmp_path):
    from emospoof.core.errors import InputValueError

    first = write_lines(tmp_path / "a.txt", ["U1 A01 bonafide 1.0", "U2 A01 spoof -1.0"])
    second = write_lines(tmp_path / "b.txt", ["U1 A01 spoof 1.0", "U2 A01 spoof -1.0"])
    with pytest.raises(InputValueError, match="U1 is spoof here but bonafide"):
        paired_scores([first, second])


def test_a_figure_fewer_seeds_define_shows_its_count_in_markdown_and_html(tmp_path):
    from emospoof.reports.html import write_comparison_html
    from emospoof.reports.seed_comparison import format_markdown

    summary = {"LA eval min t-DCF": {"mean": 0.31234, "sd": 0.01, "n": 3},
               "LA eval FRR@thr angry": {"mean": 20.0, "sd": 5.0, "n": 2}}
    entry = {"runs": ["a", "b", "c"], "summary": summary, "paired_vs_baseline": {}, "arousal_frr_gap": {}}
    result = {"baseline": "M", "sets": ["LA eval"], "models": {"M": entry}}
    markdown = format_markdown(result)
    assert "0.3123 ± 0.0100 |" in markdown and "20.00 ± 5.00 (n=2)" in markdown
    write_comparison_html(result, tmp_path / "report.html", tmp_path / "missing.png")
    page = (tmp_path / "report.html").read_text()
    assert "0.3123 ± 0.0100<" in page and "20.00 ± 5.00 (n=2)" in page

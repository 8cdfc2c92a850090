"""ASVspoof 2019 metrics match the official definitions, hand-worked cases and the reference."""
from __future__ import annotations

import json
import subprocess
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import evaluation
from emospoof.metrics.asvspoof2019 import (CostModel, compute_det_curve, compute_eer, compute_min_tdcf,
                                           eer_bootstrap_ci, evaluate_arrays, evaluate_scores)
from emospoof.metrics.score_files import AsvScores, read_asv_scores, read_cm_scores
from tests.conftest import run_script, write_lines

CM_REFERENCE = "reference/cm_scores_synthetic_LA_eval.txt"
ASV_REFERENCE = "reference/ASVspoof2019_LA_protocols/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
EXPECTED = "reference/metrics_expected.json"


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """evaluation.py in a fresh interpreter (about 0.3 s: it imports no torch): only for what a
    process shows; the ``run_main`` fixture runs ``evaluation.main`` in this process."""
    return run_script("evaluation.py", *args, timeout=120)


# --- reference reproduction -------------------------------------------------------------


def assert_matches_expected(result: dict, expected: dict) -> None:
    assert result["eer"] == pytest.approx(expected["eer_percent"], abs=1e-6)
    assert result["min_tdcf"] == pytest.approx(expected["min_tdcf"], abs=1e-6)
    assert list(result["per_attack"]) == sorted(expected["per_attack_eer_percent"])
    for attack, eer in expected["per_attack_eer_percent"].items():
        assert result["per_attack"][attack] == pytest.approx(eer, abs=1e-6), attack


def test_library_reproduces_reference(shared_dir):
    expected = json.loads((shared_dir / EXPECTED).read_text())
    result = evaluate_scores(shared_dir / CM_REFERENCE, shared_dir / ASV_REFERENCE)
    assert_matches_expected(result, expected)
    cm = read_cm_scores(shared_dir / CM_REFERENCE)
    assert result["n_bonafide"] == np.count_nonzero(cm.keys == "bonafide")
    assert result["n_bonafide"] + result["n_spoof"] == cm.scores.size


def test_in_memory_api_agrees_with_file_api(shared_dir):
    cm = read_cm_scores(shared_dir / CM_REFERENCE)
    asv = read_asv_scores(shared_dir / ASV_REFERENCE)
    from_arrays = evaluate_arrays(list(cm.scores), list(cm.keys), list(cm.attacks), asv=asv)
    assert from_arrays == evaluate_scores(shared_dir / CM_REFERENCE, shared_dir / ASV_REFERENCE)


def test_cli_json_reproduces_reference(shared_dir, run_main):
    expected = json.loads((shared_dir / EXPECTED).read_text())
    done = run_main(evaluation.main, "--scores", shared_dir / CM_REFERENCE,
                    "--asv-scores", shared_dir / ASV_REFERENCE, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # exactly one JSON document on stdout
    assert set(result) == {"eer", "min_tdcf", "per_attack"}
    assert_matches_expected(result, expected)


def test_cli_table_lists_every_attack(shared_dir, run_main):
    done = run_main(evaluation.main, "--scores", shared_dir / CM_REFERENCE,
                    "--asv-scores", shared_dir / ASV_REFERENCE)
    assert done.returncode == 0, done.stderr
    expected = json.loads((shared_dir / EXPECTED).read_text())
    assert f"{expected['min_tdcf']:.6f}" in done.stdout
    for attack, eer in expected["per_attack_eer_percent"].items():
        assert attack in done.stdout and f"{eer:.6f}" in done.stdout


# --- EER on hand-worked cases -----------------------------------------------------------


def test_perfect_separation_gives_zero_eer():
    eer, threshold = compute_eer([1.0, 2.0, 3.0], [-1.0, 0.0])
    assert eer == 0.0
    assert threshold == 0.0  # the highest nontarget: everything above it is accepted


def test_fully_reversed_scores_give_full_eer():
    assert compute_eer([-1.0, 0.0], [1.0, 2.0, 3.0])[0] == 1.0
    result = evaluate_arrays([0.0, 1.0, 5.0, 6.0], ["spoof", "spoof", "bonafide", "bonafide"])
    assert result["eer"] == 0.0
    result = evaluate_arrays([5.0, 6.0, 0.0, 1.0], ["spoof", "spoof", "bonafide", "bonafide"])
    assert result["eer"] == 100.0


def test_det_curve_of_interleaved_scores():
    # Pooled order: 1n 3t 4n 5t 6n 7t.
    frr, far, thresholds = compute_det_curve([3.0, 5.0, 7.0], [1.0, 4.0, 6.0])
    np.testing.assert_allclose(frr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(far, [1, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(thresholds, [0.999, 1, 3, 4, 5, 6, 7])
    eer, threshold = compute_eer([3.0, 5.0, 7.0], [1.0, 4.0, 6.0])
    assert eer == pytest.approx(1 / 3)
    assert threshold == 4.0


def test_eer_is_mean_of_frr_and_far_when_they_never_meet():
    # Pooled order: 0n 1t 2n 3n. |frr - far| is smallest (1/3) after "1t": frr 1, far 2/3.
    eer, threshold = compute_eer([1.0], [0.0, 2.0, 3.0])
    assert eer == pytest.approx((1 + 2 / 3) / 2)
    assert threshold == 1.0


# --- ties -------------------------------------------------------------------------------


def test_ties_put_targets_before_nontargets():
    # Pooled order 0n 1t 2t 2t 2n 3n. Ordering the tied nontarget first instead would give
    # frr 0,0,1/3,1/3,2/3,1,1 against far 1,2/3,2/3,1/3,1/3,1/3,0 and an EER of 1/3.
    frr, far, thresholds = compute_det_curve([1.0, 2.0, 2.0], [0.0, 2.0, 3.0])
    np.testing.assert_allclose(frr, [0, 0, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(far, [1, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(thresholds, [-0.001, 0, 1, 2, 2, 2, 3])
    assert compute_eer([1.0, 2.0, 2.0], [0.0, 2.0, 3.0]) == (pytest.approx(2 / 3), 2.0)


def test_all_tied_scores_follow_the_official_convention():
    # One target and one nontarget at the same score: the official curve passes through
    # (frr, far) = (1, 1), so the EER is 100 %, not the 50 % a per-value curve would give.
    assert compute_eer([0.5], [0.5]) == (1.0, 0.5)


def test_curve_does_not_depend_on_order_within_a_class():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 5, 40).astype(float)
    nontarget = rng.integers(-2, 3, 60).astype(float)
    reference = compute_det_curve(target, nontarget)
    shuffled = compute_det_curve(rng.permutation(target), rng.permutation(nontarget))
    for a, b in zip(reference, shuffled):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(5))
def test_curve_equals_pooled_stable_sort_definition(seed):
    # The official recipe spelled out literally: pool targets then nontargets, stable sort.
    rng = np.random.default_rng(seed)
    target = rng.integers(-3, 4, rng.integers(1, 50)).astype(float)
    nontarget = rng.integers(-5, 2, rng.integers(1, 50)).astype(float)
    nontarget[0] = -np.inf
    pooled = np.concatenate((target, nontarget))
    order = np.argsort(pooled, kind="mergesort")
    is_target = order < target.size
    frr = np.concatenate(([0.0], np.cumsum(is_target) / target.size))
    far = np.concatenate(([1.0], (nontarget.size - np.cumsum(~is_target)) / nontarget.size))
    thresholds = np.concatenate(([pooled[order][0] - 0.001], pooled[order]))
    for got, want in zip(compute_det_curve(target, nontarget), (frr, far, thresholds)):
        np.testing.assert_array_equal(got, want)


# --- input checks -----------------------------------------------------------------------


@pytest.mark.parametrize("target,nontarget,message", [
    ([], [1.0], "target scores are empty"),
    ([1.0], [], "nontarget scores are empty"),
    ([1.0, np.nan], [0.0], "target scores contain NaN"),
    ([[1.0]], [0.0], "one-dimensional"),
])
def test_bad_score_arrays_are_rejected(target, nontarget, message):
    with pytest.raises(ValueError, match=message):
        compute_eer(target, nontarget)


def test_evaluate_arrays_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown CM keys"):
        evaluate_arrays([0.0, 1.0], ["bonafide", "1"])


def test_evaluate_arrays_without_attacks_or_asv():
    result = evaluate_arrays([3.0, 5.0, 7.0, 1.0, 4.0, 6.0], ["bonafide"] * 3 + ["spoof"] * 3)
    assert result["eer"] == pytest.approx(100 / 3)
    assert result["min_tdcf"] is None and result["per_attack"] == {}
    assert (result["n_bonafide"], result["n_spoof"]) == (3, 3)


def test_per_attack_eer_uses_all_bonafide_against_each_attack():
    scores = [2.0, 3.0, 0.0, 1.0, 2.5, 5.0]
    keys = ["bonafide", "bonafide", "spoof", "spoof", "spoof", "spoof"]
    attacks = ["-", "-", "B", "B", "A", "A"]
    result = evaluate_arrays(scores, keys, attacks)
    assert list(result["per_attack"]) == ["A", "B"]
    assert result["per_attack"]["B"] == 0.0
    assert result["per_attack"]["A"] == pytest.approx(100 * compute_eer([2.0, 3.0], [2.5, 5.0])[0])


# --- t-DCF ------------------------------------------------------------------------------

# ASV: targets {2, 3} and nontargets {0, 1} meet at the EER threshold 1, so
# Pfa_asv = P(non >= 1) = 1/2, Pmiss_asv = 0 and Pmiss_spoof_asv = P(spoof < 1) = 1/2.
TAR_ASV, NON_ASV, SPOOF_ASV = [2.0, 3.0], [0.0, 1.0], [0.5, 2.5]


def test_min_tdcf_by_hand():
    costs = CostModel()
    c1 = costs.p_tar * 1.0 - costs.p_non * 10.0 * 0.5  # 0.9405 - 0.0475
    c2 = 10.0 * 0.05 * 0.5
    assert (c1, c2) == (pytest.approx(0.893), pytest.approx(0.25))
    # CM pooled order 0s 1b 2b 3s: Pmiss_cm 0,0,1/2,1,1 and Pfa_cm 1,1/2,1/2,1/2,0.
    curve = [c2, c2 / 2, c1 / 2 + c2 / 2, c1 + c2 / 2, c1]
    expected = min(curve) / min(c1, c2)
    got = compute_min_tdcf([1.0, 2.0], [0.0, 3.0], TAR_ASV, NON_ASV, SPOOF_ASV)
    assert got == pytest.approx(expected) and got == pytest.approx(0.5)


def test_perfect_cm_has_zero_tdcf_and_useless_cm_has_one():
    assert compute_min_tdcf([5.0, 6.0], [0.0, 1.0], TAR_ASV, NON_ASV, SPOOF_ASV) == 0.0
    # A CM that cannot tell classes apart is no better than accepting/rejecting everything.
    assert compute_min_tdcf([0.5], [0.5], TAR_ASV, NON_ASV, SPOOF_ASV) == pytest.approx(1.0)


def test_default_cost_model_is_asvspoof2019():
    costs = CostModel()
    assert costs.p_tar == (1 - 0.05) * 0.99 and costs.p_non == (1 - 0.05) * 0.01
    assert (costs.c_miss_asv, costs.c_fa_asv, costs.c_miss_cm, costs.c_fa_cm) == (1, 10, 1, 10)
    assert costs.p_spoof + costs.p_tar + costs.p_non == pytest.approx(1.0)


def test_negative_c1_is_rejected():
    with pytest.raises(ValueError, match="C1="):
        compute_min_tdcf([1.0], [0.0], TAR_ASV, NON_ASV, SPOOF_ASV, CostModel(c_fa_asv=1000.0))


def test_asv_rejecting_every_spoof_cannot_be_normalised():
    with pytest.raises(ValueError, match="normalised"):
        compute_min_tdcf([1.0], [0.0], TAR_ASV, NON_ASV, [-5.0, -4.0])


def test_min_tdcf_rejects_empty_and_nan_inputs():
    with pytest.raises(ValueError, match="spoof ASV scores are empty"):
        compute_min_tdcf([1.0], [0.0], TAR_ASV, NON_ASV, [])
    with pytest.raises(ValueError, match="bona fide CM scores contain NaN"):
        compute_min_tdcf([np.nan], [0.0], TAR_ASV, NON_ASV, SPOOF_ASV)


# --- bootstrap --------------------------------------------------------------------------


def test_bootstrap_matches_naive_resampling():
    rng = np.random.default_rng(3)
    target = np.round(rng.normal(1.0, 1.0, 60), 1)  # rounding creates ties across classes
    nontarget = np.round(rng.normal(-1.0, 1.0, 80), 1)
    low, high = eer_bootstrap_ci(target, nontarget, n_boot=200, alpha=0.1, seed=7)
    draws = np.random.default_rng(7)
    eers = []
    for _ in range(200):
        tar = target[draws.integers(0, target.size, target.size)]
        non = nontarget[draws.integers(0, nontarget.size, nontarget.size)]
        eers.append(100 * compute_eer(tar, non)[0])
    assert (low, high) == pytest.approx(tuple(np.percentile(eers, [5, 95])), abs=1e-12)
    assert low <= 100 * compute_eer(target, nontarget)[0] <= high


def test_bootstrap_is_seeded_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = (rng.normal(1, 1, 50), rng.normal(-1, 1, 50))
    large = (rng.normal(1, 1, 5000), rng.normal(-1, 1, 5000))
    assert eer_bootstrap_ci(*small, n_boot=100) == eer_bootstrap_ci(*small, n_boot=100)
    small_low, small_high = eer_bootstrap_ci(*small, n_boot=100)
    large_low, large_high = eer_bootstrap_ci(*large, n_boot=100)
    assert large_high - large_low < small_high - small_low
    with pytest.raises(ValueError, match="alpha"):
        eer_bootstrap_ci(*small, alpha=1.5)


# --- readers ----------------------------------------------------------------------------


def test_readers_parse_valid_files(tmp_path):
    cm = read_cm_scores(write_lines(tmp_path / "cm.txt", [
        "U1 - bonafide 1.5", "", "U2 A07 spoof -2e-1",
    ]))
    assert list(cm.utt_ids) == ["U1", "U2"] and list(cm.attacks) == ["-", "A07"]
    np.testing.assert_array_equal(cm.scores, [1.5, -0.2])
    asv = read_asv_scores(write_lines(tmp_path / "asv.txt", [
        "bonafide target 3", "bonafide nontarget 1", "A07 spoof 2", "X target 4",
    ]))
    np.testing.assert_array_equal(asv.target, [3.0, 4.0])
    assert isinstance(asv, AsvScores)
    assert asv.nontarget.tolist() == [1.0] and asv.spoof.tolist() == [2.0]


@pytest.mark.parametrize("line,problem", [
    ("U2 A07 spoof", "line 2: expected 4 fields"),
    ("U2 A07 fake 0.1", "line 2: unknown key 'fake'"),
    ("U2 A07 spoof abc", "line 2: score 'abc' is not a number"),
    ("U2 A07 spoof nan", "line 2: score is NaN"),
])
def test_cm_reader_names_file_line_and_problem(tmp_path, line, problem):
    path = write_lines(tmp_path / "cm.txt", ["U1 - bonafide 1.0", line])
    with pytest.raises(ValueError) as error:
        read_cm_scores(path)
    assert str(error.value).startswith(f"{path}: ") and problem in str(error.value)


def test_readers_require_the_trial_types_the_metrics_need(tmp_path):
    with pytest.raises(ValueError, match="no 'spoof' trials"):
        read_cm_scores(write_lines(tmp_path / "cm.txt", ["U1 - bonafide 1.0"]))
    with pytest.raises(ValueError, match="no 'nontarget' trials"):
        read_asv_scores(write_lines(tmp_path / "asv.txt", ["b target 1", "A07 spoof 0"]))
    with pytest.raises(ValueError, match="no scores found"):
        read_asv_scores(write_lines(tmp_path / "empty.txt", []))


# --- CLI --------------------------------------------------------------------------------


@pytest.fixture
def small_cm_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "cm.txt", [
        "U1 - bonafide 3", "U2 - bonafide 5", "U3 - bonafide 7",
        "U4 A08 spoof 1", "U5 A07 spoof 4", "U6 A08 spoof 6",
    ])


def test_cli_without_asv_scores_reports_eer_only(small_cm_file, run_main):
    expected = evaluate_scores(small_cm_file)
    done = run_main(evaluation.main, "--scores", small_cm_file, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["min_tdcf"] is None
    assert result["eer"] == pytest.approx(expected["eer"])
    assert result["per_attack"] == pytest.approx(expected["per_attack"])
    assert "needs ASV scores" in done.stderr

    done = run_main(evaluation.main, "--scores", small_cm_file)
    assert done.returncode == 0, done.stderr
    assert f"{expected['eer']:.6f}" in done.stdout and "needs ASV scores" in done.stdout
    assert "A07" in done.stdout and "A08" in done.stdout


def test_main_returns_exit_code_in_process(small_cm_file, capsys):
    assert evaluation.main(["--scores", str(small_cm_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["min_tdcf"] is None


@pytest.mark.parametrize("content", [
    b"U1 - bonafide 1.0\nthis line is garbled\n",
    b"\x89PNG\r\n\x1a\n\xff\xfe binary",
])
def test_cli_garbled_file_gives_one_line_error(tmp_path, content, run_main):
    path = tmp_path / "garbled.txt"
    path.write_bytes(content)
    done = run_main(evaluation.main, "--scores", path, "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ")
    assert "Traceback" not in done.stderr


def test_cli_missing_file_gives_one_line_error(tmp_path, small_cm_file, run_main):
    """The first case as a process (evaluation.py's one kept: ``sys.exit(main())`` under
    ``if __name__ == "__main__"`` must make the exit code 2 of the process), the second in this one."""
    missing = tmp_path / "nope.txt"
    for args, run in ((["--scores", missing], run_cli),
                      (["--scores", small_cm_file, "--asv-scores", missing], partial(run_main, evaluation.main))):
        done = run(*args)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [f"error: {missing}: No such file or directory"]

"""ASVspoof 5 metrics: the official package's results on ../shared/reference/asvspoof5 to 1e-6
(library and evaluation.py), hand-worked cases, the fast t-EER against a plain scan, and one-line
errors for unusable package files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import evaluation
from emospoof.metrics.asvspoof5 import (P_SPOOF, SasvCosts, a_dcf, act_dcf, bayes_threshold, cllr, evaluate_cm_files,
                                        evaluate_sasv_files, min_dcf, t_eer, three_class_curves)
from emospoof.metrics.asvspoof2019 import compute_det_curve
from emospoof.metrics.score_files import ScoreFileError
from tests.conftest import write_lines

REFERENCE = "reference/asvspoof5"


def reference(shared_dir):
    folder = shared_dir / REFERENCE
    return folder, json.loads((folder / "metrics_expected.json").read_text())


def test_track1_reproduces_the_package(shared_dir):
    folder, expected = reference(shared_dir)
    got = evaluate_cm_files(folder / "cm_scores.tsv", folder / "cm_keys.tsv")
    track1 = expected["track1"]
    assert track1["cost_model"] == {"Pspoof": P_SPOOF, "Cmiss": 1, "Cfa": 10}
    for key, name in (("min_dcf", "min_dcf"), ("act_dcf", "act_dcf"), ("cllr", "cllr_bits"), ("eer", "eer_percent")):
        assert got[key] == pytest.approx(track1[name], abs=1e-6), key


def test_track2_reproduces_the_package(shared_dir):
    folder, expected = reference(shared_dir)
    got = evaluate_sasv_files(folder / "sasv_scores.tsv", folder / "sasv_keys.tsv")
    track2 = expected["track2"]
    for key, name in (("a_dcf", "a_dcf"), ("min_tdcf", "min_tdcf"), ("t_eer", "t_eer_percent")):
        assert got[key] == pytest.approx(track2[name], abs=1e-6), key


def test_cli_prints_the_reference_json(shared_dir, run_main):
    folder, expected = reference(shared_dir)
    done = run_main(evaluation.main, "--scores", folder / "cm_scores.tsv", "--keys", folder / "cm_keys.tsv",
                    "--metrics", "asvspoof5", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"min_dcf", "act_dcf", "cllr", "eer"}
    assert result["cllr"] == pytest.approx(expected["track1"]["cllr_bits"], abs=1e-6)
    done = run_main(evaluation.main, "--sasv", folder / "sasv_scores.tsv", "--sasv-keys", folder / "sasv_keys.tsv",
                    "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"a_dcf", "min_tdcf", "t_eer"}
    assert result["t_eer"] == pytest.approx(expected["track2"]["t_eer_percent"], abs=1e-6)


def test_hand_worked_track1_values():
    # Threshold -log(0.95 / 0.5) = -0.642: one of two bona fide below it, one of two spoofs above.
    assert bayes_threshold() == pytest.approx(-math.log(1.9))
    assert act_dcf([-1.0, 5.0], [0.0, -5.0]) == pytest.approx((0.95 * 0.5 + 0.5 * 0.5) / 0.5)
    # Perfect separation: min DCF 0; everything scored 0 (no information): Cllr exactly 1 bit.
    assert min_dcf([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert cllr([0.0, 0.0], [0.0]) == pytest.approx(1.0)
    # Reversed scores: the best threshold rejects (or accepts) everything, costing 1.
    assert min_dcf([0.0, 1.0], [2.0, 3.0]) == pytest.approx(1.0)
    # Far-off scores stay finite where log1p(exp(-x)) would overflow.
    assert math.isfinite(cllr([-1000.0], [1000.0])) and cllr([-1000.0], [1000.0]) > 1000


def test_a_dcf_hand_worked():
    costs = SasvCosts()
    # A threshold between targets and the rest costs 0.
    assert a_dcf([3.0, 4.0], [0.0], [1.0]) == 0.0
    # Targets below everything: accepting all (0.0095 x 10 + 0.05 x 10 = 0.595) is the cheapest
    # point and also the normaliser, so a-DCF is 1.
    assert costs.c_fa * costs.p_nontarget + costs.c_fa_spoof * costs.p_spoof == pytest.approx(0.595)
    assert a_dcf([0.0], [3.0], [4.0]) == pytest.approx(1.0)
    # Rejecting spoofs only: the non-target false alarms remain, 0.095 / 0.595.
    assert a_dcf([5.0], [3.0], [0.0]) == 0.0
    assert a_dcf([2.0], [3.0], [0.0]) == pytest.approx(0.095 / 0.595)


def plain_t_eer(asv: list[np.ndarray], cm: list[np.ndarray], rho: float = 0.5) -> float:
    """The t-EER by the definition, scanning every CM point for every ASV threshold."""
    p_miss, p_fa_non, p_fa_spf = three_class_curves(*asv)
    x, y, _ = compute_det_curve(np.concatenate(cm[:2]), cm[2])
    best, value = np.inf, None
    for i in range(p_miss.size):
        h = (x + (1 - x) * p_miss[i]) - ((1 - rho) * (1 - x) * p_fa_non[i] + rho * y * p_fa_spf[i])
        j = int(np.argmin(np.abs(h)))
        if p_miss[i] < (1 - rho) * p_fa_non[i] + rho * p_fa_spf[i]:
            with np.errstate(divide="ignore", invalid="ignore"):
                criterion = abs(p_fa_non[i] / p_fa_spf[i] - y[j] / (1 - x[j]))
            if criterion < best:
                best, value = criterion, p_fa_spf[i] * y[j]
    return 100 * value


def test_t_eer_matches_a_plain_scan_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(25):
        n = int(rng.integers(5, 300))
        decimals = int(rng.integers(0, 3))  # few decimals: many tied scores

        def draw(mean: float, size: int) -> np.ndarray:
            return np.round(rng.normal(mean, 1.0, size), decimals)
        asv = [draw(2, n), draw(-1, n // 2 + 1), draw(1, n)]
        cm = [draw(1, n), draw(1, n // 2 + 1), draw(-1, n)]
        assert t_eer(*asv, *cm) == plain_t_eer(asv, cm)


def test_unusable_package_files_are_one_line(tmp_path, run_main):
    scores = write_lines(tmp_path / "s.tsv", ["filename\tcm-score", "E_1\t0.5", "E_2\tabc"])
    keys = write_lines(tmp_path / "k.tsv", ["filename\tcm-label", "E_1\tbonafide", "E_2\tspoof"])
    with pytest.raises(ScoreFileError, match=r"s.tsv: line 3: cm-score 'abc' is not a number"):
        evaluate_cm_files(scores, keys)
    write_lines(scores, ["filename\tcm-score", "E_1\t0.5", "E_3\t0.1"])
    with pytest.raises(ScoreFileError, match=r"s.tsv: scores and keys .* cover different trials \(e.g. E_3\)"):
        evaluate_cm_files(scores, keys)
    write_lines(keys, ["filename\tcm-label", "E_1\tbonafide", "E_3\tgenuine"])
    with pytest.raises(ScoreFileError, match=r"k.tsv: line 3: cm-label 'genuine' is not one of bonafide, spoof"):
        evaluate_cm_files(scores, keys)
    done = run_main(evaluation.main, "--scores", scores, "--keys", tmp_path / "missing.tsv", "--metrics", "asvspoof5")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "missing.tsv" in done.stderr

"""Calibration to LLRs (logistic regression fitted on dev) and learned (logistic) fusion, on
synthetic scores whose true log-likelihood ratios are known."""
from __future__ import annotations

import json

import numpy as np
import pytest

import evaluation as evaluation_module
from emospoof.metrics.asvspoof5 import act_dcf, cllr, min_dcf
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.calibration import Calibration, fit_calibration
from emospoof.metrics.fusion import fuse_score_files
from emospoof.metrics.score_files import read_cm_scores
from tests.conftest import write_lines

MU = 2.0  # classes N(+MU, 2 MU) and N(-MU, 2 MU): the LLR of a score s is exactly s


def calibrated_llrs(rng: np.random.Generator, n_bonafide: int, n_spoof: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores that are perfectly calibrated LLRs, and the bona fide indicator."""
    sd = np.sqrt(2 * MU)
    scores = np.concatenate([rng.normal(MU, sd, n_bonafide), rng.normal(-MU, sd, n_spoof)])
    return scores, np.arange(n_bonafide + n_spoof) < n_bonafide


def test_fit_recovers_the_map_and_is_monotone():
    rng = np.random.default_rng(0)
    llr, is_bonafide = calibrated_llrs(rng, 4000, 12000)
    raw = 5 * llr + 3  # a model whose scores rank well but mean nothing as LLRs
    calibration = fit_calibration(raw, is_bonafide)
    assert calibration.scale == pytest.approx(1 / 5, rel=0.05)
    assert calibration.offset == pytest.approx(-3 / 5, abs=0.1)
    grid = np.linspace(-50, 50, 1001)
    assert np.all(np.diff(calibration.apply(grid)) > 0)  # monotone: ranking and EER unchanged


def test_cllr_after_is_not_worse_on_held_back_data():
    rng = np.random.default_rng(1)
    dev_llr, dev_labels = calibrated_llrs(rng, 2000, 6000)
    eval_llr, eval_labels = calibrated_llrs(rng, 2000, 6000)
    for scale, offset in ((5.0, 3.0), (0.2, -4.0), (1.0, 0.0)):
        calibration = fit_calibration(scale * dev_llr + offset, dev_labels)
        raw = scale * eval_llr + offset
        after = calibration.apply(raw)
        before_cllr = cllr(raw[eval_labels], raw[~eval_labels])
        after_cllr = cllr(after[eval_labels], after[~eval_labels])
        assert after_cllr <= before_cllr + 1e-3, (scale, offset)
        assert compute_eer(after[eval_labels], after[~eval_labels])[0] == compute_eer(raw[eval_labels], raw[~eval_labels])[0]
    # The badly scaled scores gain a lot.
    calibration = fit_calibration(5 * dev_llr + 3, dev_labels)
    raw = 5 * eval_llr + 3
    assert cllr(raw[eval_labels], raw[~eval_labels]) > 2 * cllr(*(calibration.apply(raw)[m] for m in (eval_labels, ~eval_labels)))


def test_act_dcf_meets_min_dcf_for_calibrated_llrs():
    llr, is_bonafide = calibrated_llrs(np.random.default_rng(2), 50000, 50000)
    bonafide, spoof = llr[is_bonafide], llr[~is_bonafide]
    assert act_dcf(bonafide, spoof) - min_dcf(bonafide, spoof) == pytest.approx(0, abs=0.01)
    shifted = llr + 3  # the same ranking, miscalibrated: the Bayes threshold is now wrong
    assert act_dcf(shifted[is_bonafide], shifted[~is_bonafide]) > min_dcf(bonafide, spoof) + 0.1


def test_reversed_dev_scores_are_refused():
    llr, is_bonafide = calibrated_llrs(np.random.default_rng(3), 100, 100)
    with pytest.raises(ValueError, match="rank spoofs above bona fide"):
        fit_calibration(-llr, is_bonafide)
    with pytest.raises(ValueError, match="bona fide and spoof"):
        fit_calibration(llr, np.ones_like(is_bonafide))
    assert Calibration(2.0, 1.0).apply([0.0, 1.0]).tolist() == [1.0, 3.0]


def write_score_file(path, scores, is_bonafide, prefix="U"):
    return write_lines(path, [f"{prefix}{i} {'-' if b else 'A01'} {'bonafide' if b else 'spoof'} {s:.6f}"
                              for i, (s, b) in enumerate(zip(scores, is_bonafide))])


def test_calibrate_cli(tmp_path, run_main):
    rng = np.random.default_rng(4)
    dev = write_score_file(tmp_path / "dev.txt", *(lambda s, b: (4 * s - 2, b))(*calibrated_llrs(rng, 300, 900)))
    evaluation = write_score_file(tmp_path / "eval.txt", *(lambda s, b: (4 * s - 2, b))(*calibrated_llrs(rng, 300, 900)))
    out = tmp_path / "llr.txt"
    done = run_main(evaluation_module.main, "--calibrate", dev, "--apply", evaluation, "--output", out, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["eval"]["after"]["cllr"] < result["eval"]["before"]["cllr"]
    assert result["eval"]["after"]["min_dcf"] == pytest.approx(result["eval"]["before"]["min_dcf"])
    calibrated = read_cm_scores(out)
    assert calibrated.utt_ids.tolist() == read_cm_scores(evaluation).utt_ids.tolist()
    assert np.allclose(calibrated.scores, result["dev"]["scale"] * read_cm_scores(evaluation).scores
                       + result["dev"]["offset"], atol=1e-5)
    done = run_main(evaluation_module.main, "--calibrate", dev, "--apply", tmp_path / "none.txt")
    assert done.returncode == 2 and "none.txt" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_logistic_fusion_learns_weights_on_dev(tmp_path, run_main):
    """Two runs: one informative, one mostly noise with a large scale. Learned weights beat the
    label-free mean, which lets the noisy run's scale count."""
    rng = np.random.default_rng(5)

    def runs(n: int, name: str) -> list:
        is_bonafide = np.arange(2 * n) < n
        good = 1.5 * is_bonafide + rng.normal(size=2 * n)
        noisy = 10 * (0.2 * is_bonafide + rng.normal(size=2 * n))
        return [write_score_file(tmp_path / f"{name}{k}.txt", s, is_bonafide) for k, s in enumerate((good, noisy))]

    dev, evaluation = runs(1500, "dev"), runs(1500, "eval")
    learned = fuse_score_files(evaluation, "logistic", tmp_path / "logistic.txt", dev)
    mean = fuse_score_files(evaluation, "mean", tmp_path / "mean.txt")

    def eer(cm):
        return compute_eer(cm.scores[cm.keys == "bonafide"], cm.scores[cm.keys == "spoof"])[0]
    assert eer(learned) < eer(mean) - 0.01
    assert eer(learned) <= eer(read_cm_scores(evaluation[0])) + 0.01
    with pytest.raises(ValueError, match="give the dev score files of the 2 runs"):
        fuse_score_files(evaluation, "logistic", tmp_path / "x.txt")
    done = run_main(evaluation_module.main, "--fuse", *evaluation, "--method", "logistic", "--fuse-dev", *dev,
                    "--output", tmp_path / "cli.txt", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["eer"] == pytest.approx(100 * eer(learned), abs=1e-4)


def test_emotion_aware_calibration_recovers_a_known_emotion_dependent_offset():
    """Aroused speech scores 2 lower than calm speech for the same evidence: the fit finds that
    offset as the arousal covariate's weight relative to the score's (1 per unit of arousal, which
    is -1 or +1), and at one threshold the calibrated scores reject aroused and calm genuine speech
    alike."""
    from emospoof.metrics.emotion_calibration import fit_emotion_calibration

    rng = np.random.default_rng(0)
    n = 4000
    is_bonafide = rng.random(n) < 0.4
    arousal = rng.choice([-1.0, 1.0], n)
    evidence = np.where(is_bonafide, 2.0, -2.0) + rng.standard_normal(n)
    scores = evidence - 1.0 * (arousal + 1)  # aroused speech looks less genuine to the detector
    calibration = fit_emotion_calibration(scores, arousal[:, None], is_bonafide)
    correction = calibration.covariate_weights[0] / calibration.scale
    assert correction == pytest.approx(1.0, abs=0.1)
    llr = calibration.apply(scores, arousal[:, None])
    threshold = np.median(llr[is_bonafide])
    frr = {a: np.mean(llr[is_bonafide & (arousal == a)] <= threshold) for a in (-1.0, 1.0)}
    raw_threshold = np.median(scores[is_bonafide])
    raw_frr = {a: np.mean(scores[is_bonafide & (arousal == a)] <= raw_threshold) for a in (-1.0, 1.0)}
    assert raw_frr[1.0] - raw_frr[-1.0] > 0.5  # before: aroused genuine speech rejected far more often
    assert abs(frr[1.0] - frr[-1.0]) < raw_frr[1.0] - raw_frr[-1.0] - 0.3

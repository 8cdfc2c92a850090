"""Error rates at one threshold per group: a set whose bona fide scores depend on the emotion,
counted by hand at a fixed threshold and at the set's own EER threshold; the arousal contrast; a
set of genuine speech only."""
from __future__ import annotations

import numpy as np
import pytest

from emospoof.metrics.asvspoof2019 import compute_det_curve, compute_eer
from emospoof.metrics.groups import dataset_report, one_class_report
from emospoof.metrics.operating_point import accepted, arousal_contrast, operating_point, rate_cell

# Genuine angry and happy speech scores low (the detector takes it for fake), calm and sad high;
# the spoofs' scores do not depend on their emotion.
BONAFIDE = {"angry": [-2.0, -1.0, 0.5, 1.5], "happy": [-1.5, 0.2, 0.8, 2.5],
            "calm": [0.9, 1.2, 2.0, 3.0], "sad": [0.4, 1.1, 1.8, 2.2]}
SPOOF = {"angry": [-3.0, -0.5, 0.6], "happy": [-2.5, -1.2, 0.1], "calm": [-2.8, -0.2, 0.7], "sad": [-1.9, 0.3, -0.9]}


def labelled_set():
    scores, is_bonafide, emotions, attacks = [], [], [], []
    for emotion in BONAFIDE:
        for value in BONAFIDE[emotion]:
            scores.append(value), is_bonafide.append(True), emotions.append(emotion), attacks.append("-")
        for i, value in enumerate(SPOOF[emotion]):
            scores.append(value), is_bonafide.append(False), emotions.append(emotion), attacks.append(f"A0{i}")
    return np.array(scores), np.array(is_bonafide), emotions, attacks


def hand_count(threshold: float) -> dict:
    """FRR (bona fide at or below the threshold) and FAR (spoofs above it) per emotion, in %."""
    return {e: (100 * sum(v <= threshold for v in BONAFIDE[e]) / len(BONAFIDE[e]),
                100 * sum(v > threshold for v in SPOOF[e]) / len(SPOOF[e])) for e in BONAFIDE}


@pytest.mark.parametrize("kind", ["fixed", "set_eer"])
def test_rates_per_emotion_match_a_hand_count(kind):
    scores, is_bonafide, emotions, attacks = labelled_set()
    report = dataset_report(scores, is_bonafide, attacks, emotions, [()] * len(scores), speakers=["-"] * len(scores),
                            fixed_threshold=(0.35, "given"))
    point = report["operating_points"][kind]
    threshold = 0.35 if kind == "fixed" else compute_eer(scores[is_bonafide], scores[~is_bonafide])[1]
    assert point["threshold"] == pytest.approx(threshold)
    assert point["source"] == ("given" if kind == "fixed" else "the set's EER")
    expected = hand_count(threshold)
    for emotion, (frr, far) in expected.items():
        cells = point["groups"]["emotion"][emotion]
        assert cells["frr"]["rate"] == pytest.approx(frr) and cells["far"]["rate"] == pytest.approx(far)
        assert cells["frr"]["n"] == 4 and cells["far"]["n"] == 3
        assert cells["frr"]["ci95"][0] <= frr <= cells["frr"]["ci95"][1]
    pooled_frr = 100 * np.mean(scores[is_bonafide] <= threshold)
    assert point["pooled"]["frr"]["rate"] == pytest.approx(pooled_frr)
    high = 100 * np.mean([v <= threshold for e in ("angry", "happy") for v in BONAFIDE[e]])
    low = 100 * np.mean([v <= threshold for e in ("calm", "sad") for v in BONAFIDE[e]])
    assert point["groups"]["arousal"]["high"]["frr"]["rate"] == pytest.approx(high)
    assert point["arousal_frr"]["gap_points"] == pytest.approx(high - low)
    assert point["worst_emotion_frr"]["emotion"] == max(expected, key=lambda e: (expected[e][0], e == "angry"))
    # attacks: spoofs only, so FRR n/a and FAR per attack
    assert point["groups"]["attack"]["A00"]["frr"] is None and point["groups"]["attack"]["A00"]["far"]["n"] == 4


def test_at_the_eer_threshold_the_rates_are_the_det_point():
    """The set's EER threshold and the 'score > threshold is accepted' rule reproduce the EER."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(1, 1, 300), rng.normal(-1, 1, 700)])
    is_bonafide = np.arange(1000) < 300
    eer, threshold = compute_eer(scores[is_bonafide], scores[~is_bonafide])
    frr, far, thresholds = compute_det_curve(scores[is_bonafide], scores[~is_bonafide])
    point = operating_point(scores, is_bonafide, {}, threshold, "eer")
    i = int(np.argmin(np.abs(frr - far)))
    assert point["pooled"]["frr"]["rate"] == pytest.approx(100 * frr[i])
    assert point["pooled"]["far"]["rate"] == pytest.approx(100 * far[i])
    assert (point["pooled"]["frr"]["rate"] + point["pooled"]["far"]["rate"]) / 2 == pytest.approx(100 * eer)


def test_wilson_intervals_stay_honest_at_no_errors():
    """Newcombe's examples (Statistics in Medicine 1998: 81/263 -> [25.53, 36.62] %, 1/29 ->
    [0.61, 17.18] %) and 0/10, whose upper bound is z^2 / (n + z^2) = 27.75 %; 0 of 40 is not
    certainty."""
    for errors, n, (low, high) in ((0, 10, (0.0, 27.75)), (1, 29, (0.61, 17.18)), (81, 263, (25.53, 36.62))):
        cell = rate_cell(errors, n)
        assert cell["ci95"] == pytest.approx([low, high], abs=0.06)
    assert rate_cell(0, 40)["ci95"][1] > 8 and rate_cell(40, 40)["ci95"][0] < 92
    assert rate_cell(0, 0) is None


def test_arousal_ratio_and_an_unbounded_one():
    rng = np.random.default_rng(1)
    high, low = rate_cell(8, 20), rate_cell(2, 20)
    contrast = arousal_contrast(high, low, rng)
    assert contrast["ratio"] == pytest.approx(4.0) and contrast["gap_points"] == pytest.approx(30.0)
    assert contrast["gap_ci95"][0] < 30 < contrast["gap_ci95"][1]
    none_rejected = arousal_contrast(high, rate_cell(0, 20), rng)
    assert none_rejected["ratio"] is None and none_rejected["ratio_ci95"][1] is None
    assert none_rejected["gap_points"] == pytest.approx(40.0)


def test_a_genuine_only_set_is_reported_at_the_fixed_threshold_not_refused():
    emotions = [e for e in BONAFIDE for _ in BONAFIDE[e]]
    scores = np.array([v for e in BONAFIDE for v in BONAFIDE[e]])
    speakers = ["Actor_11", "Actor_12"] * 8
    report = one_class_report(scores, np.ones(16, bool), ["-"] * 16, emotions, speakers, [()] * 16, (0.35, "dev EER"))
    assert report["one_class"] == "bonafide" and report["n_bonafide"] == 16
    expected = hand_count(0.35)
    point = report["operating_points"]["fixed"]
    for emotion, (frr, _) in expected.items():
        assert point["groups"]["emotion"][emotion]["frr"]["rate"] == pytest.approx(frr)
        assert point["groups"]["emotion"][emotion]["far"] is None
    assert report["acceptance"] == pytest.approx(100 * np.mean(accepted(scores, 0.35)))
    assert report["frr"] == pytest.approx(100 - report["acceptance"])
    assert set(point["groups"]["speaker"]) == {"Actor_11", "Actor_12"}
    without = one_class_report(scores, np.ones(16, bool), ["-"] * 16, emotions, speakers, [()] * 16, None)
    assert without["operating_points"] == {} and "threshold" in without["note"]

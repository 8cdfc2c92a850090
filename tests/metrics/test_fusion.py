"""Score fusion across runs (evaluation.py --fuse): alignment checks, both methods, the CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.fusion import fuse_score_files, fuse_score_matrix
from emospoof.metrics.score_files import read_cm_scores
from evaluation import main
from tests.conftest import write_lines


N_PER_CLASS = 2000
ATTACKS = ("A07", "A08")


def trials(rng: np.random.Generator) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """Utterance ids, attacks, keys and the bona fide indicator of a synthetic trial list."""
    utts = [f"LA_E_{i:07d}" for i in range(2 * N_PER_CLASS)]
    is_bonafide = np.arange(2 * N_PER_CLASS) < N_PER_CLASS
    attacks = ["-" if b else ATTACKS[i % 2] for i, b in enumerate(is_bonafide)]
    keys = ["bonafide" if b else "spoof" for b in is_bonafide]
    order = rng.permutation(len(utts))
    return [utts[i] for i in order], [attacks[i] for i in order], [keys[i] for i in order], is_bonafide[order]


def write_scores(path: Path, utts, attacks, keys, scores, order=None) -> Path:
    order = range(len(utts)) if order is None else order
    return write_lines(path, [f"{utts[i]} {attacks[i]} {keys[i]} {scores[i]:.6f}" for i in order])


def noisy_runs(tmp_path: Path, n_runs: int = 2) -> tuple[list[Path], np.ndarray]:
    """Runs that each see the class through their own independent noise, with different
    offsets and scales (as checkpoints of different seeds would), each file in its own order."""
    rng = np.random.default_rng(0)
    utts, attacks, keys, is_bonafide = trials(rng)
    paths = []
    for run in range(n_runs):
        scores = (1.0 * is_bonafide + rng.normal(size=is_bonafide.size)) * (1 + 3 * run) - 2 * run
        paths.append(write_scores(tmp_path / f"run{run}.txt", utts, attacks, keys, scores,
                                  order=rng.permutation(len(utts))))
    return paths, is_bonafide


def file_eer(path: Path) -> float:
    cm = read_cm_scores(path)
    return 100 * compute_eer(cm.scores[cm.keys == "bonafide"], cm.scores[cm.keys == "spoof"])[0]


@pytest.mark.parametrize("method", ["mean", "softmax-vote"])
def test_fusing_independent_runs_lowers_the_eer(tmp_path, method):
    paths, _ = noisy_runs(tmp_path, n_runs=3)
    output = tmp_path / "fused.txt"
    fused = fuse_score_files(paths, method, output)
    single = [file_eer(p) for p in paths]
    # One run at d' = 1 has an EER near 31 %; three independent ones averaged near 19 %.
    assert file_eer(output) < min(single) - 5, (file_eer(output), single)
    # The fused file keeps the first run's order, keys and attacks.
    first, written = read_cm_scores(paths[0]), read_cm_scores(output)
    np.testing.assert_array_equal(written.utt_ids, first.utt_ids)
    np.testing.assert_array_equal(written.keys, first.keys)
    np.testing.assert_array_equal(written.attacks, first.attacks)
    np.testing.assert_allclose(written.scores, fused.scores, atol=1e-6)


def test_mean_does_not_let_a_large_scale_run_dominate():
    rng = np.random.default_rng(1)
    is_bonafide = np.arange(4000) < 2000
    runs = np.stack([is_bonafide + rng.normal(size=4000) for _ in range(2)])
    runs[1] *= 1000.0
    fused = fuse_score_matrix(runs, "mean")
    eer = compute_eer(fused[is_bonafide], fused[~is_bonafide])[0]
    alone = compute_eer(runs[1][is_bonafide], runs[1][~is_bonafide])[0]
    assert eer < alone - 0.05


def test_softmax_vote_of_confident_runs_is_the_majority():
    # Confident runs (|log-odds| 50): sigmoid would round to exactly 0 or 1 and a naive
    # log-odds of the mean would be infinite; the soft vote must equal the majority instead.
    votes = np.array([[50.0, 50.0, -50.0, -50.0], [50.0, -50.0, 50.0, -50.0], [-50.0, 50.0, 50.0, -50.0]])
    fused = fuse_score_matrix(votes, "softmax-vote")
    assert np.all(np.isfinite(fused))
    np.testing.assert_array_equal(fused > 0, (votes > 0).sum(axis=0) >= 2)
    # Two runs at p = 0.9 and one at p = 0.2: mean p = 2/3, log-odds log 2.
    logit = np.log(np.array([[9.0], [9.0], [0.25]]))
    assert fuse_score_matrix(logit, "softmax-vote")[0] == pytest.approx(np.log(2.0))


def test_constant_run_cannot_be_standardised():
    with pytest.raises(ValueError, match="same score"):
        fuse_score_matrix(np.array([[1.0, 2.0], [3.0, 3.0]]), "mean")


def mismatched_files(tmp_path: Path, change: str) -> list[Path]:
    lines = ["u1 - bonafide 1.0", "u2 A07 spoof -1.0", "u3 A08 spoof -2.0"]
    other = list(lines)
    if change == "missing":
        other = other[:2]
    elif change == "extra":
        other.append("u4 A08 spoof 0.5")
    elif change == "renamed":
        other[2] = "u9 A08 spoof -2.0"
    elif change == "duplicate":
        other.append("u2 A07 spoof -1.0")
    elif change == "key":
        other[1] = "u2 - bonafide -1.0"
    elif change == "attack":
        other[1] = "u2 A19 spoof -1.0"
    return [write_lines(tmp_path / "a.txt", lines), write_lines(tmp_path / "b.txt", other)]


@pytest.mark.parametrize("change,problem", [
    ("missing", "covers other utterances than .*a.txt \\(e.g. u3\\)"),
    ("extra", "covers other utterances than .*a.txt \\(e.g. u4\\)"),
    ("renamed", "covers other utterances than .*a.txt \\(e.g. u9\\)"),
    ("duplicate", "listed more than once"),
    ("key", "u2 has key 'bonafide' but 'spoof'"),
    ("attack", "u2 has attack 'A19' but 'A07'"),
])
def test_mismatched_files_give_one_line_error_naming_the_file(tmp_path, change, problem, capsys):
    paths = mismatched_files(tmp_path, change)
    assert main(["--fuse", *map(str, paths), "--output", str(tmp_path / "f.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {paths[1]}: ")
    assert re.search(problem, err), err


def test_fused_file_may_not_overwrite_an_input(tmp_path, capsys):
    paths = mismatched_files(tmp_path, "none")
    before = paths[0].read_text()
    assert main(["--fuse", *map(str, paths), "--output", str(paths[0])]) == 2
    assert "overwrite" in capsys.readouterr().err and paths[0].read_text() == before


def test_cli_writes_fused_file_and_reports_runs_and_fusion(tmp_path, run_main):
    paths, _ = noisy_runs(tmp_path)
    output = tmp_path / "fused.txt"
    done = run_main(main, "--fuse", *paths, "--method", "softmax-vote", "--output", output, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["method"] == "softmax-vote" and report["output"] == str(output)
    assert [r["path"] for r in report["runs"]] == [str(p) for p in paths]
    assert [r["eer"] for r in report["runs"]] == pytest.approx([file_eer(p) for p in paths])
    assert report["eer"] == pytest.approx(file_eer(output))
    assert set(report["per_attack"]) == set(ATTACKS)
    table = run_main(main, "--fuse", *paths, "--output", output)
    assert table.returncode == 0 and "fused (mean)" in table.stdout and "A08" in table.stdout


def test_fusion_needs_two_files(tmp_path, capsys):
    paths = mismatched_files(tmp_path, "none")
    assert main(["--fuse", str(paths[0]), "--output", str(tmp_path / "f.txt")]) == 2
    assert "at least two" in capsys.readouterr().err


def test_the_same_file_may_not_be_fused_twice(tmp_path, capsys):
    paths = mismatched_files(tmp_path, "none")
    assert main(["--fuse", str(paths[0]), str(paths[1]), str(paths[0]), "--output", str(tmp_path / "f.txt")]) == 2
    assert "the same score file is given twice" in capsys.readouterr().err
    assert not (tmp_path / "f.txt").exists()

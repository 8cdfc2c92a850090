"""Score fusion across runs over the same trials: ``mean`` of per-run standardised scores,
``softmax-vote`` (AMSDF's "vote" over checkpoints trained with different seeds; Wu et al., IEEE
TIFS 2024), or ``logistic``: a weighted sum whose weights logistic regression learns on the runs'
dev scores (linear fusion as in the FoCal and BOSARIS toolkits), giving LLRs.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from emospoof.core.errors import InputValueError
from emospoof.core.labels import BONAFIDE
from emospoof.metrics.calibration import fit_logistic
from emospoof.metrics.score_files import CmScores, ScoreFileError, read_cm_scores, write_cm_scores

FUSION_METHODS = ("mean", "softmax-vote", "logistic")


def align_runs(runs: Sequence[CmScores], paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """Scores of several runs as a (runs, trials) matrix in the first run's trial order.

    Every file must hold the same utterances, once each, with the same key and attack; the
    first file that does not is named in a :class:`ScoreFileError`.
    """
    first, first_path = runs[0], paths[0]
    position = {utt: i for i, utt in enumerate(first.utt_ids.tolist())}
    matrix = np.empty((len(runs), first.scores.size), dtype=np.float64)
    for row, (run, path) in enumerate(zip(runs, paths)):
        if len(set(run.utt_ids.tolist())) != run.utt_ids.size:
            raise ScoreFileError(path, "an utterance is listed more than once")
        unknown = [utt for utt in run.utt_ids.tolist() if utt not in position]
        if unknown or run.utt_ids.size != first.utt_ids.size:
            example = unknown[0] if unknown else sorted(set(position) - set(run.utt_ids.tolist()))[0]
            raise ScoreFileError(
                path, f"covers other utterances than {os.fspath(first_path)} (e.g. {example}); "
                "fused runs must score the same trials")
        order = np.array([position[utt] for utt in run.utt_ids.tolist()])
        for name, column, reference in (("key", run.keys, first.keys), ("attack", run.attacks, first.attacks)):
            differs = np.flatnonzero(column != reference[order])
            if differs.size:
                i = differs[0]
                raise ScoreFileError(
                    path, f"{run.utt_ids[i]} has {name} {str(column[i])!r} but "
                    f"{str(reference[order[i]])!r} in {os.fspath(first_path)}")
        matrix[row, order] = run.scores
    return matrix


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(1 / (1 + e^-x)) without overflow for large |x|."""
    return -np.logaddexp(0.0, -x)


def fuse_score_matrix(matrix: np.ndarray, method: str) -> np.ndarray:
    """One fused score per trial (column) from a (runs, trials) score matrix; higher = bona fide.

    ``mean``: each run is standardised over the trials (zero mean, unit variance; no labels
    used) and the standardised scores are averaged, so a run with larger logits does not
    outweigh the others. ``softmax-vote``: each score is read as the run's bona fide log-odds,
    so its softmax probability is p = sigmoid(score) (two-class softmax); the runs cast these
    soft votes and the fused score is the log-odds of their mean, log(mean p / mean (1 - p)):
    positive exactly when the average vote is bona fide, and free of the ties a fused
    probability would have where every run is confident.
    """
    if method == "mean":
        spread = matrix.std(axis=1, keepdims=True)
        if np.any(spread == 0):
            raise InputValueError("a run gives every trial the same score; it cannot be standardised")
        return ((matrix - matrix.mean(axis=1, keepdims=True)) / spread).mean(axis=0)
    if method == "softmax-vote":
        log_bonafide = np.logaddexp.reduce(_log_sigmoid(matrix), axis=0)
        log_spoof = np.logaddexp.reduce(_log_sigmoid(-matrix), axis=0)
        return log_bonafide - log_spoof
    raise ValueError(f"unknown fusion method {method!r}, expected one of {', '.join(FUSION_METHODS[:2])} "
                     "(logistic fusion learns its weights: fit_fusion)")


def fit_fusion(dev_matrix: np.ndarray, is_bonafide: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights (one per run) and offset of the logistic-regression fusion of a (runs, trials) dev
    score matrix; ``weights @ matrix + offset`` are then LLRs."""
    return fit_logistic(np.asarray(dev_matrix, dtype=np.float64).T, is_bonafide)


def _read_runs(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[CmScores], np.ndarray]:
    if len(paths) < 2:
        raise InputValueError(f"fusion needs at least two score files, got {len(paths)}")
    if len({os.path.abspath(path) for path in paths}) < len(paths):
        raise InputValueError("the same score file is given twice; each run must be fused once")
    runs = [read_cm_scores(path) for path in paths]
    return runs, align_runs(runs, paths)


def fuse_score_files(
    paths: Sequence[str | os.PathLike[str]], method: str, output: str | os.PathLike[str],
    dev_paths: Sequence[str | os.PathLike[str]] | None = None,
) -> CmScores:
    """Fuse CM score files of several runs and write ``UTT ATTACK KEY SCORE`` lines to ``output``,
    in the first file's order. ``logistic`` learns its weights on ``dev_paths``: the same runs'
    dev score files, in the same order."""
    if any(os.path.abspath(path) == os.path.abspath(output) for path in [*paths, *(dev_paths or [])]):
        raise InputValueError(f"{os.fspath(output)}: the fused file would overwrite one of its inputs")
    runs, matrix = _read_runs(paths)
    if method == "logistic":
        if dev_paths is None or len(dev_paths) != len(paths):
            raise InputValueError(f"logistic fusion learns its weights on dev: give the dev score files of the "
                             f"{len(paths)} runs, in the same order (got {len(dev_paths or [])})")
        dev_runs, dev_matrix = _read_runs(dev_paths)
        weights, offset = fit_fusion(dev_matrix, dev_runs[0].keys == BONAFIDE)
        fused = weights @ matrix + offset
    else:
        fused = fuse_score_matrix(matrix, method)
    first = runs[0]
    result = CmScores(utt_ids=first.utt_ids, attacks=first.attacks, keys=first.keys, scores=fused)
    write_cm_scores(output, result)
    return result

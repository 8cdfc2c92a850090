"""Score files: the readers and writers of CM score files (``UTT ATTACK KEY SCORE``) and ASV
score files (``SOURCE KEY SCORE``), with errors that name the file and line."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from emospoof.core.emotions import UNLABELLED, arousal_of
from emospoof.core.errors import InputError
from emospoof.core.labels import CM_KEYS, SPOOF, key_of
from emospoof.core.text_lines import numbered_fields

ASV_KEYS = ("target", "nontarget", SPOOF)


@dataclass(frozen=True)
class CmScores:
    """A CM score file as parallel arrays, one entry per trial, in file order."""

    utt_ids: np.ndarray
    attacks: np.ndarray
    keys: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class AsvScores:
    """ASV scores split by trial type, as the t-DCF needs them."""

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray


class ScoreFileError(InputError, ValueError):
    """A score file that cannot be used; the message names the file and, if known, the line."""

    def __init__(self, path: str | os.PathLike[str], problem: str, line: int | None = None):
        self.path = os.fspath(path)
        self.problem = problem
        self.line = line
        where = self.path if line is None else f"{self.path}: line {line}"
        super().__init__(f"{where}: {problem}")


def score_file_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of each non-blank line of a text file; bytes that
    are not UTF-8 raise :class:`ScoreFileError` naming the line."""
    yield from numbered_fields(path, lambda reason, line_no: ScoreFileError(path, reason, line_no))


def _read_score_lines(
    path: str | os.PathLike[str], columns: tuple[str, ...], allowed_keys: tuple[str, ...]
) -> tuple[list[list[str]], np.ndarray]:
    """Fields before the score, and the scores, of a file whose last two columns are KEY SCORE.

    Blank lines are skipped; anything else malformed raises :class:`ScoreFileError`.
    """
    rows: list[list[str]] = []
    scores: list[float] = []
    for line_no, fields in score_file_lines(path):
        if len(fields) != len(columns):
            raise ScoreFileError(
                path,
                f"expected {len(columns)} fields ({' '.join(columns)}), got {len(fields)}",
                line_no,
            )
        if fields[-2] not in allowed_keys:
            raise ScoreFileError(
                path,
                f"unknown key {fields[-2]!r}, expected one of {', '.join(allowed_keys)}",
                line_no,
            )
        try:
            score = float(fields[-1])
        except ValueError:
            problem = f"score {fields[-1]!r} is not a number"
            raise ScoreFileError(path, problem, line_no) from None
        if math.isnan(score):
            raise ScoreFileError(path, "score is NaN", line_no)
        rows.append(fields[:-1])
        scores.append(score)
    if not scores:
        raise ScoreFileError(path, "no scores found")
    return rows, np.array(scores, dtype=np.float64)


def _require_keys(
    path: str | os.PathLike[str], keys: np.ndarray, needed: tuple[str, ...]
) -> None:
    """Reject a file lacking a trial type the metrics need, while the file is still known."""
    for key in needed:
        if not np.any(keys == key):
            raise ScoreFileError(path, f"no {key!r} trials")


def read_cm_scores(path: str | os.PathLike[str], both_classes: bool = True) -> CmScores:
    """Read ``UTT ATTACK KEY SCORE`` lines (KEY bonafide|spoof; ATTACK '-' for bona fide); a file
    without one of the classes is refused unless ``both_classes`` is False (a genuine-speech set)."""
    rows, scores = _read_score_lines(path, ("utterance", "attack", "key", "score"), CM_KEYS)
    utt_ids, attacks, keys = (np.array(column) for column in zip(*rows))
    if both_classes:
        _require_keys(path, keys, CM_KEYS)
    return CmScores(utt_ids=utt_ids, attacks=attacks, keys=keys, scores=scores)


def write_cm_scores(path: str | os.PathLike[str], cm: CmScores) -> None:
    """Write ``UTT ATTACK KEY SCORE`` lines, the format :func:`read_cm_scores` reads."""
    with open(path, "w", encoding="utf-8") as handle:
        for utt, attack, key, score in zip(cm.utt_ids, cm.attacks, cm.keys, cm.scores):
            handle.write(f"{utt} {attack} {key} {score:.6f}\n")


def read_asv_scores(path: str | os.PathLike[str]) -> AsvScores:
    """Read ``SOURCE KEY SCORE`` lines (KEY target|nontarget|spoof); SOURCE is not used."""
    rows, scores = _read_score_lines(path, ("source", "key", "score"), ASV_KEYS)
    keys = np.array([row[1] for row in rows])
    _require_keys(path, keys, ASV_KEYS)
    target, nontarget, spoof = (scores[keys == key] for key in ASV_KEYS)
    return AsvScores(target=target, nontarget=nontarget, spoof=spoof)


def write_score_file(path: str | os.PathLike[str], trials: list, scores: dict[str, float]) -> None:
    """``UTT ATTACK KEY SCORE`` per scored trial (``data_utils.Trial``), in protocol order."""
    with open(path, "w", encoding="utf-8") as handle:
        for trial in trials:
            if trial.utt_id in scores:
                handle.write(f"{trial.utt_id} {trial.attack} {key_of(trial.label)} {scores[trial.utt_id]:.6f}\n")


GROUP_COLUMNS = ("utt_id", "key", "emotion", "arousal", "speaker")


def write_trial_groups(path: str | os.PathLike[str], trials: list) -> None:
    """Beside a score file: each trial's key, emotion, arousal group and speaker (tab-separated,
    with a header; whitespace inside a speaker name becomes '_'), so that figures per group can be recomputed from the scores alone (e.g. by
    ``compare.py``)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(GROUP_COLUMNS) + "\n")
        for trial in trials:
            fields = (trial.utt_id, key_of(trial.label), trial.emotion, arousal_of(trial.emotion) or UNLABELLED,
                      "_".join(trial.speaker.split()) or UNLABELLED)
            handle.write("\t".join(fields) + "\n")


def read_trial_groups(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """utterance id -> {key, emotion, arousal, speaker} of a file :func:`write_trial_groups` wrote."""
    groups = {}
    for line_no, fields in numbered_fields(path, lambda reason, number: ScoreFileError(path, reason, number)):
        if line_no == 1:
            if tuple(fields) != GROUP_COLUMNS:
                raise ScoreFileError(path, f"expected the header {' '.join(GROUP_COLUMNS)}", 1)
            continue
        if len(fields) != len(GROUP_COLUMNS):
            raise ScoreFileError(path, f"expected {len(GROUP_COLUMNS)} tab-separated fields, got {len(fields)}",
                                 line_no)
        groups[fields[0]] = dict(zip(GROUP_COLUMNS[1:], fields[1:]))
    return groups

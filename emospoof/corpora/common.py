"""What every dataset reader shares: the corpus it returns, the one-line error naming the file and
line, numbered lines and header tables, key spellings, emotion label files (the emotion names
and their spellings are ``emospoof.core.emotions``)."""
from __future__ import annotations

import csv
import difflib
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from data_utils import Trial
from emospoof.core.emotions import normalise_emotion
from emospoof.core.errors import InputError
from emospoof.core.labels import BONAFIDE, BONAFIDE_INDEX, SPOOF, SPOOF_INDEX
from emospoof.core.text_lines import numbered_fields


class DatasetError(InputError, ValueError):
    """A dataset file or folder that cannot be used: one line naming it (and the line) and why."""

    def __init__(self, path: str | os.PathLike[str], problem: str, line: int | None = None) -> None:
        where = os.fspath(path) if line is None else f"{os.fspath(path)}:{line}"
        super().__init__(f"{where}: {problem}")


@dataclass
class Corpus:
    """The trials a reader found, and what it expected but did not find (reported, not fatal);
    ``bonafide_system`` names the bona fide source where a corpus has systems (emotional sets)."""

    trials: list[Trial]
    missing: list[str] = field(default_factory=list)
    bonafide_system: str = ""


def numbered_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of each non-blank line."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    yield from numbered_fields(path, lambda reason, number: DatasetError(path, reason, number))


def table_rows(path: Path, required: tuple[str, ...], optional: tuple[str, ...] | None = (),
               delimiter: str = "\t") -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) of a table whose first line names its columns. ``required``
    columns must be there; with ``optional`` a tuple, any other column is refused (None: any
    column is accepted)."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(path, "not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    for name in required:
        if name not in header:
            raise DatasetError(path, f"no '{name}' column in the header {header!r}", 1)
    if optional is not None:
        for name in header:
            if name not in required + optional:
                close = difflib.get_close_matches(name, required + optional, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise DatasetError(path, f"unknown column '{name}'{hint}; columns: "
                                   f"{', '.join(required + optional)}", 1)
    for row in reader:
        number = reader.line_num
        if not any(value.strip() for value in row):
            continue
        if len(row) != len(header):
            raise DatasetError(path, f"expected {len(header)} fields ({', '.join(header)}), got {len(row)}", number)
        yield number, {name: value.strip() for name, value in zip(header, row)}


def key_label(value: str, path: Path, line: int, bonafide: tuple[str, ...] = (BONAFIDE,),
              spoof: tuple[str, ...] = (SPOOF,)) -> int:
    """The trial label of a key (``BONAFIDE_INDEX`` for one of ``bonafide``, ``SPOOF_INDEX`` for one
    of ``spoof``); anything else is an error naming the line."""
    if value in bonafide:
        return BONAFIDE_INDEX
    if value in spoof:
        return SPOOF_INDEX
    raise DatasetError(path, f"key {value!r} is neither {'/'.join(bonafide)} nor {'/'.join(spoof)}", line)


def utterance_id(value: str, path: Path, line: int | None = None) -> str:
    """An utterance id as score files need it: one field, no whitespace."""
    if not value or any(ch.isspace() for ch in value):
        raise DatasetError(path, f"utterance id {value!r} is empty or contains whitespace "
                           "(score files are whitespace-separated)", line)
    return value


def require_trials(trials: list[Trial], source: Path) -> list[Trial]:
    if not trials:
        raise DatasetError(source, "no trials found")
    return trials


def read_emotion_labels(path: Path) -> dict[str, str]:
    """utterance id -> emotion from a TSV with ``utt_id`` and ``emotion`` columns (others are
    ignored: the devkit's ``meta.tsv`` has many). A contradictory repeat is an error."""
    labels: dict[str, str] = {}
    for number, row in table_rows(path, ("utt_id", "emotion"), optional=None):
        emotion = normalise_emotion(row["emotion"])
        if labels.setdefault(row["utt_id"], emotion) != emotion:
            raise DatasetError(path, f"{row['utt_id']} is labelled {labels[row['utt_id']]!r} and {emotion!r}", number)
    return labels


def with_emotions(trials: list[Trial], labels: dict[str, str]) -> list[Trial]:
    """The trials with the emotion the labels give them; unlisted trials keep theirs."""
    return [replace(t, emotion=labels[t.utt_id]) if t.utt_id in labels else t for t in trials]

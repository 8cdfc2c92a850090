"""The generic protocol TSV, for any corpus without a reader of its own: a header line, then one
trial per line with its audio ``path`` (absolute or relative to the TSV's folder) and ``key``
(``bonafide`` or ``spoof``), and optionally ``attack``, ``speaker``, ``emotion`` and
``condition`` and ``corpus`` columns (each a factor of the per-condition and per-group reports). ``inference.py --calibrate`` reads the same ``path`` / ``key`` columns."""
from __future__ import annotations

from pathlib import Path

from data_utils import Trial
from emospoof.core.emotions import normalise_emotion
from emospoof.corpora.common import Corpus, key_label, require_trials, table_rows, utterance_id

REQUIRED = ("path", "key")
OPTIONAL = ("attack", "speaker", "emotion", "condition", "corpus")


def read_protocol_tsv(path: Path) -> Corpus:
    """Utterance ids are the paths as written, without their extension; a ``condition`` or
    ``corpus`` value becomes the factor of that name in the per-condition and per-group reports.
    A protocol whose keys are all ``bonafide`` is a genuine-speech set (reported at the run's
    fixed threshold)."""
    trials = []
    for number, row in table_rows(path, REQUIRED, OPTIONAL):
        label = key_label(row["key"], path, number)
        written = Path(row["path"])
        factors = tuple((name, row[name]) for name in ("condition", "corpus") if row.get(name))
        trials.append(Trial(
            utterance_id(written.with_suffix("").as_posix(), path, number), path.parent / written, label,
            row.get("attack") or "-", row.get("speaker") or "-", normalise_emotion(row.get("emotion", "")),
            factors,
        ))
    return Corpus(require_trials(trials, path))

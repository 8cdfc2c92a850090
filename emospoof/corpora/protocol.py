"""The generic protocol TSV, for any corpus without a reader of its own: a header line, then one
trial per line with its audio ``path`` (absolute or relative to the TSV's folder) and ``key``
(``bonafide`` or ``spoof``), and optionally ``attack``, ``speaker``, ``emotion`` and
``condition`` columns. ``inference.py --calibrate`` reads the same ``path`` / ``key`` columns."""
from __future__ import annotations

from pathlib import Path

from data_utils import Trial
from emospoof.core.emotions import normalise_emotion
from emospoof.corpora.common import Corpus, key_label, require_trials, table_rows, utterance_id

REQUIRED = ("path", "key")
OPTIONAL = ("attack", "speaker", "emotion", "condition")


def read_protocol_tsv(path: Path) -> Corpus:
    """Utterance ids are the paths as written, without their extension; a ``condition`` value
    becomes the factor ``condition`` of the per-condition report."""
    trials = []
    for number, row in table_rows(path, REQUIRED, OPTIONAL):
        label = key_label(row["key"], path, number)
        written = Path(row["path"])
        condition = row.get("condition", "")
        trials.append(Trial(
            utterance_id(written.with_suffix("").as_posix(), path, number), path.parent / written, label,
            row.get("attack") or "-", row.get("speaker") or "-", normalise_emotion(row.get("emotion", "")),
            (("condition", condition),) if condition else (),
        ))
    return Corpus(require_trials(trials, path))

"""The ASVspoof corpora: 2019 LA (train / dev / eval), the 2021 LA and DF evaluation sets with
their keys and meta-labels, and ASVspoof 5 (train / dev / eval protocols).

Layouts follow the organisers' distributions and documentation: the 2019 LA README, the 2021
evaluation package's README and ``config.py`` (github.com/asvspoof-challenge/2021, eval-package),
and the ASVspoof 5 README (Zenodo record 14498691).
"""
from __future__ import annotations

from pathlib import Path

from data_utils import Trial
from emospoof.core.labels import CM_KEYS, label_of
from emospoof.corpora.common import Corpus, DatasetError, key_label, numbered_lines, require_trials, utterance_id

SPLIT_NAMES = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}


# --- ASVspoof 2019 LA ------------------------------------------------------------------------


def la_protocol_path(database_path: str | Path, split: str) -> Path:
    return (Path(database_path) / "ASVspoof2019_LA_cm_protocols"
            / f"ASVspoof2019.LA.cm.{SPLIT_NAMES[split]}.txt")


def la_audio_dir(database_path: str | Path, split: str) -> Path:
    return Path(database_path) / f"ASVspoof2019_LA_{split}" / "flac"


def read_la_protocol(protocol: str | Path, audio_dir: str | Path) -> list[Trial]:
    """Parse a CM protocol (``SPEAKER UTT - ATTACK KEY``) into trials with their flac paths."""
    protocol = Path(protocol)
    trials = []
    for number, fields in numbered_lines(protocol):
        if len(fields) != 5 or fields[4] not in CM_KEYS:
            raise DatasetError(protocol, f"expected 'SPEAKER UTT - ATTACK bonafide|spoof', got {' '.join(fields)!r}",
                               number)
        speaker, utt_id, _, attack, key = fields
        trials.append(Trial(utt_id, Path(audio_dir) / f"{utt_id}.flac", label_of(key), attack, speaker))
    return require_trials(trials, protocol)


def la_trials(database_path: str | Path, split: str) -> list[Trial]:
    return read_la_protocol(la_protocol_path(database_path, split), la_audio_dir(database_path, split))


def read_asvspoof2019_la(path: Path, split: str) -> Corpus:
    """``path`` is the ``LA/`` folder of LA.zip (DataShare 10283/3336)."""
    return Corpus(la_trials(path, split))


# --- ASVspoof 2021 LA and DF evaluation sets -------------------------------------------------

SUBSETS = ("eval", "progress", "hidden", "all")
# Columns of keys/<track>/CM/trial_metadata.txt (the 2021 package's config.py): speaker, trial,
# then the conditions, attack, key, trim and subset. DF's full keys add vocoder type, task, team,
# gender pair and language (13 columns); the earlier stage-1 DF keys stop after subset.
LA_COLUMNS = ("speaker", "trial", "codec", "transmission", "attack", "key", "trim", "subset")
DF_COLUMNS = ("speaker", "trial", "codec", "source", "attack", "key", "trim", "subset", "vocoder",
              "task", "team", "gender_pair", "language")
CONDITIONS = {"LA": ("codec", "transmission"), "DF": ("codec", "source", "vocoder")}


def read_trial_metadata(keys: Path, audio_dir: Path, track: str, subset: str) -> list[Trial]:
    """Trials of a 2021 ``trial_metadata.txt`` restricted to ``subset`` (``all``: every line);
    the attack of a bona fide trial is '-' whatever the column says."""
    columns = LA_COLUMNS if track == "LA" else DF_COLUMNS
    allowed_counts = (8,) if track == "LA" else (8, 13)
    trials = []
    for number, fields in numbered_lines(keys):
        if len(fields) not in allowed_counts:
            raise DatasetError(keys, f"expected {' or '.join(map(str, allowed_counts))} fields "
                               f"({' '.join(columns[:max(allowed_counts)])}), got {len(fields)}", number)
        row = dict(zip(columns, fields))
        label = key_label(row["key"], keys, number)
        if row["subset"] not in SUBSETS[:-1]:
            raise DatasetError(keys, f"subset {row['subset']!r} is not one of {', '.join(SUBSETS[:-1])}", number)
        if subset != "all" and row["subset"] != subset:
            continue
        trial_id = utterance_id(row["trial"], keys, number)
        conditions = tuple((name, row[name]) for name in CONDITIONS[track] if name in row)
        trials.append(Trial(trial_id, audio_dir / f"{trial_id}.flac", label, "-" if label else row["attack"],
                            row["speaker"], conditions=conditions))
    return require_trials(trials, keys)


def _read_2021(path: Path, track: str, subset: str, keys: str | None) -> Corpus:
    keys_path = Path(keys) if keys else path / "keys" / track / "CM" / "trial_metadata.txt"
    if not keys_path.is_file():
        raise DatasetError(keys_path, f"ASVspoof 2021 {track} keys not found (unpack {track}-keys-full.tar.gz "
                           "into the eval folder, or name the file with 'keys')")
    return Corpus(read_trial_metadata(keys_path, path / "flac", track, subset))


def read_asvspoof2021_la(path: Path, subset: str = "eval", keys: str | None = None) -> Corpus:
    """``path`` is ``ASVspoof2021_LA_eval/`` (Zenodo 4837263) holding ``flac/``; the keys default
    to ``keys/LA/CM/trial_metadata.txt`` inside it."""
    return _read_2021(path, "LA", subset, keys)


def read_asvspoof2021_df(path: Path, subset: str = "eval", keys: str | None = None) -> Corpus:
    """``path`` is ``ASVspoof2021_DF_eval/`` (Zenodo 4835108, four parts unpacking into one
    ``flac/``); the keys default to ``keys/DF/CM/trial_metadata.txt`` inside it."""
    return _read_2021(path, "DF", subset, keys)


# --- ASVspoof 5 ------------------------------------------------------------------------------

ASVSPOOF5_PROTOCOLS = {"train": "ASVspoof5.train.tsv", "dev": "ASVspoof5.dev.track_1.tsv",
                       "eval": "ASVspoof5.eval.track_1.tsv"}
ASVSPOOF5_AUDIO = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}
# The ten space-separated columns of the track 1 protocols (the README names them; it calls
# them "FIVE columns" but lists ten, and the files have ten).
ASVSPOOF5_COLUMNS = ("speaker", "file", "gender", "codec", "codec_q", "codec_seed", "attack_tag",
                     "attack", "key", "tmp")
ASVSPOOF5_CONDITIONS = ("codec", "codec_q", "attack_tag", "gender")


def read_asvspoof5(path: Path, split: str, protocol: str | None = None) -> Corpus:
    """``path`` holds ``flac_T/``, ``flac_D/``, ``flac_E_eval/`` and the protocols (in
    ``ASVspoof5_protocols/`` or beside the audio folders; ``protocol`` names another file)."""
    name = ASVSPOOF5_PROTOCOLS[split]
    candidates = [Path(protocol)] if protocol else [path / "ASVspoof5_protocols" / name, path / name]
    protocol_path = next((c for c in candidates if c.is_file()), candidates[0])
    audio_dir = path / ASVSPOOF5_AUDIO[split]
    trials = []
    for number, fields in numbered_lines(protocol_path):
        if len(fields) != len(ASVSPOOF5_COLUMNS):
            raise DatasetError(protocol_path, f"expected {len(ASVSPOOF5_COLUMNS)} fields "
                               f"({' '.join(ASVSPOOF5_COLUMNS)}), got {len(fields)}", number)
        row = dict(zip(ASVSPOOF5_COLUMNS, fields))
        label = key_label(row["key"], protocol_path, number)
        file_id = utterance_id(row["file"], protocol_path, number)
        trials.append(Trial(file_id, audio_dir / f"{file_id}.flac", label, "-" if label else row["attack"],
                            row["speaker"], conditions=tuple((c, row[c]) for c in ASVSPOOF5_CONDITIONS)))
    return Corpus(require_trials(trials, protocol_path))

"""Deepfake-detection corpora without ASVspoof protocols: In-the-Wild and FakeOrReal.

In-the-Wild (Müller et al., "Does audio deepfake detection generalize?", Interspeech 2022;
deepfake-total.com/in_the_wild): ``release_in_the_wild/`` holds the audio and ``meta.csv`` with
the header ``file,speaker,label``, labels ``bona-fide`` and ``spoof``, speakers being public
figures' names. FakeOrReal (Reimao and Tzerpos, SpeD 2019; bil.eecs.yorku.ca/datasets): each
version (``for-original``, ``for-norm``, ``for-2sec``, ``for-rerec``) has ``training/``,
``validation/`` and ``testing/`` folders, each with ``real/`` and ``fake/``. Both layouts are
read as AMSDF's ``data_io.py`` reads them (github.com/ItzJuny/AMSDF).
"""
from __future__ import annotations

from pathlib import Path

from data_utils import Trial, audio_files_under
from emospoof.corpora.common import Corpus, DatasetError, key_label, require_trials, table_rows, utterance_id

FOR_SPLITS = ("training", "validation", "testing")
FOR_CLASSES = (("real", 1), ("fake", 0))


def read_in_the_wild(path: Path) -> Corpus:
    """``path`` is ``release_in_the_wild/``; utterance ids are the file names without extension."""
    meta = path / "meta.csv"
    trials = []
    for number, row in table_rows(meta, ("file", "speaker", "label"), delimiter=","):
        label = key_label(row["label"], meta, number, bonafide=("bona-fide",))
        audio = path / row["file"]
        trials.append(Trial(utterance_id(Path(row["file"]).with_suffix("").as_posix(), meta, number), audio,
                            label, speaker=row["speaker"] or "-"))
    return Corpus(require_trials(trials, meta))


def read_fake_or_real(path: Path, split: str | None = None) -> Corpus:
    """``path`` is one FakeOrReal version (e.g. ``for-norm/``) with ``split`` one of its three
    folders, or, without ``split``, a folder that holds ``real/`` and ``fake/`` itself. Utterance
    ids are ``real/<name>`` and ``fake/<name>``."""
    root = path / split if split else path
    trials = []
    for folder, label in FOR_CLASSES:
        class_dir = root / folder
        if not class_dir.is_dir():
            raise DatasetError(class_dir, "folder not found (FakeOrReal keeps each class in real/ and fake/)")
        files = audio_files_under(class_dir)
        if not files:
            raise DatasetError(class_dir, "no audio files")
        for audio in files:
            utt = utterance_id(f"{folder}/{audio.relative_to(class_dir).with_suffix('').as_posix()}", audio)
            trials.append(Trial(utt, audio, label))
    return Corpus(require_trials(trials, root))

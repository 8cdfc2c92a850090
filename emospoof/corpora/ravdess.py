"""RAVDESS (Livingstone & Russo, PLoS ONE 2018) and other genuine emotional speech: sets of bona
fide recordings only, which a countermeasure should accept whatever their emotion.

``ravdess``: files named ``MM-VC-EE-II-SS-RR-AA.<audio>`` anywhere under a folder (RAVDESS's own
names; the emotion is field EE, the actor field AA; songs, VC = 02, are left out), optionally only
the ``actors`` listed. ``emotion_folders``: ``<root>/<emotion>/.../<audio>``, the emotion named by
the first folder level in any of the corpora's spellings, the speaker by the second when there
is one. Every trial is bona fide; the evaluation reports them at the run's fixed threshold.
"""
from __future__ import annotations

import re
from pathlib import Path

from data_utils import Trial, audio_files_under
from emospoof.core.emotions import KNOWN_EMOTIONS, UNLABELLED, normalise_emotion
from emospoof.core.labels import BONAFIDE_INDEX
from emospoof.corpora.common import Corpus, DatasetError, require_trials, utterance_id

# RAVDESS emotion codes (field EE of the file name).
RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
SPEECH = "01"  # vocal channel: 01 speech, 02 song


def ravdess_speech(path: Path) -> tuple[int, str] | None:
    """(actor, emotion) of a RAVDESS speech file name, None for songs and other names."""
    match = RAVDESS_NAME.match(path.stem)
    if not match or match[2] != SPEECH:
        return None
    code = int(match[3])
    if not 1 <= code <= len(RAVDESS_EMOTIONS):
        raise DatasetError(path, f"emotion code {match[3]} is not a RAVDESS emotion (01-08)")
    return int(match[7]), RAVDESS_EMOTIONS[code - 1]


def read_ravdess_set(root: Path, actors: list[int] | None = None) -> Corpus:
    """The RAVDESS speech files under ``root`` (of ``actors`` only, when given) as bona fide trials:
    utterance id the path under ``root`` without its extension, speaker ``Actor_NN``."""
    trials = []
    for path in audio_files_under(root):
        parsed = ravdess_speech(path)
        if parsed is None or (actors is not None and parsed[0] not in actors):
            continue
        utt_id = utterance_id(path.relative_to(root).with_suffix("").as_posix(), path)
        trials.append(Trial(utt_id, path, BONAFIDE_INDEX, UNLABELLED, f"Actor_{parsed[0]:02d}", parsed[1]))
    which = f" of actors {', '.join(map(str, actors))}" if actors else ""
    if not trials:
        raise DatasetError(root, f"no RAVDESS speech files (MM-01-EE-II-SS-RR-AA.<audio>){which}")
    return Corpus(trials)


def read_emotion_folders(root: Path) -> Corpus:
    """``<root>/<emotion>/[<speaker>/...]<audio>`` as bona fide trials; first-level folders that
    name no known emotion are listed in ``missing`` and left out."""
    trials, missing = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        emotion = normalise_emotion(folder.name)
        if emotion not in KNOWN_EMOTIONS:
            missing.append(f"{folder}: not an emotion ({', '.join(sorted(KNOWN_EMOTIONS))})")
            continue
        for path in audio_files_under(folder):
            inner = path.relative_to(folder).parts
            speaker = inner[0] if len(inner) > 1 else UNLABELLED
            utt_id = utterance_id(path.relative_to(root).with_suffix("").as_posix(), path)
            trials.append(Trial(utt_id, path, BONAFIDE_INDEX, UNLABELLED, speaker, emotion))
    return Corpus(require_trials(trials, root), missing)

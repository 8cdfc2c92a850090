"""Emotional spoofing corpora: the emotional TTS set (DSES) in its folder layout or as a protocol,
EmoFake and EmoSpoof-TTS. Every trial carries an emotion, so results split by emotion.
"""
from __future__ import annotations

import re
from pathlib import Path

from data_utils import AUDIO_EXTENSIONS, Trial, audio_files_under
from emospoof.core.emotions import KNOWN_EMOTIONS, TTS5_EMOTIONS, UNLABELLED, normalise_emotion
from emospoof.core.labels import BONAFIDE, BONAFIDE_INDEX, CM_KEYS, SPOOF_INDEX, label_of
from emospoof.corpora.common import Corpus, DatasetError, key_label, numbered_lines, require_trials, utterance_id

# --- the emotional TTS set (DSES) ------------------------------------------------------------


def read_emotional_layout(root: str | Path, bonafide_system: str = "ESD") -> Corpus:
    """``<root>/<SYSTEM>/<SPEAKER>/<emotion>/<audio files>`` (the emotional TTS set's layout; any
    audio suffix of ``data_utils.AUDIO_EXTENSIONS``, emotion folders in any of the corpora's
    spellings, e.g. ESD's ``Surprise``).

    ``bonafide_system`` holds bona fide speech, every other system spoofs. Each speaker of each
    system should have the five emotions; absent or empty folders are listed in ``missing``.
    """
    root = Path(root)
    if not (root / bonafide_system).is_dir():
        raise DatasetError(root, f"bona fide system folder '{bonafide_system}' not found (set emo_bonafide_system)")
    trials, missing = [], []
    for system_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        speakers = sorted(p for p in system_dir.iterdir() if p.is_dir())
        if not speakers:
            missing.append(f"{system_dir}: no speaker folders")
        for speaker_dir in speakers:
            emotions = {normalise_emotion(p.name): p for p in speaker_dir.iterdir() if p.is_dir()}
            missing += [f"{speaker_dir / e}: folder missing" for e in TTS5_EMOTIONS if e not in emotions]
            for emotion, emotion_dir in sorted(emotions.items()):
                files = sorted(p for p in emotion_dir.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
                if not files:
                    missing.append(f"{emotion_dir}: no audio files")
                for path in files:
                    utt_id = utterance_id(path.relative_to(root).with_suffix("").as_posix(), path)
                    trials.append(Trial(utt_id, path, BONAFIDE_INDEX if system_dir.name == bonafide_system else SPOOF_INDEX,
                                        system_dir.name, speaker_dir.name, emotion))
    if not trials:
        raise DatasetError(root, "no audio found in the <SYSTEM>/<SPEAKER>/<emotion>/ layout")
    return Corpus(trials, missing, bonafide_system)


def read_emotional_protocol(protocol: str | Path) -> Corpus:
    """Lines ``UTT_PATH KEY SYSTEM SPEAKER EMOTION`` (KEY bonafide|spoof; UTT_PATH absolute or
    relative to the protocol's folder), for emotional sets in other layouts."""
    protocol = Path(protocol)
    trials, bonafide_systems = [], set()
    for number, fields in numbered_lines(protocol):
        if len(fields) != 5 or fields[1] not in CM_KEYS:
            raise DatasetError(protocol, f"expected 'UTT_PATH bonafide|spoof SYSTEM SPEAKER EMOTION', "
                               f"got {' '.join(fields)!r}", number)
        path, key, system, speaker, emotion = fields
        if key == BONAFIDE:
            bonafide_systems.add(system)
        trials.append(Trial(Path(path).with_suffix("").as_posix(), protocol.parent / path, label_of(key),
                            system, speaker, normalise_emotion(emotion)))
    require_trials(trials, protocol)
    if not bonafide_systems:
        raise DatasetError(protocol, "no bona fide trials")
    return Corpus(trials, [], "+".join(sorted(bonafide_systems)))


def read_emotional_set(location: str | Path, bonafide_system: str = "ESD") -> Corpus:
    """A folder in the emotional TTS layout, or a protocol file (see the two readers)."""
    location = Path(location)
    if location.is_dir():
        return read_emotional_layout(location, bonafide_system)
    if location.is_file():
        return read_emotional_protocol(location)
    raise DatasetError(location, "emotional set not found")


# --- EmoFake ---------------------------------------------------------------------------------

EMOFAKE_SPLITS = ("train", "dev", "test")
EMOFAKE_SYSTEM = re.compile(r"S\d+$")
EMOFAKE_CONVERSION = re.compile(r"([A-Za-z]+)2([A-Za-z]+)$")  # e.g. Neutral2Sad


def emofake_labels(stem: str) -> tuple[str, str, str]:
    """(system, emotion, source emotion) from an EmoFake file name, as the dataset authors' GADE
    code reads them: a fake is ``S<k>_<Source>2<Target>_...`` (its emotion is the target), a real
    file ``<...>_<Emotion>_...``; parts that do not fit give '-'."""
    parts = stem.split("_")
    system = parts[0] if EMOFAKE_SYSTEM.match(parts[0]) else "-"
    conversion = EMOFAKE_CONVERSION.match(parts[1]) if len(parts) > 1 else None
    if conversion:
        return system, normalise_emotion(conversion[2]), normalise_emotion(conversion[1])
    emotion = normalise_emotion(parts[1]) if len(parts) > 1 else UNLABELLED
    return system, emotion if emotion in KNOWN_EMOTIONS else UNLABELLED, UNLABELLED


def read_emofake(path: Path, split: str) -> Corpus:
    """``path`` is one language of EmoFake (``EmoFake/English`` or ``EmoFake/Chinese``; Zenodo
    10443769): ``<split>/label.txt`` lines ``FILE LABEL`` (``genuine``/``bonafide`` or
    ``fake``/``spoof``), the audio in ``<split>/wav/`` when that folder exists, else beside the
    label file (a FILE without extension is a .wav)."""
    labels = path / split / "label.txt"
    audio_dir = path / split / "wav" if (path / split / "wav").is_dir() else path / split
    trials = []
    for number, fields in numbered_lines(labels):
        if len(fields) != 2:
            raise DatasetError(labels, f"expected 'FILE genuine|fake', got {' '.join(fields)!r}", number)
        name, key = fields
        label = key_label(key, labels, number, bonafide=("genuine", "bonafide"), spoof=("fake", "spoof"))
        audio = audio_dir / (name if Path(name).suffix else f"{name}.wav")
        system, emotion, source = emofake_labels(Path(name).stem)
        trials.append(Trial(utterance_id(Path(name).stem, labels, number), audio, label,
                            "-" if label else system, emotion=emotion,
                            conditions=() if label else (("source_emotion", source),)))
    return Corpus(require_trials(trials, labels))


# --- EmoSpoof-TTS ----------------------------------------------------------------------------

ESD_SPEAKER = re.compile(r"\d{4}$")


def _labelled_folder(system_dir: Path, system: str, label: int) -> list[Trial]:
    """Audio under ``system_dir`` at any depth; the emotion is the path component naming one and
    the speaker the four-digit (ESD) one."""
    trials = []
    for audio in audio_files_under(system_dir):
        components = audio.relative_to(system_dir).parts[:-1]
        emotion = next((normalise_emotion(c) for c in components if normalise_emotion(c) in KNOWN_EMOTIONS),
                       UNLABELLED)
        speaker = next((c for c in components if ESD_SPEAKER.match(c)), "-")
        utt = utterance_id(f"{system}/{audio.relative_to(system_dir).with_suffix('').as_posix()}", audio)
        trials.append(Trial(utt, audio, label, system if not label else "-", speaker, emotion))
    if not trials:
        raise DatasetError(system_dir, "no audio files")
    return trials


def read_emospoof_tts(path: Path, bonafide_system: str = "ESD", bonafide_path: str | None = None) -> Corpus:
    """``path`` holds one folder per TTS system (e.g. ``StyleTTS2/``, ``F5-TTS/``, ``CosyVoice/``;
    Zenodo 15557842), the audio of each at any depth below folders naming the speaker (ESD ids
    such as ``0012``) and the emotion. The bona fide speech is ESD's: the folder
    ``bonafide_system`` inside ``path``, or ``bonafide_path`` (an ESD copy laid out
    ``<speaker>/<Emotion>/...``). Files under no emotion folder are kept, unlabelled."""
    root = Path(bonafide_path) if bonafide_path else path / bonafide_system
    if not root.is_dir():
        raise DatasetError(root, "bona fide (ESD) folder not found (set bonafide_system or bonafide_path)")
    trials = _labelled_folder(root, bonafide_system, 1)
    systems = sorted(p for p in path.iterdir() if p.is_dir() and p.resolve() != root.resolve())
    if not systems:
        raise DatasetError(path, "no TTS system folders")
    for system_dir in systems:
        trials += _labelled_folder(system_dir, system_dir.name, 0)
    return Corpus(trials, [], bonafide_system)

"""One vocabulary of emotions: the names reports use, the corpora's other spellings of them, and
the arousal groups that the per-group statistics compare."""
from __future__ import annotations

UNLABELLED = "-"  # the emotion of a trial without an emotion label
# The five emotions of the emotional TTS set (DSES, ESD), in its order: the classes of the SER
# models' "tts5" mapping and the folders the emotional set's layout expects.
TTS5_EMOTIONS = ("angry", "happy", "neutral", "sad", "surprised")
KNOWN_EMOTIONS = frozenset(TTS5_EMOTIONS) | {"calm", "fearful", "disgust"}
# Spellings of emotions in the corpora, mapped to the names above: ESD writes "Surprise",
# EmoSpoof-TTS "Happiness", RAVDESS "fearful".
EMOTION_SPELLINGS = {
    "surprise": "surprised", "fear": "fearful", "happiness": "happy", "anger": "angry",
    "sadness": "sad", "disgusted": "disgust", "neutrality": "neutral",
}
# Arousal of each named emotion (Russell's circumplex model of affect, J. Pers. Soc. Psychol.
# 1980): high-arousal genuine speech is what countermeasures reject most.
HIGH_AROUSAL = ("angry", "happy", "surprised", "fearful", "disgust")
LOW_AROUSAL = ("neutral", "calm", "sad")
# A coarse place for each emotion on the circumplex, (arousal, valence) in [-1, 1]: the targets of
# the SER's arousal/valence regression head, and the expected values under an emotion posterior
# for an SER without one. Quadrants follow Russell (1980); the magnitudes are our own rounding.
AROUSAL_VALENCE = {
    "neutral": (0.0, 0.0), "calm": (-0.6, 0.4), "happy": (0.6, 0.8), "sad": (-0.6, -0.6),
    "angry": (0.8, -0.6), "fearful": (0.7, -0.7), "disgust": (0.3, -0.7), "surprised": (0.8, 0.3),
}


def normalise_emotion(name: str) -> str:
    """Lower case, with the corpora's other spellings mapped to one name ('' and '-' unlabelled)."""
    name = name.strip().lower()
    return EMOTION_SPELLINGS.get(name, name) or UNLABELLED


def arousal_of(emotion: str) -> str | None:
    """'high' or 'low' for an emotion of either arousal group, None for any other label."""
    if emotion in HIGH_AROUSAL:
        return "high"
    if emotion in LOW_AROUSAL:
        return "low"
    return None

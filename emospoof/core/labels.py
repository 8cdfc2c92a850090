"""One meaning of "bona fide" everywhere: the key strings of protocols and score files, and the
index that is both a trial's label and the bona fide logit of every countermeasure."""
from __future__ import annotations

BONAFIDE = "bonafide"  # key of genuine speech in protocols and score files
SPOOF = "spoof"
CM_KEYS = (BONAFIDE, SPOOF)
# ``Trial.label`` of a bona fide trial, and the logit index of the bona fide class in every
# countermeasure (the AASIST reference's convention); spoof is the other index.
BONAFIDE_INDEX = 1
SPOOF_INDEX = 1 - BONAFIDE_INDEX


def label_of(key: str) -> int:
    """The trial label of a score-file key (``BONAFIDE`` or ``SPOOF``)."""
    return BONAFIDE_INDEX if key == BONAFIDE else SPOOF_INDEX


def key_of(label: int) -> str:
    """The score-file key of a trial label (``BONAFIDE_INDEX`` or ``SPOOF_INDEX``)."""
    return BONAFIDE if label == BONAFIDE_INDEX else SPOOF

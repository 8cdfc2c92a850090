"""One meaning of "bona fide" everywhere: the key strings of protocols and score files, the index
that is both a trial's label and the bona fide logit of every countermeasure, and the one
definition of a countermeasure's score.

The score is the bona fide minus the spoof logit: the log-odds of the model's two-class softmax,
so ``sigmoid(score)`` is its bona fide probability and 0 is the decision its argmax makes. Every
score file (``main.py``'s dev, eval and emotional-set scores, ``inference.py``'s ``score``
column) holds this number, so a threshold found on one applies to the others. (The AASIST
reference writes the bona fide logit alone; EERs of the two definitions differ slightly.)
"""
from __future__ import annotations

import numpy as np

BONAFIDE = "bonafide"  # key of genuine speech in protocols and score files
SPOOF = "spoof"
CM_KEYS = (BONAFIDE, SPOOF)
# ``Trial.label`` of a bona fide trial, and the logit index of the bona fide class in every
# countermeasure (the AASIST reference's convention); spoof is the other index.
BONAFIDE_INDEX = 1
SPOOF_INDEX = 1 - BONAFIDE_INDEX


def cm_scores(logits: np.ndarray) -> np.ndarray:
    """The score of each row of countermeasure logits (n, 2): bona fide minus spoof logit."""
    return logits[:, BONAFIDE_INDEX] - logits[:, SPOOF_INDEX]


def label_of(key: str) -> int:
    """The trial label of a score-file key (``BONAFIDE`` or ``SPOOF``)."""
    return BONAFIDE_INDEX if key == BONAFIDE else SPOOF_INDEX


def key_of(label: int) -> str:
    """The score-file key of a trial label (``BONAFIDE_INDEX`` or ``SPOOF_INDEX``)."""
    return BONAFIDE if label == BONAFIDE_INDEX else SPOOF

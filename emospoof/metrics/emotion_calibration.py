"""Emotion-aware calibration: logistic regression on dev that maps a countermeasure's score and
the utterance's emotion (an SER's arousal and valence, or its emotion posterior) to a
log-likelihood ratio, llr = a * score + c . z + b.

Why: if genuine aroused speech scores lower than genuine calm speech, a single threshold rejects
it more often; a term c . z learned on dev moves each utterance's score by what its emotion is
known to cost, which is the cheapest emotion-aware system there is (no retraining), and so the
baseline every emotion-conditioned model has to beat at the fixed threshold. The fit is the
class-balanced logistic loss of ``metrics.calibration.fit_logistic`` (Brümmer and du Preez,
Computer Speech and Language 2006), with the covariates as extra columns. Caveat: where the dev
set's share of bona fide speech differs by emotion, the emotion terms also learn that prior.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emospoof.metrics.calibration import fit_logistic


@dataclass(frozen=True)
class EmotionCalibration:
    """llr = scale * score + covariate_weights . covariates + offset, fitted on dev."""

    scale: float
    covariate_weights: tuple[float, ...]
    offset: float

    def apply(self, scores: npt.ArrayLike, covariates: npt.ArrayLike) -> np.ndarray:
        z = np.asarray(covariates, dtype=np.float64).reshape(len(np.atleast_1d(scores)), -1)
        return self.scale * np.asarray(scores, dtype=np.float64) + z @ np.asarray(self.covariate_weights) + self.offset

    def as_dict(self) -> dict:
        return {"scale": self.scale, "covariate_weights": list(self.covariate_weights), "offset": self.offset}


def fit_emotion_calibration(scores: npt.ArrayLike, covariates: npt.ArrayLike, is_bonafide: npt.ArrayLike
                            ) -> EmotionCalibration:
    """The calibration of dev ``scores`` (n,) with their ``covariates`` (n, k) and labels."""
    x = np.column_stack([np.asarray(scores, dtype=np.float64), np.asarray(covariates, dtype=np.float64)])
    weights, offset = fit_logistic(x, is_bonafide)
    return EmotionCalibration(float(weights[0]), tuple(float(w) for w in weights[1:]), float(offset))

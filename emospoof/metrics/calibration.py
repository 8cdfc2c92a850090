"""Score calibration: logistic regression that maps countermeasure scores to log-likelihood
ratios (LLRs), fitted on dev scores and applied to evaluation scores.

A countermeasure's raw score ranks trials but its scale means nothing: the score of one run can
be +5 where another's is -2 for the same evidence. Calibration fits llr = a * score + b by
minimising the class-balanced logistic loss on labelled dev trials (Brümmer and du Preez,
"Application-independent evaluation of speaker detection", Computer Speech and Language 2006; the
linear "logistic regression calibration" of the BOSARIS and FoCal toolkits). With equal class
weights that loss is Cllr itself, so on dev the fitted map gives the lowest Cllr any affine map
can; a positive ``a`` keeps the ranking (EER, min DCF unchanged) and only the decisions made at
the Bayes threshold (act DCF) and Cllr change.

The same solver fits the weights of learned score fusion (``emospoof/metrics/fusion.py``, method ``logistic``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from emospoof.core.errors import InputValueError
from emospoof.core.labels import BONAFIDE
from emospoof.metrics.asvspoof5 import act_dcf, cllr, min_dcf
from emospoof.metrics.score_files import read_cm_scores, write_cm_scores

# Newton's method on a convex two-class logistic loss; the tiny ridge keeps it finite when the
# dev classes are perfectly separable (the unregularised optimum is then at infinity).
RIDGE = 1e-6
MAX_ITERATIONS = 100
TOLERANCE = 1e-10


def _logistic_loss(z: np.ndarray, is_bonafide: np.ndarray, weight: np.ndarray) -> float:
    """Weighted log(1 + e^(-z)) for bona fide trials and log(1 + e^z) for spoofs."""
    return float(np.sum(weight * np.logaddexp(0.0, np.where(is_bonafide, -z, z))))


def fit_logistic(features: npt.ArrayLike, is_bonafide: npt.ArrayLike, prior: float = 0.5
                 ) -> tuple[np.ndarray, float]:
    """Weights w and offset b so that ``features @ w + b`` are LLRs of bona fide vs spoof.

    ``features`` is (trials, k). Each class has total weight ``prior`` (bona fide) or
    ``1 - prior`` (spoof), so the class sizes do not matter; the prior log-odds is added during
    the fit and taken off the offset afterwards (the outputs are likelihood ratios, not
    posteriors). Newton's method with a halving line search; features are standardised first.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(is_bonafide, dtype=bool)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError(f"features must be (trials, k) with one label per trial, got {x.shape} and {y.shape}")
    n_bonafide = int(y.sum())
    if n_bonafide == 0 or n_bonafide == y.size:
        raise InputValueError("calibration needs bona fide and spoof trials")
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    if np.any(scale == 0):
        raise InputValueError("a score column is constant; it cannot be calibrated")
    design = np.hstack([(x - mean) / scale, np.ones((y.size, 1))])
    weight = np.where(y, prior / n_bonafide, (1 - prior) / (y.size - n_bonafide))
    prior_logit = np.log(prior / (1 - prior))
    sign = np.where(y, 1.0, -1.0)

    def objective(theta: np.ndarray) -> float:
        return _logistic_loss(design @ theta + prior_logit, y, weight) + RIDGE * float(theta @ theta)

    theta = np.zeros(design.shape[1])
    value = objective(theta)
    for _ in range(MAX_ITERATIONS):
        z = design @ theta + prior_logit
        p_wrong = 1.0 / (1.0 + np.exp(np.clip(sign * z, -700, 700)))  # sigmoid of the margin's negative
        gradient = design.T @ (-sign * weight * p_wrong) + 2 * RIDGE * theta
        curvature = weight * p_wrong * (1 - p_wrong)
        hessian = design.T @ (design * curvature[:, None]) + 2 * RIDGE * np.eye(theta.size)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while objective(theta - size * step) > value and size > 1e-10:
            size /= 2
        theta = theta - size * step
        new_value = objective(theta)
        if value - new_value < TOLERANCE * max(1.0, abs(value)):
            value = new_value
            break
        value = new_value
    weights = theta[:-1] / scale
    return weights, float(theta[-1] - weights @ mean)


@dataclass(frozen=True)
class Calibration:
    """llr = scale * score + offset, fitted on dev."""

    scale: float
    offset: float

    def apply(self, scores: npt.ArrayLike) -> np.ndarray:
        return self.scale * np.asarray(scores, dtype=np.float64) + self.offset


def fit_calibration(scores: npt.ArrayLike, is_bonafide: npt.ArrayLike) -> Calibration:
    """The class-balanced logistic-regression calibration of dev ``scores``; refused when it would
    reverse the ranking (dev scores that rank spoofs above bona fide)."""
    weights, offset = fit_logistic(np.asarray(scores, dtype=np.float64)[:, None], is_bonafide)
    if weights[0] <= 0:
        raise InputValueError("the dev scores rank spoofs above bona fide trials; calibrating them would "
                              "reverse every decision")
    return Calibration(float(weights[0]), offset)


def llr_metrics(scores: np.ndarray, is_bonafide: np.ndarray) -> dict[str, float]:
    """The scores read as LLRs: act DCF and Cllr (bits), with min DCF, the best act DCF any
    monotone calibration could reach."""
    bonafide, spoof = scores[is_bonafide], scores[~is_bonafide]
    return {"act_dcf": act_dcf(bonafide, spoof), "cllr": cllr(bonafide, spoof), "min_dcf": min_dcf(bonafide, spoof)}


def calibration_report(calibration: Calibration, scores: npt.ArrayLike, is_bonafide: npt.ArrayLike) -> dict:
    """act DCF, Cllr and min DCF of labelled ``scores`` before and after calibration."""
    raw = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(is_bonafide, dtype=bool)
    return {"scale": calibration.scale, "offset": calibration.offset,
            "before": llr_metrics(raw, labels), "after": llr_metrics(calibration.apply(raw), labels)}


def calibrate_files(dev_path: str | os.PathLike[str], eval_path: str | os.PathLike[str],
                    output: str | os.PathLike[str]) -> dict:
    """Fit on a dev CM score file, write the eval file's scores as LLRs to ``output`` and report
    the dev fit and the eval metrics before and after (``evaluation.py --calibrate --apply``)."""
    if os.path.abspath(output) in (os.path.abspath(dev_path), os.path.abspath(eval_path)):
        raise InputValueError(f"{os.fspath(output)}: the calibrated file would overwrite an input")
    dev, evaluation = read_cm_scores(dev_path), read_cm_scores(eval_path)
    calibration = fit_calibration(dev.scores, dev.keys == BONAFIDE)
    write_cm_scores(output, replace(evaluation, scores=calibration.apply(evaluation.scores)))
    return {"dev": calibration_report(calibration, dev.scores, dev.keys == BONAFIDE),
            "eval": calibration_report(calibration, evaluation.scores, evaluation.keys == BONAFIDE),
            "output": os.fspath(output)}

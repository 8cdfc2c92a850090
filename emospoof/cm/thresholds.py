"""The one threshold a deployed countermeasure applies, carried from a run to every evaluation
set and to ``inference.py``.

A threshold is chosen on the run's dev scores (never on the set it is applied to): ``dev_eer``
(default), the threshold where the dev EER is met; ``calibrated``, where the dev-calibrated
log-likelihood ratio crosses the Bayes threshold of the ASVspoof 5 cost model; or a number given
on the command line. Scores are accepted as bona fide above it (``metrics.operating_point.accepted``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from emospoof.core.config import ConfigError
from emospoof.core.errors import InputValueError
from emospoof.core.labels import BONAFIDE
from emospoof.metrics.asvspoof5 import bayes_threshold
from emospoof.metrics.asvspoof2019 import compute_eer
from emospoof.metrics.calibration import fit_calibration
from emospoof.metrics.score_files import CmScores, read_cm_scores

THRESHOLD_KINDS = ("dev_eer", "calibrated")
# The dev score file of a finished run (written by emospoof.cm.training), the model's own scores.
DEV_SCORES = "dev_scores.txt"


def threshold_from_dev(dev: CmScores, kind: str, source: str) -> tuple[float, str]:
    """The ``kind`` threshold of dev scores, and the words that say where it comes from."""
    is_bonafide = dev.keys == BONAFIDE
    if kind == "dev_eer":
        eer, threshold = compute_eer(dev.scores[is_bonafide], dev.scores[~is_bonafide])
        return float(threshold), f"dev EER threshold ({100 * eer:.2f} % EER on {source})"
    try:
        calibration = fit_calibration(dev.scores, is_bonafide)
    except InputValueError as err:  # dev scores ranked upside down
        raise ConfigError(f"{source}: no calibrated threshold: {err}") from None
    return (float((bayes_threshold() - calibration.offset) / calibration.scale),
            f"calibrated Bayes threshold (LLR {bayes_threshold():.3f}, calibration fitted on {source})")


def fixed_threshold(spec: str | None, dev: CmScores | None, dev_path: str | None) -> tuple[float, str] | None:
    """The threshold ``--threshold`` asks for: a number, ``dev_eer`` or ``calibrated`` (which need
    dev scores), or by default the dev EER threshold when dev scores are known, else none."""
    if spec is not None and spec not in THRESHOLD_KINDS:
        try:
            value = float(spec)
        except ValueError:
            raise ConfigError(f"--threshold: expected a number or one of {', '.join(THRESHOLD_KINDS)}, "
                              f"got {spec!r}") from None
        if not np.isfinite(value):
            raise ConfigError(f"--threshold: expected a finite number, got {spec!r}")
        return value, "--threshold"
    if dev is None:
        if spec is not None:
            raise ConfigError(f"--threshold {spec}: needs the model's dev scores (a run's {DEV_SCORES}, or "
                              "--dev_scores)")
        return None
    return threshold_from_dev(dev, spec or "dev_eer", str(dev_path))


def run_threshold(run_dir: Path, kind: str = "dev_eer") -> tuple[float, str]:
    """The ``kind`` threshold of a finished run folder, from its dev scores."""
    path = run_dir / DEV_SCORES
    if not path.is_file():
        raise ConfigError(f"--run: {run_dir} has no {DEV_SCORES} (is it a finished main.py run?)")
    return threshold_from_dev(read_cm_scores(path), kind, str(path))

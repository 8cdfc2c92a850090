"""Time the countermeasure metrics on one million synthetic scores: the ASVspoof 2019 EER and min
t-DCF, the ASVspoof 5 track 1 metrics (min DCF, act DCF, Cllr, EER), the track 2 metrics (a-DCF,
min t-DCF, t-EER) and the logistic-regression calibration.

Run from anywhere: ``python3 benchmarks/bench_metrics.py [--n 1000000] [--repeats 5]``.
The metrics are meant to stay under a second each at this size, so evaluating a full ASVspoof 5
eval set (680 774 trials) is never the bottleneck.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

# Run as a plain script, the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emospoof.metrics.asvspoof5 import a_dcf, cm_metrics, min_tdcf_organiser_asv, t_eer
from emospoof.metrics.asvspoof2019 import compute_eer, compute_min_tdcf
from emospoof.metrics.calibration import fit_calibration


def best_time(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest of several runs (the least noisy estimate of the cost itself) and the result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="CM scores and SASV trials, each")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n_bonafide = args.n // 10  # roughly the ASVspoof 2019 LA eval class balance
    bonafide = rng.normal(2.0, 1.5, n_bonafide)
    spoof = rng.normal(-2.0, 1.5, args.n - n_bonafide)
    # Round the ASV scores so ties occur, as they do with real score files.
    tar_asv = np.round(rng.normal(3.0, 1.0, args.n // 10), 3)
    non_asv = np.round(rng.normal(-3.0, 1.0, args.n * 6 // 10), 3)
    spoof_asv = np.round(rng.normal(1.0, 2.0, args.n - tar_asv.size - non_asv.size), 3)
    # SASV trials: a third each of targets, non-targets and spoofs, with ASV and CM scores.
    third = args.n // 3
    asv = [rng.normal(m, 1.0, third) for m in (2.0, -1.0, 1.0)]
    cm = [rng.normal(m, 1.0, third) for m in (1.5, 1.5, -1.5)]
    labels = np.arange(args.n) < n_bonafide
    scores = np.concatenate((bonafide, spoof))

    timings = {
        "2019 EER": lambda: 100 * compute_eer(bonafide, spoof)[0],
        "2019 min t-DCF": lambda: compute_min_tdcf(bonafide, spoof, tar_asv, non_asv, spoof_asv),
        "ASVspoof 5 track 1 (4 metrics)": lambda: cm_metrics(bonafide, spoof)["min_dcf"],
        "ASVspoof 5 a-DCF": lambda: a_dcf(*asv),
        "ASVspoof 5 min t-DCF": lambda: min_tdcf_organiser_asv(bonafide, spoof),
        "ASVspoof 5 t-EER": lambda: t_eer(*asv, *cm),
        "calibration fit": lambda: fit_calibration(scores, labels).scale,
    }
    print(f"{args.n:,} scores per metric (CM: {n_bonafide:,} bona fide); best of {args.repeats}")
    for name, run in timings.items():
        seconds, value = best_time(run, args.repeats)
        print(f"  {name:<32} {seconds * 1000:8.1f} ms   (value {value:.4f})")


if __name__ == "__main__":
    main()

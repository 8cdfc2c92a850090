"""Time the CM EER and min t-DCF on one million synthetic scores.

Run from anywhere: ``python3 benchmarks/bench_metrics.py [--n 1000000] [--repeats 5]``.
The metrics are meant to stay well under a second at this size, so per-epoch evaluation of a
full ASVspoof eval set is never the bottleneck.
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
from metrics import compute_eer, compute_min_tdcf  # noqa: E402


def best_time(run: Callable[[], object], repeats: int) -> float:
    """Fastest of several runs, the least noisy estimate of the cost itself."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="CM and ASV scores, each")
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

    eer_seconds = best_time(lambda: compute_eer(bonafide, spoof), args.repeats)
    tdcf_seconds = best_time(
        lambda: compute_min_tdcf(bonafide, spoof, tar_asv, non_asv, spoof_asv), args.repeats
    )
    eer, _ = compute_eer(bonafide, spoof)
    min_tdcf = compute_min_tdcf(bonafide, spoof, tar_asv, non_asv, spoof_asv)
    print(f"{args.n:,} CM scores ({n_bonafide:,} bona fide), {args.n:,} ASV scores; "
          f"best of {args.repeats}")
    print(f"  EER        {eer_seconds * 1000:8.1f} ms   (EER {100 * eer:.3f} %)")
    print(f"  min t-DCF  {tdcf_seconds * 1000:8.1f} ms   (min t-DCF {min_tdcf:.4f})")
    print(f"  total      {(eer_seconds + tdcf_seconds) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()

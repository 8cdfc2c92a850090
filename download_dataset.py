"""Download and unpack the training and evaluation data (``emospoof.downloads.registry.DATASETS``).

    python download_dataset.py --dataset LA [--output_dir data]
    python download_dataset.py --dataset emotional [--output_dir data]

``LA`` is ASVspoof 2019 LA (Wang et al., 2020) from the organisers' host (7.1 GB zip); an
interrupted download resumes where it stopped. ``emotional`` is the Dataset of Synthesized Emotional
Speech (DSES) from its Kaggle page, fetched with the Kaggle API when credentials are configured.
Archives are checked (every member's CRC-32, the transfer's length) and unpacked only if no member
could land outside the target folder. Re-running skips a dataset that is already complete.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emospoof.downloads.http import DownloadError
from emospoof.downloads.registry import DATASETS, fetch_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--output_dir", type=Path, default=Path("."), help="default: the current folder")
    parser.add_argument("--keep_archive", action="store_true", help="keep the downloaded archive")
    args = parser.parse_args(argv)
    source = DATASETS[args.dataset]
    try:
        root = fetch_dataset(source, args.output_dir, args.keep_archive)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"put this in the config: \"{source.config_key}\": \"{root}/\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())

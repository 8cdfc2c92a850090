"""Download published countermeasure weights, verified against their sha256 (``emospoof.downloads.registry.REGISTRY``).

    python download_weights.py --list
    python download_weights.py --model AASIST [--model AASIST-L] [--output_dir models/weights]
    python download_weights.py --AASIST --AASIST-L --AMSDF     # the same by name (AMSDF: M1-M3)

The official AASIST and AASIST-L weights are also shipped in ``models/weights/``. Weights published
without a checksum (AMSDF's M1-M3, DPHuBERT) are verified against the sha256 and size recorded at
their first download.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emospoof.downloads.http import DownloadError
from emospoof.downloads.registry import DEFAULT_WEIGHTS_DIR, REGISTRY, describe_weights, fetch_named_weights

# Flags that stand for --model NAME (the commands of the seed projects' READMEs).
ALIASES = {"AASIST": ("AASIST",), "AASIST-L": ("AASIST-L",), "AMSDF": ("AMSDF-M1", "AMSDF-M2", "AMSDF-M3")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=sorted(REGISTRY), help="repeat for several")
    for alias, names in ALIASES.items():
        parser.add_argument(f"--{alias}", dest="aliases", action="append_const", const=alias,
                            help=f"same as --model {' --model '.join(names)}")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help=f"default: {DEFAULT_WEIGHTS_DIR}")
    parser.add_argument("--list", action="store_true", help="show the known weights and exit")
    args = parser.parse_args(argv)
    if args.list:
        print(describe_weights())
        return 0
    names = list(args.model or []) + [name for alias in args.aliases or [] for name in ALIASES[alias]]
    if not names:
        parser.error("--model (or --AASIST, --AASIST-L, --AMSDF) is required (or --list)")
    try:
        for line in fetch_named_weights(list(dict.fromkeys(names)), args.output_dir):
            print(line)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())

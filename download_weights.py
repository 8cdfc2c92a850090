"""Download published countermeasure weights, verified against their sha256 (``downloads.REGISTRY``).

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

from downloads import DEFAULT_WEIGHTS_DIR, RECORD_FILE, REGISTRY, DownloadError, fetch_weights

# Flags that stand for --model NAME (the commands of the seed projects' READMEs).
ALIASES = {"AASIST": ("AASIST",), "AASIST-L": ("AASIST-L",), "AMSDF": ("AMSDF-M1", "AMSDF-M2", "AMSDF-M3")}


def print_registry() -> None:
    for entry in REGISTRY.values():
        size = f"{entry.size} bytes" if entry.size else "size not published"
        how = "download by hand from" if entry.manual else "url"
        print(f"{entry.name}: {entry.filename}, {size}, for {entry.config}, from {entry.source}\n"
              f"  {how} {entry.url}\n  sha256 {entry.sha256 or f'not published (recorded at first download in {RECORD_FILE})'}")


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
        print_registry()
        return 0
    names = list(args.model or []) + [name for alias in args.aliases or [] for name in ALIASES[alias]]
    if not names:
        parser.error("--model (or --AASIST, --AASIST-L, --AMSDF) is required (or --list)")
    for name in dict.fromkeys(names):
        entry = REGISTRY[name]
        dest = args.output_dir / entry.filename
        try:
            downloaded = fetch_weights(entry, dest)
        except DownloadError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        state = "downloaded" if downloaded else "already present"
        check = ("sha256 verified" if entry.sha256 else
                 f"no published checksum: sha256 and size checked against / recorded in {dest.parent / RECORD_FILE}")
        print(f"{name}: {state}, {check}: {dest} (config {entry.config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Download published countermeasure weights, verified against their sha256 (``downloads.REGISTRY``).

    python download_weights.py --list
    python download_weights.py --model AASIST [--model AASIST-L] [--output_dir models/weights]

The official AASIST and AASIST-L weights are also shipped in ``models/weights/``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from downloads import DEFAULT_WEIGHTS_DIR, REGISTRY, DownloadError, fetch_weights


def print_registry() -> None:
    for entry in REGISTRY.values():
        print(f"{entry.name}: {entry.filename}, {entry.size} bytes, for {entry.config}, from {entry.source}\n"
              f"  url    {entry.url}\n  sha256 {entry.sha256}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=sorted(REGISTRY), help="repeat for several")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help=f"default: {DEFAULT_WEIGHTS_DIR}")
    parser.add_argument("--list", action="store_true", help="show the known weights and exit")
    args = parser.parse_args(argv)
    if args.list:
        print_registry()
        return 0
    if not args.model:
        parser.error("--model is required (or --list)")
    for name in args.model:
        entry = REGISTRY[name]
        dest = args.output_dir / entry.filename
        try:
            downloaded = fetch_weights(entry, dest)
        except DownloadError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        state = "downloaded" if downloaded else "already present"
        print(f"{name}: {state}, sha256 verified: {dest} (config {entry.config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

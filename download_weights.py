"""Download published countermeasure weights, verified against the sha256 values below.

    python download_weights.py --list
    python download_weights.py --model AASIST [--model AASIST-L] [--output_dir models/weights]

The HTTP code here (resume with Range, sha256 check, atomic rename) is also what
``download_dataset.py`` and ``inference.py`` use, so it lives once, in this module.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "models" / "weights"
CHUNK_BYTES = 1 << 20
RETRY_DELAY_S = 2.0  # pause before resuming after a cut connection
MAX_RETRIES = 3  # resumptions after cut connections within one run
TIMEOUT_S = 30.0  # socket timeout: a stalled transfer counts as a cut connection
USER_AGENT = "emospoof-downloader/1.0"


class DownloadError(Exception):
    """A download that could not be completed or verified; the message is one line saying what
    to do about it."""


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint: where it comes from and what it must hash to."""

    name: str
    filename: str
    url: str
    sha256: str
    size: int
    config: str
    source: str


# The official AASIST / AASIST-L weights (Jung et al., ICASSP 2022; MIT licence, NAVER Corp.),
# as published in the reference repository. The emotion-conditioned and SSL models of this
# project have no published checkpoint with a known hash yet, so they have no entry.
REGISTRY: dict[str, WeightsEntry] = {
    entry.name: entry for entry in (
        WeightsEntry(
            "AASIST", "AASIST.pth",
            "https://raw.githubusercontent.com/clovaai/aasist/main/models/weights/AASIST.pth",
            "51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0", 1_281_532,
            "config/AASIST.conf", "clovaai/aasist (MIT)"),
        WeightsEntry(
            "AASIST-L", "AASIST-L.pth",
            "https://raw.githubusercontent.com/clovaai/aasist/main/models/weights/AASIST-L.pth",
            "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a", 426_428,
            "config/AASIST-L.conf", "clovaai/aasist (MIT)"),
    )
}


def entry_for_path(path: str | Path) -> WeightsEntry | None:
    """The registry entry whose file name is ``path``'s, so that a config's ``model_path`` such as
    ``models/weights/AASIST.pth`` can be fetched when it is missing."""
    name = Path(path).name
    return next((entry for entry in REGISTRY.values() if entry.filename == name), None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_complete(path: Path, sha256: str | None, size: int | None) -> bool:
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256_of(path) == sha256


def _manual_hint(url: str, dest: Path) -> str:
    return f"download {url} by hand (a browser works) and save it as {dest}"


def _open(url: str, offset: int, secret_headers: dict[str, str]) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    # Credentials must not follow a redirect to another host (Kaggle redirects to cloud storage).
    for key, value in secret_headers.items():
        request.add_unredirected_header(key, value)
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def _resume_offset(response: http.client.HTTPResponse, offset: int) -> int:
    """Where the body starts: ``offset`` if the server honoured the Range request, else 0."""
    if offset and response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        start = content_range.removeprefix("bytes ").split("-")[0]
        if start.isdigit() and int(start) == offset:
            return offset
    return 0


def _transfer(response: http.client.HTTPResponse, part: Path, offset: int, desc: str,
              progress: bool) -> None:
    """Append the body to ``part`` from ``offset``; a body shorter than announced is an error."""
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else None
    received = offset
    with open(part, "r+b" if offset else "wb") as handle, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
            disable=not progress, leave=False) as bar:
        handle.seek(offset)
        handle.truncate()
        for block in iter(lambda: response.read(CHUNK_BYTES), b""):
            handle.write(block)
            received += len(block)
            bar.update(len(block))
    if total is not None and received < total:
        raise http.client.IncompleteRead(b"", total - received)


def download_file(url: str, dest: str | Path, sha256: str | None = None, size: int | None = None,
                  secret_headers: dict[str, str] | None = None, progress: bool = True) -> bool:
    """Fetch ``url`` to ``dest`` unless a complete copy is already there; returns whether it
    downloaded.

    Data goes to ``dest.part`` first: an interrupted transfer is resumed with an HTTP Range request
    (here after a cut connection, up to ``MAX_RETRIES`` times, or on the next run), and only a file
    that matches ``size`` and ``sha256`` is renamed into place. A mismatch deletes the download.
    ``secret_headers`` (credentials) are sent to ``url`` only, never to where it redirects.
    """
    dest = Path(dest)
    if _is_complete(dest, sha256, size):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        if size is not None and offset > size:
            offset = 0
        try:
            response = _open(url, offset, secret_headers or {})
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # nothing left to send: the partial file is complete
                break
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}; {_manual_hint(url, dest)}") from None
        except (urllib.error.URLError, OSError) as err:  # no network, DNS failure, refused
            reason = getattr(err, "reason", err)
            raise DownloadError(f"cannot reach {url} ({reason}); {_manual_hint(url, dest)}") from None
        try:
            with response:
                _transfer(response, part, _resume_offset(response, offset), dest.name, progress)
            break
        except (http.client.HTTPException, ConnectionError, socket.timeout) as err:
            failures += 1
            if failures > MAX_RETRIES:
                raise DownloadError(f"{url}: connection lost {failures} times ({type(err).__name__}); "
                                    f"run the command again to resume from {part}") from None
            time.sleep(RETRY_DELAY_S)
        except OSError as err:
            raise DownloadError(f"cannot write {part}: {err.strerror or err}") from None
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(f"{url}: expected {size} bytes, received {actual_size}; the download was "
                            "removed, run the command again")
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256:
            part.unlink()
            raise DownloadError(f"{url}: sha256 mismatch (expected {sha256}, got {actual}); the "
                                "download was removed")
    os.replace(part, dest)
    return True


def fetch_weights(entry: WeightsEntry, dest: Path, progress: bool = True) -> bool:
    """Download one registry entry to ``dest`` (sha256-verified); True if it was downloaded."""
    return download_file(entry.url, dest, entry.sha256, entry.size, progress=progress)


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

"""HTTP downloads that survive cut connections: resume with Range requests, verify the size and
sha256, and rename into place only when complete."""
from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from emospoof.core.errors import InputError

CHUNK_BYTES = 1 << 20
RETRY_DELAY_S = 2.0  # pause before resuming after a cut connection
MAX_RETRIES = 3  # resumptions after cut connections within one run
TIMEOUT_S = 30.0  # socket timeout: a stalled transfer counts as a cut connection
USER_AGENT = "emospoof-downloader/1.0"


class DownloadError(InputError):
    """A download that could not be completed or verified; the message is one line saying what
    to do about it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def is_complete(path: Path, sha256: str | None, size: int | None) -> bool:
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
    if is_complete(dest, sha256, size):
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

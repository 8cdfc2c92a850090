"""Downloads: the HTTP code (resume with Range, sha256 check, atomic rename), safe archive
extraction, and the registries of published weights and datasets that ``download_weights.py``,
``download_dataset.py`` and ``inference.py`` (fetching missing official weights) use.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

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
    sha256: str | None  # None: not published; recorded at the first download (RECORD_FILE)
    size: int | None
    config: str
    source: str
    manual: bool = False  # the url is a page to download from by hand (e.g. a Google Drive folder)


# The official AASIST / AASIST-L weights (Jung et al., ICASSP 2022; MIT licence, NAVER Corp.),
# as published in the reference repository; AMSDF's M1-M3 (Wu et al., IEEE TIFS 2024; three seeds,
# trained with 0 = real: models/AMSDF.py converts them), published in a Google Drive folder without
# checksums; DPHuBERT's pruned HuBERT Base (Peng et al., Interspeech 2023), the SSL encoder of
# config/AASIST_DPHuBERT.conf, on Hugging Face without a checksum.
AMSDF_FOLDER = "https://drive.google.com/drive/folders/1XjVZ6K12KdC3Xm2Ri5l8FYpUJf5IlqPa"
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
        *(WeightsEntry(f"AMSDF-{seed}", f"AMSDF_{seed}.pth", AMSDF_FOLDER, None, None, "config/AMSDF.conf",
                       f"ItzJuny/AMSDF README, checkpoint {seed}.pth", manual=True) for seed in ("M1", "M2", "M3")),
        WeightsEntry(
            "DPHuBERT-sp0.75", "DPHuBERT-sp0.75.pth",
            "https://huggingface.co/pyf98/DPHuBERT/resolve/main/DPHuBERT-sp0.75.pth", None, None,
            "config/AASIST_DPHuBERT.conf (ssl_path)", "pyf98/DPHuBERT README"),
    )
}
# Where the sha256 and size of downloads without a published checksum are recorded (in the
# download folder), so that later downloads are verified against the first one.
RECORD_FILE = "RECORDED_SHA256SUMS.json"


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


def _recorded(dest: Path) -> dict:
    record = dest.parent / RECORD_FILE
    try:
        return json.loads(record.read_text()) if record.is_file() else {}
    except (OSError, ValueError) as err:
        raise DownloadError(f"{record}: unreadable ({err}); fix or delete it") from None


def _record(dest: Path) -> None:
    """Remember ``dest``'s sha256 and size beside it (trust on first download)."""
    records = _recorded(dest)
    records[dest.name] = {"sha256": sha256_of(dest), "size": dest.stat().st_size}
    tmp = dest.parent / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    os.replace(tmp, dest.parent / RECORD_FILE)


def fetch_weights(entry: WeightsEntry, dest: Path, progress: bool = True) -> bool:
    """Download one registry entry to ``dest``, verified; True if it was downloaded.

    An entry without a published checksum is verified against the sha256 and size recorded in
    ``RECORD_FILE`` at its first download (or first use of a copy saved by hand), and recorded
    then. A ``manual`` entry cannot be fetched over plain HTTP: without a copy at ``dest`` the
    error says where to download it by hand."""
    sha256, size = entry.sha256, entry.size
    if sha256 is None:
        known = _recorded(dest).get(dest.name, {})
        sha256, size = known.get("sha256"), known.get("size")
    if entry.manual and not dest.is_file():
        raise DownloadError(f"{entry.name} is published at {entry.url} for download by hand: save "
                            f"{entry.source.rsplit(' ', 1)[-1]} from there as {dest} and run the command again")
    if entry.manual:
        if sha256 is not None and not _is_complete(dest, sha256, size):
            raise DownloadError(f"{dest}: sha256 or size differ from those recorded at its first use in "
                                f"{dest.parent / RECORD_FILE}; replace the file or delete the record")
        downloaded = False
    else:
        downloaded = download_file(entry.url, dest, sha256, size, progress=progress)
    if entry.sha256 is None and sha256 is None:
        _record(dest)
    return downloaded


MARKER = ".emospoof-complete"


class UnsafeArchiveError(DownloadError):
    """An archive member that would be written outside the target folder, or is not a plain
    file or folder (links, devices)."""


class CorruptArchiveError(DownloadError):
    """An archive that cannot be read to the end or fails its checksums."""


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from, where it unpacks to and how to recognise it once unpacked."""

    name: str
    url: str
    archive: str
    unpack_into: str  # folder (relative to --output_dir) the archive is unpacked in
    root: str  # where the dataset usually ends up (relative to --output_dir), for instructions
    config_key: str
    expected: tuple[str, ...]  # paths (relative to root) that a complete copy has
    page: str
    kaggle: str | None = None  # "owner/dataset" for Kaggle-hosted data


DATASETS: dict[str, DatasetSource] = {
    "LA": DatasetSource(
        "LA", "https://datashare.ed.ac.uk/bitstream/handle/10283/3336/LA.zip", "LA.zip", ".", "LA",
        "database_path",
        ("ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt",
         "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt",
         "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt",
         "ASVspoof2019_LA_train/flac", "ASVspoof2019_LA_dev/flac", "ASVspoof2019_LA_eval/flac"),
        "https://datashare.ed.ac.uk/handle/10283/3336"),
    "emotional": DatasetSource(
        "emotional",
        "https://www.kaggle.com/api/v1/datasets/download/annazykovamyzina/dataset-of-synthesized-emotional-speech",
        "DSES.zip", "DSES", "DSES", "emo_dataset", ("ESD",),
        "https://www.kaggle.com/datasets/annazykovamyzina/dataset-of-synthesized-emotional-speech",
        kaggle="annazykovamyzina/dataset-of-synthesized-emotional-speech"),
}
EMOTIONAL_LAYOUT = ("DSES/<SYSTEM>/<SPEAKER>/<emotion>/*.flac|wav, emotion in angry, happy, neutral, "
                    "sad, surprised; bona fide recordings in the system folder ESD")


# ---------------------------------------------------------------------------------------------
# Safe extraction


def member_target(root: Path, name: str) -> Path:
    """Where member ``name`` goes under ``root``; refuses absolute names, ``..`` and anything
    that resolves outside ``root`` (including through links already on disk)."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise UnsafeArchiveError(f"member {name!r} has an absolute path")
    parts = PurePosixPath(posix).parts
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r} climbs out with '..'")
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise UnsafeArchiveError(f"member {name!r} resolves outside {root}")
    return target


def _zip_members(archive: zipfile.ZipFile, root: Path) -> list[tuple[zipfile.ZipInfo, Path]]:
    members = []
    for info in archive.infolist():
        # Unix file type in the high bits; 0 when the creator stored none (e.g. on Windows).
        if stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f"member {info.filename!r} is a link or special file")
        members.append((info, member_target(root, info.filename)))
    return members


def _tar_members(archive: tarfile.TarFile, root: Path) -> list[tuple[tarfile.TarInfo, Path]]:
    members = []
    for info in archive.getmembers():
        if not (info.isfile() or info.isdir()):
            raise UnsafeArchiveError(f"member {info.name!r} is a link or special file")
        members.append((info, member_target(root, info.name)))
    return members


def safe_extract(archive_path: Path, root: Path) -> int:
    """Unpack a zip or tar archive into ``root``; every member is checked before anything is
    written, so an unsafe archive leaves no file behind. Returns the number of files written."""
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                members = _zip_members(archive, root)
                return _write_members(members, archive.open, lambda info: info.is_dir())
        if tarfile.is_tarfile(archive_path):
            with tarfile.open(archive_path) as archive:
                members = _tar_members(archive, root)
                return _write_members(members, archive.extractfile, lambda info: info.isdir())
    except UnsafeArchiveError as err:
        raise UnsafeArchiveError(f"{archive_path}: unsafe archive, nothing extracted: {err}") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise CorruptArchiveError(f"{archive_path}: corrupt archive ({err})") from None
    except OSError as err:
        raise DownloadError(f"cannot unpack {archive_path} into {root} ({err})") from None
    raise CorruptArchiveError(f"{archive_path}: not a zip or tar archive")


def _write_members(members: list, open_member, is_dir) -> int:
    written = 0
    for info, target in members:
        if is_dir(info):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(info) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)  # zip members are CRC-checked as they are read
        written += 1
    return written


# ---------------------------------------------------------------------------------------------
# Datasets


def kaggle_credentials() -> tuple[str, str] | None:
    """Kaggle API user name and key from KAGGLE_USERNAME/KAGGLE_KEY or kaggle.json."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return os.environ["KAGGLE_USERNAME"], os.environ["KAGGLE_KEY"]
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    try:
        token = json.loads((config_dir / "kaggle.json").read_text())
        return token["username"], token["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def manual_instructions(source: DatasetSource, output_dir: Path) -> str:
    lines = [f"Download {source.archive} by hand from {source.page}",
             f"and unpack it so that {output_dir / source.root} exists"]
    if source.name == "emotional":
        lines.append(f"in the layout {EMOTIONAL_LAYOUT}")
        lines.append("(or configure Kaggle API credentials, KAGGLE_USERNAME and KAGGLE_KEY or "
                     "~/.kaggle/kaggle.json, and run this command again)")
    lines.append(f"then set \"{source.config_key}\": \"{output_dir / source.root}\" in the config.")
    return "\n".join(lines)


def find_root(source: DatasetSource, base: Path) -> Path | None:
    """The folder at most two levels under ``base`` that has every expected part of the dataset
    (archives differ in whether they wrap their content in a top folder)."""
    if not base.is_dir():
        return None
    candidates = [base] + sorted(p for p in base.iterdir() if p.is_dir())
    candidates += sorted(q for p in candidates[1:] for q in p.iterdir() if q.is_dir())
    return next((c for c in candidates if all((c / part).exists() for part in source.expected)), None)


def fetch_dataset(source: DatasetSource, output_dir: Path, keep_archive: bool = False,
                  progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Download, verify and unpack ``source`` under ``output_dir``; returns the folder for the
    config. A dataset already unpacked completely is left alone."""
    base = output_dir / source.unpack_into
    root = find_root(source, base)
    if root is not None and (root / MARKER).is_file():
        log(f"{source.name}: already complete in {root}")
        return root
    secret_headers = {}
    if source.kaggle:
        credentials = kaggle_credentials()
        if credentials is None:
            raise DownloadError(f"no Kaggle API credentials found.\n{manual_instructions(source, output_dir)}")
        token = base64.b64encode(":".join(credentials).encode()).decode()
        secret_headers["Authorization"] = f"Basic {token}"
    archive = output_dir / source.archive
    log(f"{source.name}: downloading {source.url} to {archive}")
    try:
        download_file(source.url, archive, secret_headers=secret_headers, progress=progress)
    except DownloadError as err:
        raise DownloadError(f"{err}\n{manual_instructions(source, output_dir)}") from None
    log(f"{source.name}: unpacking {archive} into {base}")
    try:
        count = safe_extract(archive, base)
    except CorruptArchiveError as err:
        archive.unlink()
        raise DownloadError(f"{err}; it was removed, run the command again to download it anew") from None
    root = find_root(source, base)
    if root is None:
        raise DownloadError(f"{archive} unpacked ({count} files) into {base}, but no folder there has "
                            f"{', '.join(source.expected)}.\n{manual_instructions(source, output_dir)}")
    (root / MARKER).write_text(f"{source.url}\n{count} files\n")
    if not keep_archive:
        archive.unlink()
    log(f"{source.name}: {count} files unpacked, dataset in {root}")
    return root

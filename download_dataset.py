"""Download and unpack the training and evaluation data.

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
import base64
import gzip
import json
import os
import shutil
import stat
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from download_weights import DownloadError, download_file

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

"""Safe archive extraction: every member is checked (CRC-32, the transfer's length) and nothing is
unpacked if any member could land outside the target folder or is not a plain file or folder."""
from __future__ import annotations

import gzip
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from emospoof.downloads.http import DownloadError


class UnsafeArchiveError(DownloadError):
    """An archive member that would be written outside the target folder, or is not a plain
    file or folder (links, devices)."""


class CorruptArchiveError(DownloadError):
    """An archive that cannot be read to the end or fails its checksums."""


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

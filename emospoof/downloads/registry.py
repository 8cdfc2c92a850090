"""The registries of published weights (``REGISTRY``) and datasets (``DATASETS``) that
``download_weights.py``, ``download_dataset.py`` and ``inference.py`` (fetching missing official
weights) use, and the fetching of each: verified weights, unpacked datasets, Kaggle credentials.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from emospoof.downloads.archives import CorruptArchiveError, safe_extract
from emospoof.downloads.http import DownloadError, download_file, is_complete, sha256_of

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "models" / "weights"


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
        if sha256 is not None and not is_complete(dest, sha256, size):
            raise DownloadError(f"{dest}: sha256 or size differ from those recorded at its first use in "
                                f"{dest.parent / RECORD_FILE}; replace the file or delete the record")
        downloaded = False
    else:
        downloaded = download_file(entry.url, dest, sha256, size, progress=progress)
    if entry.sha256 is None and sha256 is None:
        _record(dest)
    return downloaded



def describe_weights() -> str:
    """The known weights, one paragraph each (``download_weights.py --list``)."""
    paragraphs = []
    for entry in REGISTRY.values():
        size = f"{entry.size} bytes" if entry.size else "size not published"
        how = "download by hand from" if entry.manual else "url"
        checksum = entry.sha256 or f"not published (recorded at first download in {RECORD_FILE})"
        paragraphs.append(f"{entry.name}: {entry.filename}, {size}, for {entry.config}, from {entry.source}\n"
                          f"  {how} {entry.url}\n  sha256 {checksum}")
    return "\n".join(paragraphs)


def fetch_named_weights(names: list[str], output_dir: Path) -> Iterator[str]:
    """Fetch each named entry of ``REGISTRY`` into ``output_dir``, yielding one line per file on
    what was done and how it was verified; the first failure raises ``DownloadError``."""
    for name in names:
        entry = REGISTRY[name]
        dest = output_dir / entry.filename
        state = "downloaded" if fetch_weights(entry, dest) else "already present"
        check = ("sha256 verified" if entry.sha256 else
                 f"no published checksum: sha256 and size checked against / recorded in {dest.parent / RECORD_FILE}")
        yield f"{name}: {state}, {check}: {dest} (config {entry.config})"

MARKER = ".emospoof-complete"


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

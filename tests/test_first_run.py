"""The README's first scoring command works on a fresh clone: no network, no ../shared."""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

FIRST_RUN = ["inference.py", "--config", "config/AASIST.conf", "--test_dir", "examples/"]


def clone_like_copy(destination) -> None:
    """The files a clone would have: tracked ones and untracked ones git does not ignore."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell which files a clone would have")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)


def test_shipped_weights_match_their_checksums():
    weights = REPO / "models/weights"
    assert (weights / "LICENSE.AASIST-weights").is_file()
    for line in (weights / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((weights / name).read_bytes()).hexdigest() == digest, name


def test_first_scoring_command_works_offline_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "emospoof"  # no ../shared beside it
    clone_like_copy(clone)
    assert not (tmp_path / "shared").exists()
    # Any download attempt would go through this dead proxy and fail.
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HF_HUB_OFFLINE": "1", "EMOSPOOF_SHARED": str(tmp_path / "shared")}
    done = subprocess.run([sys.executable, *FIRST_RUN], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    with open(clone / "scores.tsv", newline="") as handle:
        scores = {row["path"]: float(row["score"]) for row in csv.DictReader(handle, delimiter="\t")}
    with open(clone / "examples/labels.tsv", newline="") as handle:
        keys = {row["path"]: row["key"] for row in csv.DictReader(handle, delimiter="\t")}
    assert set(scores) == set(keys) and len(keys) == 4
    bonafide = [scores[path] for path, key in keys.items() if key == "bonafide"]
    spoof = [scores[path] for path, key in keys.items() if key == "spoof"]
    assert min(bonafide) > max(spoof), scores

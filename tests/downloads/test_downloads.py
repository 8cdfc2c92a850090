"""download_weights.py and download_dataset.py against a real HTTP server on 127.0.0.1 serving
generated files: resume, sha256, Kaggle credentials, and archives with malicious members."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import download_dataset
import download_weights
from emospoof.downloads.archives import UnsafeArchiveError, safe_extract
from emospoof.downloads.http import DownloadError, download_file
from emospoof.downloads.registry import (DATASETS, MARKER, RECORD_FILE, REGISTRY, entry_for_path, fetch_dataset,
                                         fetch_weights)


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ---------------------------------------------------------------------------------------------
# download_weights.py


@pytest.mark.parametrize("name", ["AASIST", "AASIST-L"])
def test_official_weights_download_and_verify_with_the_real_hashes(server, shared_dir, tmp_path, name):
    entry = REGISTRY[name]
    data = (shared_dir / "reference/weights" / entry.filename).read_bytes()
    server.files["/w.pth"] = data
    local = dataclasses.replace(entry, url=server.url("/w.pth"))
    dest = tmp_path / "models/weights" / entry.filename
    assert fetch_weights(local, dest, progress=False) is True
    assert dest.read_bytes() == data and not dest.with_name(dest.name + ".part").exists()
    assert fetch_weights(local, dest, progress=False) is False  # complete copy: nothing fetched
    assert len(server.requests) == 1


def test_resumes_after_a_cut_connection_with_a_range_request(server, tmp_path):
    data = random_bytes(3_000_000)
    server.files["/big.bin"] = data
    server.cut_after["/big.bin"] = 1_234_567
    dest = tmp_path / "big.bin"
    download_file(server.url("/big.bin"), dest, hashlib.sha256(data).hexdigest(), len(data), progress=False)
    assert dest.read_bytes() == data
    assert server.ranges("/big.bin") == [None, "bytes=1234567-"]


def test_resumes_a_partial_file_left_by_an_earlier_run(server, tmp_path):
    data = random_bytes(500_000, seed=1)
    server.files["/w.bin"] = data
    dest = tmp_path / "w.bin"
    dest.with_name("w.bin.part").write_bytes(data[:200_000])
    download_file(server.url("/w.bin"), dest, hashlib.sha256(data).hexdigest(), progress=False)
    assert dest.read_bytes() == data and server.ranges("/w.bin") == ["bytes=200000-"]


def test_a_server_without_range_support_restarts_from_zero(server, tmp_path):
    data = random_bytes(300_000, seed=2)
    server.files["/w.bin"] = data
    server.ignore_range.add("/w.bin")
    dest = tmp_path / "w.bin"
    dest.with_name("w.bin.part").write_bytes(b"x" * 100_000)  # junk that must not be kept
    download_file(server.url("/w.bin"), dest, hashlib.sha256(data).hexdigest(), progress=False)
    assert dest.read_bytes() == data


def test_sha256_mismatch_removes_the_download(server, tmp_path):
    server.files["/w.pth"] = random_bytes(10_000, seed=3)
    entry = dataclasses.replace(REGISTRY["AASIST"], url=server.url("/w.pth"), size=10_000)
    dest = tmp_path / "AASIST.pth"
    with pytest.raises(DownloadError) as err:
        fetch_weights(entry, dest, progress=False)
    message = str(err.value)
    assert "sha256 mismatch" in message and entry.sha256 in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_no_network_is_one_line_naming_what_to_fetch_and_where(tmp_path, capsys, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/AASIST.pth"
    monkeypatch.setitem(REGISTRY, "AASIST", dataclasses.replace(REGISTRY["AASIST"], url=url))
    code = download_weights.main(["--model", "AASIST", "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert url in err and str(tmp_path / "AASIST.pth") in err and "by hand" in err


def test_list_shows_the_registry(capsys):
    assert download_weights.main(["--list"]) == 0
    out = capsys.readouterr().out
    for entry in REGISTRY.values():
        assert (entry.sha256 or "not published") in out and entry.url in out
    assert {"AMSDF-M1", "AMSDF-M2", "AMSDF-M3", "DPHuBERT-sp0.75"} <= REGISTRY.keys()


def test_aliases_fetch_the_official_weights(server, shared_dir, tmp_path, monkeypatch, capsys):
    for name in ("AASIST", "AASIST-L"):
        server.files[f"/{name}"] = (shared_dir / "reference/weights" / REGISTRY[name].filename).read_bytes()
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name], url=server.url(f"/{name}")))
    assert download_weights.main(["--AASIST", "--AASIST-L", "--model", "AASIST", "--output_dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["AASIST-L.pth", "AASIST.pth"]
    assert sorted(path for path, _ in server.requests) == ["/AASIST", "/AASIST-L"]  # once each, AASIST named twice
    assert capsys.readouterr().out.count("sha256 verified") == 2


def test_unpublished_checksum_is_recorded_at_the_first_download_and_verified_later(server, tmp_path, monkeypatch):
    first = random_bytes(20_000, seed=5)
    server.files["/dp.pth"] = first
    entry = dataclasses.replace(REGISTRY["DPHuBERT-sp0.75"], url=server.url("/dp.pth"))
    assert entry.sha256 is None and entry.size is None
    dest = tmp_path / entry.filename
    assert fetch_weights(entry, dest, progress=False) is True
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record == {entry.filename: {"sha256": hashlib.sha256(first).hexdigest(), "size": 20_000}}
    assert fetch_weights(entry, dest, progress=False) is False  # verified against the record
    dest.unlink()
    server.files["/dp.pth"] = random_bytes(20_000, seed=6)  # the published file changed
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch_weights(entry, dest, progress=False)


def test_amsdf_alias_needs_copies_saved_by_hand_then_records_and_verifies_them(tmp_path, capsys):
    assert download_weights.main(["--AMSDF", "--output_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "drive.google.com" in err and str(tmp_path / "AMSDF_M1.pth") in err
    for seed in ("M1", "M2", "M3"):
        (tmp_path / f"AMSDF_{seed}.pth").write_bytes(random_bytes(1000, seed=len(seed) + ord(seed[1])))
    assert download_weights.main(["--AMSDF", "--output_dir", str(tmp_path)]) == 0
    assert sorted(json.loads((tmp_path / RECORD_FILE).read_text())) == ["AMSDF_M1.pth", "AMSDF_M2.pth", "AMSDF_M3.pth"]
    assert download_weights.main(["--AMSDF", "--output_dir", str(tmp_path)]) == 0  # unchanged: verified
    (tmp_path / "AMSDF_M2.pth").write_bytes(b"something else")
    assert download_weights.main(["--AMSDF", "--output_dir", str(tmp_path)]) == 1
    assert "AMSDF_M2.pth: sha256 or size differ" in capsys.readouterr().err


def test_registry_entry_is_found_from_a_config_model_path():
    assert entry_for_path("./models/weights/AASIST-L.pth").name == "AASIST-L"
    assert entry_for_path("exp_result/run/weights/best.safetensors") is None


# ---------------------------------------------------------------------------------------------
# download_dataset.py


def la_zip(files: int = 3) -> bytes:
    """A miniature LA.zip: the real archive's folder layout with a few small files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for split, name in (("train", "train.trn"), ("dev", "dev.trl"), ("eval", "eval.trl")):
            archive.writestr(f"LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{name}.txt",
                             "LA_0079 LA_T_0000001 - - bonafide\n")
            for i in range(files):
                archive.writestr(f"LA/ASVspoof2019_LA_{split}/flac/LA_{split[0].upper()}_{i:07d}.flac",
                                 random_bytes(20_000, seed=i))
    return buffer.getvalue()


def test_la_download_resumes_unpacks_and_is_skipped_when_complete(server, tmp_path, capsys, monkeypatch):
    data = la_zip()
    server.files["/LA.zip"] = data
    server.cut_after["/LA.zip"] = len(data) // 2
    monkeypatch.setitem(DATASETS, "LA", dataclasses.replace(DATASETS["LA"], url=server.url("/LA.zip")))
    out_dir = tmp_path / "data"
    assert download_dataset.main(["--dataset", "LA", "--output_dir", str(out_dir)]) == 0
    assert f'"database_path": "{out_dir / "LA"}/"' in capsys.readouterr().out
    assert server.ranges("/LA.zip") == [None, f"bytes={len(data) // 2}-"]
    root = out_dir / "LA"
    assert (root / MARKER).is_file() and not (out_dir / "LA.zip").exists()
    assert len(list(root.rglob("*.flac"))) == 9
    assert (root / "ASVspoof2019_LA_train/flac/LA_T_0000002.flac").read_bytes() == random_bytes(20_000, seed=2)
    assert download_dataset.main(["--dataset", "LA", "--output_dir", str(out_dir)]) == 0
    assert "already complete" in capsys.readouterr().out and len(server.requests) == 2


def test_corrupt_archive_is_reported_and_removed(server, tmp_path):
    data = bytearray(la_zip())
    member = data.find(random_bytes(20_000, seed=1)[:64])  # stored data of one member
    assert member > 0
    data[member + 10] ^= 0xFF
    server.files["/LA.zip"] = bytes(data)
    source = dataclasses.replace(DATASETS["LA"], url=server.url("/LA.zip"))
    with pytest.raises(DownloadError, match="corrupt archive"):
        fetch_dataset(source, tmp_path, progress=False, log=lambda _: None)
    assert not (tmp_path / "LA.zip").exists() and not (tmp_path / "LA" / MARKER).exists()


def zip_with(members: list[tuple[str, bytes]], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16
            archive.writestr(info, content)
        if symlink:
            info = zipfile.ZipInfo("link")
            info.external_attr = 0o120777 << 16
            archive.writestr(info, symlink)
    return buffer.getvalue()


def tar_with(kind: str, tmp_path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        good = tarfile.TarInfo("LA/ok.txt")
        good.size = 2
        archive.addfile(good, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo({"dotdot": "LA/../../evil.txt", "absolute": str(tmp_path / "evil.txt"),
                               "symlink": "LA/link", "hardlink": "LA/hard"}[kind])
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, str(tmp_path)
        elif kind == "hardlink":
            bad.type, bad.linkname = tarfile.LNKTYPE, "/etc/passwd"
        else:
            bad.size = 4
        archive.addfile(bad, io.BytesIO(b"evil") if bad.isfile() else None)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip-dotdot", "zip-absolute", "zip-symlink", "tar-dotdot",
                                  "tar-absolute", "tar-symlink", "tar-hardlink"])
def test_malicious_archive_writes_nothing_anywhere(server, tmp_path, kind):
    fmt, attack = kind.split("-")
    target = tmp_path / "out"
    if fmt == "zip":
        members = [("LA/ok.txt", b"ok")] + {"dotdot": [("LA/../../evil.txt", b"evil")],
                                            "absolute": [(str(tmp_path / "evil.txt"), b"evil")],
                                            "symlink": []}[attack]
        data = zip_with(members, symlink=str(tmp_path) if attack == "symlink" else None)
    else:
        data = tar_with(attack, tmp_path)
    server.files["/LA.zip"] = data
    source = dataclasses.replace(DATASETS["LA"], url=server.url("/LA.zip"))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchiveError) as err:
        fetch_dataset(source, target, progress=False, log=lambda _: None)
    assert "nothing extracted" in str(err.value)
    written = sorted(set(tmp_path.rglob("*")) - set(before))
    assert written == [target, target / "LA.zip"]  # only the download itself
    assert not Path("/evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_a_link_already_on_disk_cannot_redirect_a_member(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "LA").symlink_to(outside)
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_with([("LA/evil.txt", b"evil")]))
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(archive, target)
    assert list(outside.iterdir()) == []


def test_emotional_set_without_kaggle_credentials_says_where_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    assert download_dataset.main(["--dataset", "emotional", "--output_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert DATASETS["emotional"].page in err and "<SYSTEM>/<SPEAKER>/<emotion>" in err
    assert '"emo_dataset"' in err


def test_emotional_set_with_kaggle_credentials(server, tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for system in ("ESD", "Zonos"):
            for emotion in ("angry", "sad"):
                archive.writestr(f"Dataset/{system}/0011/{emotion}/1.flac", random_bytes(1000))
    server.files["/storage/DSES.zip"] = buffer.getvalue()
    # Kaggle answers with a redirect to cloud storage; the credentials must not follow it.
    server.redirects["/api/download"] = server.url("/storage/DSES.zip")
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    source = dataclasses.replace(DATASETS["emotional"], url=server.url("/api/download"))
    root = fetch_dataset(source, tmp_path, progress=False, log=lambda _: None)
    assert root == tmp_path / "DSES" / "Dataset"
    assert (root / "ESD/0011/sad/1.flac").is_file() and (root / MARKER).is_file()
    (api_path, api_headers), (storage_path, storage_headers) = server.requests
    assert api_headers["Authorization"] == "Basic YWxpY2U6c2VjcmV0"  # alice:secret
    assert storage_path == "/storage/DSES.zip" and "Authorization" not in storage_headers

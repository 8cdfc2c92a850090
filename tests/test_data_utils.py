"""Audio loading, cropping, protocols and the skip-on-bad-file behaviour of the loaders."""
import numpy as np
import pytest
import soundfile as sf
import torch

from data_utils import (AudioError, SkipReport, Trial, TrialDataset, load_audio, make_loader, random_crop,
                        sliding_windows, tile_to_length)
from emospoof.corpora.asvspoof import read_la_protocol


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_resamples_and_mixes_down(tmp_path):
    stereo = np.stack([tone(440, 1.0, 44100), tone(440, 1.0, 44100)], axis=1)
    sf.write(tmp_path / "a.wav", stereo, 44100)
    audio = load_audio(tmp_path / "a.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 2  # still a 440 Hz tone


@pytest.mark.parametrize("make,reason", [
    (lambda p: None, "file not found"),
    (lambda p: p.write_bytes(b""), "unreadable"),
    (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "unreadable"),
    (lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "empty"),
])
def test_bad_files_raise_audio_error_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert str(path) in str(err.value) and reason in str(err.value)
    assert "\n" not in str(err.value)


def test_crops_and_windows():
    x = np.arange(10, dtype=np.float32)
    assert tile_to_length(x, 25).tolist() == (list(range(10)) * 3)[:25]
    assert tile_to_length(x, 4).tolist() == [0, 1, 2, 3]
    assert random_crop(x, 10).tolist() == x.tolist()  # exactly one window long
    crop = random_crop(x, 4)
    assert crop.tolist() == list(range(int(crop[0]), int(crop[0]) + 4))
    windows = sliding_windows(x, 4, 3)
    assert [w[0] for w in windows] == [0, 3, 6]
    assert windows[-1].tolist() == [6, 7, 8, 9]  # last window aligned to the end
    windows = sliding_windows(np.arange(11, dtype=np.float32), 4, 3)
    assert windows[-1].tolist() == [7, 8, 9, 10]
    assert sliding_windows(x[:3], 4, 2).shape == (1, 4)


def test_protocol_parsing_and_errors(tmp_path):
    protocol = tmp_path / "p.txt"
    protocol.write_text("SPK LA_T_1 - - bonafide\nSPK LA_T_2 - A01 spoof\n")
    trials = read_la_protocol(protocol, tmp_path)
    assert [(t.utt_id, t.label, t.attack) for t in trials] == [("LA_T_1", 1, "-"), ("LA_T_2", 0, "A01")]
    assert trials[0].path == tmp_path / "LA_T_1.flac"
    protocol.write_text("SPK LA_T_1 - - bonafide\nSPK LA_T_2 - A01 maybe\n")
    with pytest.raises(ValueError, match=r"p.txt:2"):
        read_la_protocol(protocol, tmp_path)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_skips_bad_files_and_reports_them(tmp_path, num_workers):
    good = [tmp_path / f"good{i}.flac" for i in range(3)]
    for path in good:
        sf.write(path, tone(300, 0.7, 16000), 16000)
    (tmp_path / "corrupt.flac").write_bytes(b"not audio")
    trials = [Trial(p.stem, p, 1) for p in good] + [
        Trial("corrupt", tmp_path / "corrupt.flac", 0), Trial("missing", tmp_path / "missing.flac", 0)]
    loader = make_loader(TrialDataset(trials, 4000, "full", 2000), batch_size=2, shuffle=False,
                         num_workers=num_workers)
    warnings = []
    report = SkipReport(warnings.append)
    seen, windows = [], 0
    for batch in loader:
        report.add(batch.failures)
        seen += batch.utt_ids
        windows += batch.x.shape[0]
        assert sum(batch.counts) == batch.x.shape[0]
    assert seen == ["good0", "good1", "good2"]
    assert windows == 3 * 5  # 11200 samples, 4000-sample windows every 2000 (+ one aligned to the end)
    assert len(report) == 2 and len(warnings) == 2
    report.write(tmp_path / "skipped.tsv")
    lines = (tmp_path / "skipped.tsv").read_text().splitlines()
    assert lines[0] == "path\treason" and len(lines) == 3


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_failing_augmentation_stops_the_run_while_a_bad_file_is_still_skipped(tmp_path, num_workers):
    """A bad file says nothing about the code; an augmentation that raises is a bug or a broken
    set-up, and skipping every file it fails on would train on a silently shrunken set."""
    sf.write(tmp_path / "good.flac", tone(300, 0.7, 16000), 16000)

    def broken_codec(audio, rng):
        raise RuntimeError("encoder state is corrupt")

    trials = [Trial("missing", tmp_path / "missing.flac", 0), Trial("good", tmp_path / "good.flac", 1)]
    dataset = TrialDataset(trials, 4000, "train", augment=broken_codec)
    assert dataset[0].reason == "file not found"  # skipped and reported, as before
    loader = make_loader(dataset, batch_size=2, shuffle=False, num_workers=num_workers)
    with pytest.raises(RuntimeError, match="encoder state is corrupt"):
        next(iter(loader))


def test_train_mode_crops_are_reproducible_with_seeded_loader(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1, 16000)
    dataset = TrialDataset([Trial("long", path, 1)] * 4, 8000, "train")

    def crops(seed):
        loader = make_loader(dataset, 4, shuffle=True, num_workers=1, seed=seed)
        return next(iter(loader)).x

    assert torch.equal(crops(1), crops(1))
    assert not torch.equal(crops(1), crops(2))

"""Data augmentation (augment/): RawBoost against a transcription of the published definition
(same outputs on the same draws, same statistics on independent draws), codec round trips,
telephone band, noise and reverberation from folders, the config sections, the seeding of the
training dataset, and main.py with augmentation (resume) and eval conditions."""
import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from scipy import stats

import main as main_module
from benchmarks.rawboost_published import (published_coloured, published_convolutive, published_draw_notch,
                                           published_impulsive, published_notch, published_rawboost)
from data_utils import TrialDataset, make_loader
from emospoof.augment import channel
from emospoof.augment.channel import (CODECS, AudioFolder, NoiseStep, ReverbStep, band_limit, codec_round_trip,
                                      codec_supported)
from emospoof.augment.pipeline import (build_augmentation, build_eval_conditions, parse_section,
                                       validate_augmentation_config)
from emospoof.augment.rawboost import (RawBoost, RawBoostParams, coloured_noise, convolutive_noise, draw_convolutive,
                                       draw_impulses, draw_notches, impulsive_noise, notch_filters)
from emospoof.core.config import ConfigError
from emospoof.corpora.asvspoof import la_trials
from tests.conftest import make_config, stop_after_first_checkpoint

SR = 16000


def voice(n: int, seed: int = 0) -> np.ndarray:
    """A broadband speech-like clip: harmonics of a gliding pitch, amplitude-modulated, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(rng.uniform(100, 200) * (1 + 0.1 * np.sin(2 * np.pi * t))) / SR
    clip = (1 + np.sin(2 * np.pi * 4 * t)) * sum(np.sin(k * phase) / k for k in range(1, 25))
    clip += 0.02 * rng.standard_normal(n)
    return (0.5 * clip / np.abs(clip).max()).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean = clean.astype(np.float64)
    return 10 * np.log10(np.sum(clean ** 2) / np.sum((noisy - clean) ** 2))


def lag_of(reference: np.ndarray, signal: np.ndarray, max_lag: int = 200) -> int:
    """The shift of ``signal`` against ``reference`` with the largest correlation."""
    inner = slice(max_lag, len(reference) - max_lag)
    scores = [np.dot(reference[inner], signal[inner.start + lag:inner.stop + lag])
              for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


# ---------------------------------------------------------------------------------------------
# RawBoost

@pytest.mark.parametrize("algo", range(1, 9))
def test_each_algorithm_keeps_length_dtype_finiteness_and_follows_the_seed(algo):
    x = voice(12345)
    rawboost = RawBoost(algo)
    first = rawboost(x, np.random.default_rng(1))
    assert first.shape == x.shape and first.dtype == np.float32 and np.isfinite(first).all()
    assert np.array_equal(first, rawboost(x, np.random.default_rng(1)))
    assert not np.allclose(first, rawboost(x, np.random.default_rng(2)))
    assert not np.allclose(first, x)


@pytest.mark.parametrize("snr_range", [(10.0, 40.0), (20.0, 21.0)])
def test_algorithm_3_snr_falls_in_the_configured_range(snr_range):
    x = voice(16000)
    rawboost = RawBoost(3, RawBoostParams(snr_db=snr_range))
    measured = [snr_db(x, rawboost(x, np.random.default_rng(seed))) for seed in range(60)]
    assert snr_range[0] - 0.01 <= min(measured) and max(measured) <= snr_range[1] + 0.01
    assert max(measured) - min(measured) > 0.5 * (snr_range[1] - snr_range[0])  # drawn, not fixed


def band_energies_db(x: np.ndarray, n_bands: int = 32) -> np.ndarray:
    power = np.abs(np.fft.rfft(x / np.linalg.norm(x))) ** 2
    return 10 * np.log10([band.sum() + 1e-12 for band in np.array_split(power, n_bands)])


def test_algorithm_1_changes_the_spectrum_but_not_the_length():
    x = voice(20000)
    y = RawBoost(1)(x, np.random.default_rng(3))
    assert len(y) == len(x)
    assert np.abs(band_energies_db(y) - band_energies_db(x)).max() > 3.0
    assert np.abs(y).max() <= 1.0 + 1e-6  # peak-limited as published


def test_fast_rawboost_equals_the_published_definition_on_the_same_draws():
    params = [RawBoostParams(), RawBoostParams(n_filters=3, n_bands=2, coeffs=(20, 41), gain_db=(-3.0, 3.0),
                                               centre_hz=(0.0, 8000.0), bandwidth_hz=(50.0, 3000.0))]
    for seed, (p, n) in enumerate([(params[0], 16000), (params[0], 7777), (params[1], 9999)]):
        rng = np.random.default_rng(seed)
        x = voice(n, seed)
        draws = draw_convolutive(rng, p)
        expected = published_convolutive(x.astype(np.float64), draws, SR)
        np.testing.assert_allclose(convolutive_noise(x, draws, SR), expected, atol=2e-6 * np.abs(expected).max())
        impulses = draw_impulses(rng, n, p)
        np.testing.assert_allclose(impulsive_noise(x, impulses, 2.0),
                                   published_impulsive(x.astype(np.float64), impulses, 2.0), atol=1e-6)
        noise, notch = rng.standard_normal(n), draw_notches(rng, p, [p.gain_db])
        np.testing.assert_allclose(coloured_noise(x, noise.astype(np.float32), notch, 15.0, SR),
                                   published_coloured(x.astype(np.float64), noise, notch, 15.0, SR), atol=1e-6)


def filter_statistics(filters: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Peak gain (dB) and mean magnitude (dB) over freqz's 512 frequencies, of each filter."""
    responses = np.array([np.abs(np.fft.rfft(b, 1024)[:512]) for b in filters])
    return 20 * np.log10(responses.max(axis=1)), 20 * np.log10(responses.mean(axis=1))


def test_statistics_match_the_published_definition():
    """Independent draws of the vectorised and the published definition: filter gains, their
    mean response (centre, width and length draws), the SNR of algorithm 3 and the share of
    samples algorithm 2 changes come from the same distributions (two-sample KS test); a
    deliberately wrong draw is told apart, so the test can fail."""
    p, n_filters = RawBoostParams(), 150
    fast_rng, published_rng = np.random.default_rng(10), np.random.default_rng(11)
    fast = [b for _ in range(n_filters // 5) for b in notch_filters(draw_convolutive(fast_rng, p), SR)]
    published = []
    for i in range(n_filters):  # filters 1, 6, 11, ... are linear (gain 0 dB), the others non-linear
        d = published_draw_notch(published_rng, p, (0.0, 0.0) if i % 5 == 0 else (-5.0, -20.0))
        published.append(published_notch(d.centre_hz[0], d.width_hz[0], d.taps[0], d.gain_db[0], SR))
    no_bias = RawBoostParams(nonlinear_bias_db=(0.0, 0.0))  # non-linear gains without their bias
    wrong = [b for _ in range(n_filters // 5) for b in notch_filters(draw_convolutive(fast_rng, no_bias), SR)]
    for fast_stat, published_stat in zip(filter_statistics(fast), filter_statistics(published)):
        assert stats.ks_2samp(fast_stat, published_stat).pvalue > 1e-3
    assert stats.ks_2samp(filter_statistics(wrong)[0], filter_statistics(published)[0]).pvalue < 1e-3

    x = voice(8000)
    fast_snr = [snr_db(x, RawBoost(3)(x, fast_rng)) for _ in range(n_filters)]
    published_snr = [snr_db(x, published_rawboost(x, 3, published_rng)) for _ in range(n_filters)]
    assert stats.ks_2samp(fast_snr, published_snr).pvalue > 1e-3
    fast_changed = [np.mean(RawBoost(2)(x, fast_rng) != x) for _ in range(n_filters)]
    published_changed = [np.mean(published_rawboost(x, 2, published_rng).astype(np.float32) != x)
                         for _ in range(n_filters)]
    assert stats.ks_2samp(fast_changed, published_changed).pvalue > 1e-3


# ---------------------------------------------------------------------------------------------
# Codecs, telephone band, noise, reverberation

@pytest.mark.parametrize("name", list(CODECS))
def test_codec_round_trip_changes_the_signal_and_keeps_it_aligned(name):
    if not codec_supported(name):
        pytest.skip(f"the installed libsndfile ({sf.__libsndfile_version__}) cannot write {name}")
    x = voice(2 * SR, seed=5)
    levels = CODECS[name].compression
    for level in [None] if levels is None else list(levels):
        y = codec_round_trip(x, name, level)
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        assert np.abs(y - x).max() > 1e-3, f"{name} at {level} returned its input"
        assert lag_of(x, y) == 0, f"{name} at {level} is misaligned"
        assert snr_db(x, y) > 3.0, f"{name} at {level}"


def test_a_codec_the_installed_libsndfile_cannot_write_is_refused_in_one_line(monkeypatch):
    real = sf.available_subtypes
    monkeypatch.setattr(sf, "available_subtypes", lambda f=None: {k: v for k, v in real(f).items() if k != "OPUS"})
    with pytest.raises(ConfigError, match="the installed libsndfile cannot write 'opus'"):
        parse_section({"codec": {"codecs": ["mp3", "opus"]}}, "augmentation.")


def tone_level_db(y: np.ndarray, frequency: float) -> float:
    t = np.arange(len(y)) / SR
    return 20 * np.log10(abs(np.dot(y, np.exp(-2j * np.pi * frequency * t))) / (len(y) / 2))


def test_telephone_band_keeps_the_band_and_removes_the_rest():
    t = np.arange(SR) / SR
    x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (100, 1000, 3000, 6000)).astype(np.float32)
    y = band_limit(x, 300, 3400)
    assert len(y) == len(x)
    assert abs(tone_level_db(y, 1000) - tone_level_db(x, 1000)) < 0.1
    assert abs(tone_level_db(y, 3000) - tone_level_db(x, 3000)) < 0.1
    assert tone_level_db(x, 100) - tone_level_db(y, 100) > 40
    assert tone_level_db(x, 6000) - tone_level_db(y, 6000) > 40


def test_noise_from_a_folder_at_a_random_snr(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "hum.wav", 0.1 * rng.standard_normal((3 * SR, 2)), SR)  # stereo: averaged
    sf.write(tmp_path / "fan_8k.flac", 0.1 * rng.standard_normal(SR), 8000)  # resampled; shorter than a clip
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    warnings = []
    step = NoiseStep(AudioFolder(tmp_path, "augmentation.noise.dir", warnings.append), (5.0, 20.0))
    assert len(step.folder.files) == 2 and len(warnings) == 1 and "broken.wav" in warnings[0]
    x = voice(2 * SR)
    measured = [snr_db(x, step(x, np.random.default_rng(seed))) for seed in range(20)]
    assert 5.0 - 1e-3 <= min(measured) and max(measured) <= 20.0 + 1e-3 and max(measured) - min(measured) > 5
    assert np.array_equal(step(x, np.random.default_rng(1)), step(x, np.random.default_rng(1)))


def test_reverberation_from_a_folder_stays_aligned(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(SR // 2) / SR
    rir = 0.3 * rng.standard_normal(len(t)) * np.exp(-6.9 * t / 0.4)
    rir[:40] = 0
    rir[40] = 1.0  # direct path after 40 samples
    sf.write(tmp_path / "room.wav", rir.astype(np.float32), SR)
    step = ReverbStep(AudioFolder(tmp_path, "augmentation.rir.dir"))
    x = voice(2 * SR)
    y = step(x, rng)
    assert y.shape == x.shape and y.dtype == np.float32
    assert abs(np.mean(y.astype(np.float64) ** 2) / np.mean(x.astype(np.float64) ** 2) - 1) < 1e-3
    assert snr_db(x, y) < 10  # audibly reverberant
    white = rng.standard_normal(2 * SR).astype(np.float32)  # its correlation with the output traces the RIR
    assert lag_of(white, step(white, rng)) == 0  # the direct path stays where the dry signal was


# ---------------------------------------------------------------------------------------------
# Config sections

FULL_SECTION = {
    "rawboost": {"algo": 5, "p": 0.8, "snr_db": [10, 40], "n_bands": 5, "coeffs": [10, 100]},
    "codec": {"p": 0.3, "codecs": {"mp3": [0.5, 0.9], "mulaw": None}},
    "telephone": {"p": 0.1, "band_hz": [300, 3400]},
    "noise": {"dir": "NOISE", "snr_db": [5, 20], "p": 0.3},
    "rir": {"dir": "RIR", "p": 0.3},
}


@pytest.mark.parametrize("section,expected", [
    ({"rawbost": {"algo": 5}}, "unknown config key 'augmentation.rawbost' (did you mean 'rawboost'?)"),
    ({"rawboost": {"algo": 5, "snr": [1, 2]}},
     "unknown config key 'augmentation.rawboost.snr' (did you mean 'snr_db'?)"),
    ({"rawboost": {"p": 1}}, "config key 'augmentation.rawboost': 'algo' (1-8) is required"),
    ({"rawboost": {"algo": 0}},
     "config key 'augmentation.rawboost.algo': expected an integer at least 1 and at most 8"),
    ({"rawboost": {"algo": 3, "snr_db": [40, 10]}}, "config key 'augmentation.rawboost.snr_db': min 40 is greater"),
    ({"rawboost": {"algo": 1, "coeffs": [10.5, 20]}}, "config key 'augmentation.rawboost.coeffs': expected an integer"),
    ({"codec": {"p": 1.5}}, "config key 'augmentation.codec.p': expected a number at least 0 and at most 1"),
    ({"codec": {"codecs": ["aac"]}}, "config key 'augmentation.codec.codecs': unknown codec 'aac'"),
    ({"codec": {"codecs": {"mulaw": [0, 1]}}},
     "config key 'augmentation.codec.codecs.mulaw': mulaw has a fixed bit rate"),
    ({"noise": {"snr_db": [5, 20]}}, "config key 'augmentation.noise.dir': expected the folder of noise recordings"),
    ({"telephone": {"band_hz": [300, 9000]}}, "config key 'augmentation.telephone.band_hz': expected a number"),
    ({"rir": "yes"}, "config key 'augmentation.rir': expected an object"),
])
def test_augmentation_section_errors_are_one_line(section, expected):
    with pytest.raises(ConfigError) as error:
        validate_augmentation_config({"augmentation": section})
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("conditions,expected", [
    ("mp3", "config key 'eval_condition': expected an object of named conditions"),
    ({"mp3 32k": {"codec": {}}}, "condition name 'mp3 32k' must be letters"),
    ({"mp3": {}}, "config key 'eval_condition.mp3': empty condition"),
    ({"mp3": {"codek": {}}}, "unknown config key 'eval_condition.mp3.codek'"),
])
def test_eval_condition_errors_are_one_line(conditions, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate_augmentation_config({"eval_condition": conditions})


def test_a_full_section_builds_its_steps_in_order(tmp_path):
    for name in ("NOISE", "RIR"):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / "a.wav", np.random.default_rng(0).standard_normal(SR).astype(np.float32), SR)
    section = json.loads(json.dumps(FULL_SECTION).replace('"NOISE"', json.dumps(str(tmp_path / "NOISE")))
                         .replace('"RIR"', json.dumps(str(tmp_path / "RIR"))))
    augmentation = build_augmentation({"augmentation": section})
    assert [name for name, _, _ in augmentation.steps] == ["rawboost", "rir", "noise", "telephone", "codec"]
    assert [p for _, p, _ in augmentation.steps] == [0.8, 0.3, 0.3, 0.1, 0.3]
    x = voice(SR)
    y = augmentation(x, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert build_augmentation({}) is None
    assert list(build_eval_conditions({"eval_condition": {"tel": {"telephone": {}}}})) == ["tel"]


# ---------------------------------------------------------------------------------------------
# Seeding in the dataset; main.py with augmentation

def test_dataset_draws_depend_on_seed_epoch_and_file_not_on_workers(tiny_la):
    trials = [t for t in la_trials(tiny_la, "train") if "9999999" not in t.utt_id]
    augmentation = build_augmentation({"augmentation": {"rawboost": {"algo": 3}}})

    def loader(workers: int, seed: int = 7):
        dataset = TrialDataset(trials, 8000, "first", augment=augmentation, seed=seed)
        return make_loader(dataset, 4, shuffle=False, num_workers=workers)

    def batches(workers: int, epoch: int, seed: int = 7) -> list[torch.Tensor]:
        epoch_loader = loader(workers, seed)
        epoch_loader.sampler.set_epoch(epoch)  # as the training loop does
        return [b.x for b in epoch_loader]

    serial = batches(0, 1)
    assert all(torch.equal(a, b) for a, b in zip(serial, batches(2, 1)))
    assert not any(torch.equal(a, b) for a, b in zip(serial, batches(0, 2)))
    assert not any(torch.equal(a, b) for a, b in zip(serial, batches(0, 1, seed=8)))
    clean = [b.x for b in make_loader(TrialDataset(trials, 8000, "first"), 4, shuffle=False, num_workers=0)]
    assert not any(torch.equal(a, b) for a, b in zip(serial, clean))
    # Workers that persist across epochs still draw each epoch's augmentation.
    persistent, drawn = loader(2), []
    for epoch in (1, 2):
        persistent.sampler.set_epoch(epoch)
        drawn.append([b.x for b in persistent])
    assert all(torch.equal(a, b) for a, b in zip(drawn[0], serial))
    assert all(torch.equal(a, b) for a, b in zip(drawn[1], batches(0, 2)))


def test_training_with_augmentation_resumes_exactly_and_augments_training_data_only(tmp_path, tiny_la, monkeypatch):
    lengths = []
    real_band_limit = channel.band_limit

    def recording_band_limit(x, *args):
        lengths.append(len(x))
        return real_band_limit(x, *args)

    monkeypatch.setattr(channel, "band_limit", recording_band_limit)
    config = make_config(tmp_path, tiny_la, augmentation={
        "rawboost": {"algo": 5}, "codec": {"p": 0.5, "codecs": ["mp3", "mulaw"]}, "telephone": {"p": 1.0}})
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "full"), "--seed", "3"])
    full = next((tmp_path / "full").iterdir())
    assert lengths and set(lengths) == {8000}  # training crops only: never a dev or eval utterance
    assert [r["epoch"] for r in csv.DictReader(open(full / "metrics.csv"))] == ["1", "2"]

    stop_after_first_checkpoint(monkeypatch, main_module.main,
                                ["--config", str(config), "--output_dir", str(tmp_path / "split"), "--seed", "3"])
    split = next((tmp_path / "split").iterdir())
    main_module.main(["--resume", str(split)])
    for name in ("final.safetensors", "best.safetensors"):
        a = load_file(full / "weights" / name)
        b = load_file(split / "weights" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (full / "eval_scores.txt").read_text() == (split / "eval_scores.txt").read_text()


def test_eval_condition_scores_the_eval_set_per_condition(tmp_path, tiny_la):
    from models import build_model
    from tests.conftest import TINY_MODEL
    weights = tmp_path / "w.pth"
    torch.save(build_model(TINY_MODEL).state_dict(), weights)
    conditions = {"mp3_low": {"codec": {"codecs": {"mp3": 0.9}}}, "telephone": {"telephone": {}}}
    config = make_config(tmp_path, tiny_la, model_path=str(weights), eval_condition=conditions)
    reports = []
    for output in ("a", "b"):
        main_module.main(["--config", str(config), "--eval", "--output_dir", str(tmp_path / output)])
        reports.append(json.loads((next((tmp_path / output).iterdir()) / "eval_report.json").read_text()))
    first = reports[0]
    assert set(first["conditions"]) == {"mp3_low", "telephone"}
    for name, result in first["conditions"].items():
        assert result["n_scored"] == 8 and 0 <= result["eer"] <= 100
        scores = open(result["score_file"]).read()
        assert scores != open(first["score_file"]).read()  # the condition changed what the model saw
        assert scores == open(reports[1]["conditions"][name]["score_file"]).read()  # the same every time


def test_benchmark_prints_one_json_line(monkeypatch, capsys, single_thread):
    """The script runs in this process as ``python benchmarks/bench_augment.py`` runs it (runpy,
    ``__main__``), without a fresh interpreter's 3 s of imports. What it sets for the whole process
    is put back afterwards: the thread variables it exports, its ``sys.path`` entries, ``sys.argv``
    (monkeypatch) and torch's thread count (``single_thread``)."""
    import runpy
    import sys

    from tests.conftest import REPO
    script = REPO / "benchmarks" / "bench_augment.py"
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(variable, "1")  # what the script sets; monkeypatch restores the values before
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", [str(script), "--json", "--clips", "2", "--published_clips", "1"])
    capsys.readouterr()
    runpy.run_path(str(script), run_name="__main__")  # an exception here: the process's traceback, exit code 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert set(report["rawboost_ms_per_clip"]) == {str(algo) for algo in range(1, 9)}
    algos = set(report["rawboost_ms_per_clip"])
    assert set(report["rawboost_speedup"]) == set(report["published_rawboost_ms_per_clip"]) == algos
    assert set(report["codec_ms_per_clip"]) == {name for name in CODECS if codec_supported(name)}
    assert all(report[key] > 0 for key in ("telephone_ms_per_clip", "noise_ms_per_clip", "rir_ms_per_clip"))
    prosody = report["prosody_ms_per_second"]
    assert set(prosody) == {"pitch", "tempo", "gain", "tilt", "all"} and min(prosody.values()) >= 0
    assert prosody["all"] > 0 and prosody["tempo"] > 0 and report["silence_ms_per_second"] > 0

"""The utterance-level augmentation steps: prosody (augment/prosody.py: pitch, tempo, spectral
tilt, loudness) and silence (augment/silence.py: leading and trailing noise floor, level), each
measured on synthetic signals; their config checks; and in the training dataset, that both
classes are augmented at the same rate, that the draws are seeded, and that training crops keep
their length."""
import numpy as np
import pytest
import soundfile as sf
from scipy import stats

from data_utils import Trial, TrialDataset, make_loader
from emospoof.augment.pipeline import (STEP_ORDER, UTTERANCE_STEPS, build_augmentation, parse_section,
                                       validate_augmentation_config)
from emospoof.augment.prosody import (ProsodyParams, ProsodyStep, change_tempo_and_pitch, gain_within_full_scale,
                                      tilt_spectrum, wsola)
from emospoof.augment.silence import FADE_S, SilenceParams, SilenceStep, noise_floor
from emospoof.core.config import ConfigError
from emospoof.core.labels import BONAFIDE_INDEX, SPOOF_INDEX

SR = 16000


def harmonic_burst(f0: float = 140.0, before: float = 0.2, tone: float = 1.0, after: float = 0.3,
                   amplitude: float = 0.3) -> np.ndarray:
    """Silence, a harmonic tone (11 harmonics, 1/k amplitudes) starting abruptly, silence."""
    t = np.arange(int(tone * SR)) / SR
    voiced = amplitude * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12))
    return np.concatenate([np.zeros(int(before * SR)), voiced, np.zeros(int(after * SR))]).astype(np.float32)


def f0_of(y: np.ndarray) -> float:
    """The strongest peak between 60 and 400 Hz of the middle half's spectrum (Hann window,
    parabolic interpolation of the log magnitude): the fundamental of a 1/k harmonic tone."""
    middle = y[len(y) // 4:3 * len(y) // 4].astype(np.float64)
    n_fft = 1 << 20
    magnitude = np.abs(np.fft.rfft(middle * np.hanning(len(middle)), n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1 / SR)
    i = int(np.argmax(np.where((freqs > 60) & (freqs < 400), magnitude, 0)))
    a, b, c = np.log(magnitude[i - 1:i + 2])
    return (i + 0.5 * (a - c) / (a - 2 * b + c)) * SR / n_fft


def tone_edges(y: np.ndarray, window: int = 160) -> tuple[float, float]:
    """Onset and offset (s) of a tone burst: where its power, averaged over 10 ms, crosses half
    its steady value."""
    power = np.convolve(y.astype(np.float64) ** 2, np.ones(window) / window, "same")
    above = np.flatnonzero(power > np.median(power[power > 0.1 * power.max()]) / 2)
    return above[0] / SR, (above[-1] + 1) / SR


def level_db(y: np.ndarray) -> float:
    return 10 * np.log10(np.mean(y.astype(np.float64) ** 2))


def tone_level_db(y: np.ndarray, frequency: float) -> float:
    t = np.arange(len(y)) / SR
    return 20 * np.log10(abs(np.dot(y, np.exp(-2j * np.pi * frequency * t))) / (len(y) / 2))


# ---------------------------------------------------------------------------------------------
# Prosody

@pytest.mark.parametrize("semitones", [-3.0, -1.5, 2.0, 3.0])
def test_pitch_shift_moves_f0_by_the_semitones_and_keeps_the_duration(semitones):
    x = harmonic_burst()
    y = change_tempo_and_pitch(x, semitones=semitones)
    assert abs(len(y) - len(x)) <= 1 and y.dtype == np.float32
    assert f0_of(y) / f0_of(x) == pytest.approx(2 ** (semitones / 12), rel=0.003)
    (onset, offset), (onset_in, offset_in) = tone_edges(y), tone_edges(x)
    assert abs(onset - onset_in) < 0.008 and abs((offset - onset) - (offset_in - onset_in)) < 0.005


@pytest.mark.parametrize("tempo", [0.85, 0.9, 1.1, 1.15])
def test_tempo_scales_the_duration_and_keeps_f0(tempo):
    x = harmonic_burst()
    y = change_tempo_and_pitch(x, tempo=tempo)
    assert len(y) == round(tempo * len(x))
    (onset, offset), (onset_in, offset_in) = tone_edges(y), tone_edges(x)
    assert abs((offset - onset) - tempo * (offset_in - onset_in)) < 0.005  # the tone itself, within 5 ms
    assert abs(onset - tempo * onset_in) < 0.008  # the silence before it too
    assert f0_of(y) == pytest.approx(f0_of(x), rel=0.003)


def test_tempo_and_pitch_together():
    x = harmonic_burst(f0=180.0)
    y = change_tempo_and_pitch(x, tempo=1.12, semitones=-2.5)
    (onset, offset), (onset_in, offset_in) = tone_edges(y), tone_edges(x)
    assert abs((offset - onset) - 1.12 * (offset_in - onset_in)) < 0.005
    assert f0_of(y) / f0_of(x) == pytest.approx(2 ** (-2.5 / 12), rel=0.003)


def ola_without_alignment(x: np.ndarray, factor: float) -> np.ndarray:
    """Plain overlap-add (WSOLA with no tolerance): frames read at their nominal places."""
    from emospoof.augment import prosody
    original = prosody.TOLERANCE
    prosody.TOLERANCE = 0
    try:
        return wsola(x, factor)
    finally:
        prosody.TOLERANCE = original


def test_wsola_frames_overlap_in_phase():
    """A steady tone keeps a steady level: frames that overlapped out of phase would cancel, as
    they do in plain overlap-add (checked, so that the test can fail)."""
    x = harmonic_burst(f0=125.0, before=0.0, tone=2.0, after=0.0)  # a period of 128 samples

    def levels(y: np.ndarray) -> np.ndarray:
        steady = y[SR // 4:-SR // 4].astype(np.float64)
        frames = steady[:len(steady) // 256 * 256].reshape(-1, 256)  # two periods each
        return 10 * np.log10(np.mean(frames ** 2, axis=1)) - level_db(x)

    assert np.ptp(levels(x)) < 0.01
    for factor in (0.8, 0.93, 1.17):
        stretched, plain = levels(wsola(x, factor)), levels(ola_without_alignment(x, factor))
        assert np.ptp(stretched) < 0.2 and abs(stretched.mean()) < 0.05, factor
        assert np.ptp(plain) > 0.5 and plain.mean() < -0.5, factor  # partial cancellation
    assert np.array_equal(wsola(x, 1.0), x)


@pytest.mark.parametrize("tilt", [-3.0, 2.5])
def test_tilt_changes_each_octave_by_the_configured_db_and_keeps_the_rms(tilt):
    t = np.arange(2 * SR) / SR
    octaves = [250.0, 500.0, 1000.0, 2000.0, 4000.0]
    x = sum(0.05 * np.sin(2 * np.pi * f * t) for f in octaves).astype(np.float32)
    y = tilt_spectrum(x, tilt)
    changes = np.array([tone_level_db(y, f) - tone_level_db(x, f) for f in octaves])
    np.testing.assert_allclose(np.diff(changes), tilt, atol=0.05)  # per octave
    assert level_db(y) == pytest.approx(level_db(x), abs=0.01)  # RMS restored


def test_gain_changes_the_level_by_the_configured_db_but_never_past_full_scale():
    x = harmonic_burst(amplitude=0.05)
    for gain in (-6.0, -1.5, 4.0, 6.0):
        assert level_db(gain_within_full_scale(x, gain)) - level_db(x) == pytest.approx(gain, abs=1e-4)
    loud = harmonic_burst(amplitude=0.4)
    assert np.abs(loud).max() < 1 < np.abs(loud).max() * 10 ** (6 / 20)
    assert np.abs(gain_within_full_scale(loud, 6.0)).max() == pytest.approx(1.0, abs=1e-6)


def test_prosody_step_draws_within_the_ranges_and_follows_its_generator():
    params = ProsodyParams(pitch_semitones=(-2.0, 3.0), tempo=(0.9, 1.2), gain_db=(-4.0, 1.0),
                           tilt_db_per_octave=(-1.0, 2.0))
    step = ProsodyStep(params)
    draws = np.array([step.draw(np.random.default_rng(seed)) for seed in range(300)])
    for column, (low, high) in zip(draws.T, [(-2, 3), (0.9, 1.2), (-1, 2), (-4, 1)]):
        assert low <= column.min() and column.max() <= high
        assert column.max() - column.min() > 0.9 * (high - low)  # drawn over the whole range
    x = harmonic_burst(amplitude=0.1, tone=0.5)
    first = step(x, np.random.default_rng(5))
    assert np.array_equal(first, step(x, np.random.default_rng(5)))
    assert not np.array_equal(first[:len(x) // 2], step(x, np.random.default_rng(6))[:len(x) // 2])
    neutral = ProsodyStep(ProsodyParams(pitch_semitones=(0, 0), tempo=(1, 1), gain_db=(0, 0),
                                        tilt_db_per_octave=(0, 0)))
    assert np.array_equal(neutral(x, np.random.default_rng(0)), x)


# ---------------------------------------------------------------------------------------------
# Silence

def test_silence_has_the_drawn_durations_and_level_and_keeps_the_speech():
    step = SilenceStep(SilenceParams(lead_s=(0.0, 1.0), trail_s=(0.2, 0.6), floor_dbfs=(-60.0, -40.0)))
    t = np.arange(SR // 2) / SR
    x = (0.2 * sum(np.cos(2 * np.pi * k * 140 * t) / k for k in range(1, 12))).astype(np.float32)  # starts at its peak
    fade = int(FADE_S * SR)
    leads, trails = [], []
    for seed in range(40):
        draw = step.draw(np.random.default_rng(seed))
        y = step(x, np.random.default_rng(seed))
        assert len(y) == draw.lead + len(x) + draw.trail and y.dtype == np.float32
        assert -60.0 <= draw.floor_dbfs <= -40.0 and -12.0 <= draw.gain_db <= 6.0
        # Measured on the output: the speech is all that reaches -20 dBFS (the floor's peaks stay below).
        loud = np.flatnonzero(np.abs(y) > 0.1)
        assert loud[0] == draw.lead and len(y) - 1 - loud[-1] == draw.trail
        np.testing.assert_array_equal(y[draw.lead:draw.lead + len(x)], gain_within_full_scale(x, draw.gain_db))
        floor = np.concatenate([y[:max(draw.lead - fade, 0)], y[draw.lead + len(x) + fade:]])
        assert level_db(floor) == pytest.approx(draw.floor_dbfs, abs=0.2)
        leads.append(draw.lead / SR)
        trails.append(draw.trail / SR)
    assert 0.0 <= min(leads) < 0.1 and 0.9 < max(leads) <= 1.0
    assert 0.2 <= min(trails) < 0.3 and 0.5 < max(trails) <= 0.6
    assert {step.draw(np.random.default_rng(seed)).colour for seed in range(40)} == {"white", "pink"}


def band_power_db(y: np.ndarray, low: float, high: float) -> float:
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    return 10 * np.log10(np.sum(np.abs(np.fft.rfft(y.astype(np.float64))[(freqs >= low) & (freqs < high)]) ** 2))


def test_white_and_pink_floors():
    rng = np.random.default_rng(0)
    white, pink = noise_floor(rng, 4 * SR, "white", -50.0), noise_floor(rng, 4 * SR, "pink", -50.0)
    assert level_db(white) == pytest.approx(-50.0, abs=0.01) and level_db(pink) == pytest.approx(-50.0, abs=0.01)
    # White: the same power per hertz, so 3 octaves up holds 8 times the power; pink: the same per octave.
    assert band_power_db(white, 4000, 8000) - band_power_db(white, 500, 1000) == pytest.approx(9.03, abs=0.5)
    assert band_power_db(pink, 4000, 8000) - band_power_db(pink, 500, 1000) == pytest.approx(0.0, abs=0.5)


# ---------------------------------------------------------------------------------------------
# Config, the pipeline and the training dataset

@pytest.mark.parametrize("section,expected", [
    ({"prosody": {"pitch_semitone": [-3, 3]}},
     "unknown config key 'augmentation.prosody.pitch_semitone' (did you mean 'pitch_semitones'?)"),
    ({"prosody": {"tempo": [1.2, 0.8]}}, "config key 'augmentation.prosody.tempo': min 1.2 is greater than max 0.8"),
    ({"prosody": {"tempo": [0, 1]}}, "config key 'augmentation.prosody.tempo': expected a number at least 0.5"),
    ({"prosody": {"p": 2}}, "config key 'augmentation.prosody.p': expected a number at least 0 and at most 1"),
    ({"prosody": {"tilt_db_per_octave": "steep"}},
     "config key 'augmentation.prosody.tilt_db_per_octave': expected [min, max] or a number"),
    ({"silence": {"lead_s": [-1, 1]}}, "config key 'augmentation.silence.lead_s': expected a number at least 0"),
    ({"silence": {"floor_dbfs": [-40, 6]}}, "config key 'augmentation.silence.floor_dbfs': expected a number"),
    ({"silence": {"colours": ["brown"]}}, "config key 'augmentation.silence.colours': expected a list of white"),
    ({"silence": {"colors": ["pink"]}}, "unknown config key 'augmentation.silence.colors' (did you mean 'colours'?)"),
    ({"silence": []}, "config key 'augmentation.silence': expected an object"),
])
def test_config_errors_are_one_line(section, expected):
    with pytest.raises(ConfigError) as error:
        validate_augmentation_config({"augmentation": section})
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_the_utterance_steps_come_first_and_split_one_call_in_two():
    assert STEP_ORDER[:len(UTTERANCE_STEPS)] == UTTERANCE_STEPS
    section = {"codec": {"codecs": ["mulaw"], "p": 0.5}, "silence": {"p": 0.5}, "rawboost": {"algo": 3},
               "prosody": {"p": 0.5, "tempo": [0.9, 1.1]}}
    assert list(parse_section(section, "augmentation.")) == ["prosody", "silence", "rawboost", "codec"]
    augmentation = build_augmentation({"augmentation": section})
    x = harmonic_burst(tone=0.5, amplitude=0.1)
    for seed in range(6):
        whole = augmentation(x, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        np.testing.assert_array_equal(augmentation.after_crop(augmentation.before_crop(x, rng), rng), whole)


def write_trials(folder, n_per_class: int) -> list[Trial]:
    """Bona fide and spoof trials, alternating, over eight 0.3-s files (four per class)."""
    files = {}
    for label in (BONAFIDE_INDEX, SPOOF_INDEX):
        for i in range(4):
            path = folder / f"{label}_{i}.wav"
            sf.write(path, harmonic_burst(f0=100 + 30 * i + 7 * label, before=0.05, tone=0.2, after=0.05,
                                          amplitude=0.1), SR)
            files[label, i] = path
    return [Trial(f"utt{k}", files[label, k % 4], label) for k in range(n_per_class)
            for label in (BONAFIDE_INDEX, SPOOF_INDEX)]


def training_crops(trials: list[Trial], section: dict | None, epoch: int = 0, seed: int = 3) -> tuple:
    """(crops, labels) of one epoch of training crops (2 400 samples) as the training loader makes them."""
    augmentation = build_augmentation({"augmentation": section}) if section else None
    loader = make_loader(TrialDataset(trials, 2400, "train", augment=augmentation, seed=seed), 64, False, 0, seed)
    loader.sampler.set_epoch(epoch)
    batches = list(loader)
    return np.concatenate([b.x.numpy() for b in batches]), np.concatenate([b.labels.numpy() for b in batches])


@pytest.mark.parametrize("section,p", [({"prosody": {"p": 0.5}}, 0.5), ({"silence": {"p": 0.6}}, 0.6)])
def test_both_classes_are_changed_at_the_configured_rate(tmp_path, section, p):
    """The step never sees the label: over 300 trials per class the share of training crops it
    changed matches p within sampling error in each class, and the classes do not differ."""
    trials = write_trials(tmp_path, 300)
    clean, labels = training_crops(trials, None)
    augmented, same_labels = training_crops(trials, section)
    assert augmented.shape == clean.shape == (600, 2400)  # the crops keep their length
    assert np.array_equal(labels, same_labels)
    changed = np.any(augmented != clean, axis=1)
    counts = {}
    for label in (BONAFIDE_INDEX, SPOOF_INDEX):
        of_class = changed[labels == label]
        counts[label] = (int(of_class.sum()), len(of_class) - int(of_class.sum()))
        assert stats.binomtest(counts[label][0], len(of_class), p).pvalue > 1e-3, (label, of_class.mean())
    assert stats.fisher_exact([counts[BONAFIDE_INDEX], counts[SPOOF_INDEX]]).pvalue > 1e-3, counts


def test_draws_are_seeded_per_file_and_epoch(tmp_path):
    trials = write_trials(tmp_path, 5)
    section = {"prosody": {}, "silence": {}}
    first = training_crops(trials, section)[0]
    assert np.array_equal(first, training_crops(trials, section)[0])  # same seed, epoch and file
    other_epoch = training_crops(trials, section, epoch=1)[0]
    assert not any(np.array_equal(a, b) for a, b in zip(first, other_epoch))
    # Whole utterances (eval conditions): the same trial always gets the same draw; another trial
    # of the same file, another draw.
    dataset = TrialDataset(trials, 64000, "first", augment=build_augmentation({"augmentation": section}))
    a, b, c = dataset[0].windows, dataset[0].windows, dataset[8].windows  # trials 0 and 8 share a file
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[0].windows, a)


def test_training_runs_the_utterance_steps_on_whole_training_utterances(tmp_path, tiny_la, monkeypatch):
    """main.py with prosody, silence and the telephone band: prosody sees whole training
    utterances (never a dev or eval one), the telephone band the 8 000-sample crops; an eval
    condition of silence scores LA eval untrimmed."""
    import main as main_module
    from data_utils import load_audio
    from emospoof.augment import channel, prosody
    from tests.conftest import make_config

    seen = {"prosody": [], "telephone": []}
    real_prosody, real_band_limit = prosody.ProsodyStep.__call__, channel.band_limit

    def recording_prosody(self, x, rng):
        seen["prosody"].append(len(x))
        return real_prosody(self, x, rng)

    def recording_band_limit(x, *args):
        seen["telephone"].append(len(x))
        return real_band_limit(x, *args)

    monkeypatch.setattr(prosody.ProsodyStep, "__call__", recording_prosody)
    monkeypatch.setattr(channel, "band_limit", recording_band_limit)
    config = make_config(tmp_path, tiny_la, augmentation={"prosody": {}, "silence": {"p": 0.5}, "telephone": {}},
                         eval_condition={"untrimmed": {"silence": {}}})
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "run"), "--seed", "1"])
    run = next((tmp_path / "run").iterdir())
    train_lengths = {len(load_audio(path)) for path in (tiny_la / "ASVspoof2019_LA_train" / "flac").glob("LA_T_000*")}
    assert set(seen["prosody"]) == train_lengths  # every training file, whole, and nothing else
    assert set(seen["telephone"]) == {8000}
    assert (run / "eval_scores_untrimmed.txt").read_text() != (run / "eval_scores.txt").read_text()

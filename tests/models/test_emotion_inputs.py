"""The emotion input per utterance: computed once per file on the whole recording, before any
augmentation, identical for every crop, window and epoch; standardised with training statistics;
Concat starts as AASIST; the emotion parts get their own learning rate; and a conditioned model
learns to use its emotion input where the bona fide cue depends on it."""
from __future__ import annotations


import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from data_utils import SkipReport, Trial, TrialDataset
from emospoof.scoring.utterances import utterance_features
from emospoof.scoring.windows import score_windows
from emospoof.training.optim import create_optimizer, emotion_parameters, parameter_groups
from models import AASIST, build_model
from tests.conftest import TINY_AASIST

pytestmark = pytest.mark.usefixtures("single_thread")


def model_with(architecture: str, tiny_ser_dir, **extra) -> torch.nn.Module:
    ser = {"backend": "hf", "ser_path": str(tiny_ser_dir), "layer": "penultimate"}
    return build_model({"architecture": architecture, **TINY_AASIST, "ser_config": ser, **extra})


@pytest.fixture
def recordings(tmp_path):
    rng = np.random.default_rng(0)
    trials = []
    for i, seconds in enumerate((0.9, 1.7, 0.6)):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.2 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        trials.append(Trial(f"u{i}", path, i % 2))
    return trials


def test_bad_files_are_skipped_with_the_reasons_scoring_gives(tmp_path, recordings):
    """The utterance pass reads audio as the scoring pass does: an empty file and garbage are
    skipped with the same one-line reasons, and the run goes on with the other files."""
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    bad = [Trial("empty", tmp_path / "empty.wav", 1), Trial("junk", tmp_path / "junk.wav", 1)]
    skips = SkipReport(lambda line: None)
    inputs = utterance_features(recordings + bad, lambda wave: wave.mean(dim=1, keepdim=True), num_workers=0,
                                skips=skips)
    assert sorted(inputs) == ["u0", "u1", "u2"]
    scored = TrialDataset(bad, 4000, "full")
    assert skips.reasons == {str(t.path): scored[i].reason for i, t in enumerate(bad)}
    assert skips.reasons[str(tmp_path / "empty.wav")] == "empty file (0 bytes)"


def test_one_input_per_file_for_every_crop_window_and_epoch_computed_before_augmentation(tiny_ser_dir, recordings):
    model = model_with("AASIST_FiLM", tiny_ser_dir).eval()
    calls = []

    def features(wave: torch.Tensor) -> torch.Tensor:
        calls.append(wave.shape[1])
        return model.raw_emotion(wave)
    inputs = utterance_features(recordings, features, num_workers=0)
    assert sorted(calls) == sorted(int(s * 16000) for s in (0.9, 1.7, 0.6))  # once per file, whole recording
    with torch.no_grad():
        whole = model.raw_emotion(torch.from_numpy(sf.read(recordings[1].path, dtype="float32")[0])[None])
    np.testing.assert_allclose(inputs["u1"], whole[0].numpy(), atol=1e-6)

    def scramble(audio, rng):  # an augmentation that leaves nothing of the emotion
        return rng.standard_normal(len(audio)).astype(np.float32)
    train = TrialDataset(recordings, 4000, "train", augment=scramble, seed=3, utterance_inputs=inputs)
    seen = []
    for epoch in (0, 1, 2):
        train.set_epoch(epoch)
        seen += [train[1].utterance_input.numpy()]
    assert all(np.array_equal(v, inputs["u1"]) for v in seen)

    rows: list[torch.Tensor] = []

    def forward(x: torch.Tensor, extra: torch.Tensor | None = None) -> np.ndarray:
        rows.append(extra)
        return np.zeros((len(x), 2))
    run = score_windows(recordings, forward, 4000, "full", 2000, batch_size=5, utterance_inputs=inputs, progress=False)
    stacked = torch.cat(rows).numpy()
    expected = np.concatenate([np.repeat(inputs[t.utt_id][None], len(run.outputs[t.utt_id]), 0) for t in recordings])
    assert len(run.outputs["u1"]) > 2 and np.array_equal(stacked, expected)  # every window of a file gets its input


def test_standardised_with_training_statistics_and_refuses_to_guess(tiny_ser_dir):
    model = model_with("AASIST_FiLM", tiny_ser_dir, emotion_features="arousal_valence").eval()
    train = torch.tensor([[0.8, 0.2], [0.6, 0.4], [-0.5, -0.5], [-0.7, -0.3]])
    model.set_emotion_statistics(train, ["angry", "happy", "sad", "calm"])
    x = torch.randn(2, 4000)
    given = torch.tensor([[0.7, 0.3], [-0.6, -0.4]])
    expected = (given - train.mean(0)) / train.std(0)
    torch.testing.assert_close(model.emotion(x, given), expected)
    assert model.emotion(x, given).norm(dim=1)[0] != pytest.approx(1.0)  # the magnitude (arousal) is kept
    with pytest.raises(Exception, match="whole utterance"):
        model(x)  # no utterance input: the model does not fall back to the window


def test_concat_starts_exactly_as_aasist(tiny_ser_dir, tmp_path):
    torch.manual_seed(4)
    aasist = AASIST.Model(TINY_AASIST).eval()
    torch.save(aasist.state_dict(), tmp_path / "aasist.pth")
    model = model_with("AASIST_Concat", tiny_ser_dir, aasist_path=str(tmp_path / "aasist.pth")).eval()
    x, emotion = torch.randn(3, 4000), torch.randn(3, model.emotion_dim)
    with torch.no_grad():
        torch.testing.assert_close(model(x, emotion=emotion)[1], aasist(x)[1], atol=1e-6, rtol=1e-5)
        old = model_with("AASIST_Concat", tiny_ser_dir, aasist_path=str(tmp_path / "aasist.pth"), residual=False).eval()
        assert not torch.allclose(old(x, emotion=emotion)[1], aasist(x)[1], atol=1e-3)  # the old head started random


@pytest.mark.parametrize("architecture", ["AASIST_FiLM", "AASIST_GFiLM", "AASIST_Concat", "AASIST_EmoMoE"])
def test_the_emotion_parts_get_their_own_learning_rate(tiny_ser_dir, architecture):
    model = model_with(architecture, tiny_ser_dir)
    parts = {id(p) for p in emotion_parameters(model)}
    assert parts and parts.isdisjoint(id(p) for p in model.aasist.parameters())
    optim_config = {"base_lr": 1e-4, "emotion_lr": 3e-3, "weight_decay": 1e-4}
    groups = parameter_groups(model, optim_config)
    optimizer, _ = create_optimizer(groups, optim_config, total_steps=10)
    emotion_group = next(g for g in optimizer.param_groups if {id(p) for p in g["params"]} == parts)
    assert emotion_group["lr"] == 3e-3 and emotion_group["weight_decay"] == 0.0
    rest = [g for g in optimizer.param_groups if g is not emotion_group]
    assert len(rest) == 1 and rest[0]["lr"] == 1e-4 and rest[0]["weight_decay"] == 1e-4
    assert parameter_groups(model, {"base_lr": 1e-4}) == [p for p in model.parameters() if p.requires_grad]


HIGH, LOW = np.array([0.8, 0.3]), np.array([-0.6, -0.6])


def cue_batch(n: int, rng: np.random.Generator):
    """The bona fide cue depends on the emotion: aroused bona fide speech is a low tone and calm bona
    fide speech a high one; spoofs the other way round. The audio alone is at chance."""
    labels = np.arange(n) % 2
    high = rng.random(n) < 0.5
    low_tone = (labels == 1) == high
    freqs = np.where(low_tone, rng.uniform(200, 500, n), rng.uniform(3000, 5000, n))
    t = np.arange(4000) / 16000
    wave = rng.uniform(0.3, 1.0, (n, 1)) * np.sin(2 * np.pi * freqs[:, None] * t + rng.uniform(0, 6, (n, 1)))
    emotion = np.where(high[:, None], HIGH, LOW) + 0.05 * rng.standard_normal((n, 2))
    return (torch.tensor(wave + 0.3 * rng.standard_normal((n, 4000)), dtype=torch.float32), torch.tensor(labels),
            torch.tensor(emotion, dtype=torch.float32), high)


@pytest.mark.parametrize("architecture", ["AASIST_FiLM", "AASIST_GFiLM", "AASIST_Concat"])
def test_a_conditioned_model_learns_to_use_its_emotion_input(tiny_ser_dir, architecture):
    """Given the emotion, the model separates the classes; with the emotion zeroed it is at chance,
    and with another emotion class's input (shuffle) its decisions flip."""
    torch.manual_seed(0)
    model = model_with(architecture, tiny_ser_dir, emotion_features="arousal_valence")
    rng = np.random.default_rng(0)
    _, _, emotion, high = cue_batch(64, rng)
    model.set_emotion_statistics(emotion, ["angry" if h else "sad" for h in high])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for _ in range(80):
        x, y, emotion, _ = cue_batch(16, rng)
        loss = F.cross_entropy(model(x, emotion=emotion)[1], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y, emotion, _ = cue_batch(200, np.random.default_rng(1))
    model.eval()
    errors = {}
    for ablation in ("none", "zero", "shuffle"):
        model.ablation = ablation
        with torch.no_grad():
            errors[ablation] = (model(x, emotion=emotion)[1].argmax(1) != y).float().mean().item()
    assert errors["none"] < 0.1 and 0.3 < errors["zero"] < 0.7 and errors["shuffle"] > 0.7, errors


def test_main_trains_and_evaluates_a_model_conditioned_per_utterance(tmp_path, tiny_la):
    """main.py end to end with FiLM conditioned on the arousal/valence of whole recordings:
    statistics fitted on the training files, kept in the weights, SWA re-estimated with the inputs,
    every set scored with them, and --ablations (shuffle among the training emotion classes)."""
    import json

    import main as main_module
    from safetensors.torch import load_file
    from tests.conftest import REPO, make_config

    labels = tmp_path / "labels.tsv"
    labels.write_text("utt_id\temotion\n" + "".join(f"LA_T_{i:07d}\t{('angry', 'sad', 'happy')[i % 3]}\n"
                                                   for i in range(16)))
    model_config = {"architecture": "AASIST_FiLM", **TINY_AASIST, "film_at": ["embedding"],
                    "emotion_features": "arousal_valence",
                    "ser_config": {"backend": "egemaps", "ser_path": str(REPO / "models/weights/ser_egemaps_ravdess.json")}}
    config = make_config(tmp_path, tiny_la, num_epochs=2, emotion_labels=str(labels), model_config=model_config,
                         optim_config={"base_lr": 1e-3, "emotion_lr": 1e-2}, freeze_aasist_epochs=1)
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "runs")])
    run = next((tmp_path / "runs").iterdir())
    weights = load_file(run / "weights" / "final.safetensors")
    assert weights["emotion_std"].shape == (2,) and not torch.equal(weights["emotion_std"], torch.ones(2))
    assert int((weights["class_counts"] > 0).sum()) == 3  # angry, happy and sad training trials
    report = json.loads((run / "eval_report.json").read_text())
    assert report["la_eval"]["n_scored"] == 8
    main_module.main(["--config", str(config), "--eval", "--ablations", "--eval_model_weights",
                      str(run / "weights" / "final.safetensors"), "--output_dir", str(tmp_path / "ev")])
    ablations = json.loads((next((tmp_path / "ev").iterdir()) / "eval_report.json").read_text())["ablations"]
    assert ablations == {}  # the tiny LA eval has no emotion labels: nothing to break down, and no crash

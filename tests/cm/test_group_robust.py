"""Group-robust training: class weights from the class counts, groups from labels or an SER's
prediction, the balanced sampler's group frequencies and the group-DRO weights against a hand
computation, and a short main.py run with both."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import main as main_module
from data_utils import GroupBalancedSampler, Trial
from emospoof.cm.group_robust import GroupDRO, check_group_config, class_weights, group_names
from emospoof.core.config import ConfigError
from tests.conftest import REPO, make_config

pytestmark = pytest.mark.usefixtures("single_thread")


def trial(name: str, label: int, emotion: str = "-") -> Trial:
    return Trial(name, Path(f"{name}.wav"), label, emotion=emotion)


def test_class_weights_from_the_counts_or_the_reference():
    trials = [trial(f"s{i}", 0) for i in range(30)] + [trial(f"b{i}", 1) for i in range(10)]
    spoof, bonafide = class_weights({}, trials)
    assert spoof * 30 == pytest.approx(bonafide * 10)  # each class carries the same total weight
    assert (spoof, bonafide) == pytest.approx((40 / 60, 40 / 20))
    assert class_weights({"class_weights": "reference"}, trials) == (0.1, 0.9)
    assert class_weights({"class_weights": [1, 3]}, trials) == (1.0, 3.0)
    with pytest.raises(ConfigError, match="class_weights"):
        check_group_config({"class_weights": "inverse"})


def test_balanced_class_weights_follow_what_the_group_sampler_draws():
    """Three spoof groups and two bona fide groups drawn equally often: spoof is 3/5 of the draws
    whatever the trial counts, so the weights balance 3:2, not 30:10."""
    trials = [trial(f"s{i}", 0) for i in range(30)] + [trial(f"b{i}", 1) for i in range(10)]
    sampled = ["bonafide/high", "bonafide/low", "spoof/-", "spoof/high", "spoof/low"]
    spoof, bonafide = class_weights({}, trials, sampled)
    assert (spoof, bonafide) == pytest.approx((5 / 6, 5 / 4))
    assert class_weights({"class_weights": [1, 3]}, trials, sampled) == (1.0, 3.0)


def test_an_ser_file_that_is_missing_is_refused_before_training(tmp_path, tiny_la):
    ser = {"backend": "egemaps", "ser_path": str(tmp_path / "absent.json")}
    config = make_config(tmp_path, tiny_la, group_robust={"ser_config": ser})
    with pytest.raises(SystemExit, match="2"):
        main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_class_weights_with_group_dro_are_refused():
    check_group_config({"class_weights": [1, 2], "group_robust": {"dro_step": 0}})
    with pytest.raises(ConfigError, match="class_weights.*group DRO"):
        check_group_config({"class_weights": [1, 2], "group_robust": {"dro_step": 0.01}})


def test_groups_from_labels_else_the_prediction():
    trials = [trial("a", 1, "angry"), trial("b", 1, "sad"), trial("c", 0, "-"), trial("d", 0, "-")]
    assert group_names(trials, "arousal", {"c": "happy"}) == ["bonafide/high", "bonafide/low", "spoof/high", "spoof/-"]
    assert group_names(trials, "emotion") == ["bonafide/angry", "bonafide/sad", "spoof/-", "spoof/-"]


def test_the_balanced_sampler_draws_every_group_equally_often():
    """Groups of 6, 2, 1 and 3 trials, 12 draws an epoch: each group 3 times; inside a group every
    member as evenly as possible (the lone trial 3 times, each of the pair once or twice)."""
    groups = [0] * 6 + [1] * 2 + [2] + [3] * 3
    sampler = GroupBalancedSampler(groups, seed=5)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        drawn = [index for index, _ in sampler]
        assert len(drawn) == 12
        per_group = Counter(groups[i] for i in drawn)
        assert per_group == {0: 3, 1: 3, 2: 3, 3: 3}
        per_member = Counter(drawn)
        assert per_member[8] == 3 and sorted(per_member[i] for i in (6, 7)) == [1, 2]
        assert all(per_member[i] == 1 for i in (9, 10, 11)) and all(per_member[i] <= 1 for i in range(6))
    first = [i for i, _ in GroupBalancedSampler(groups, seed=5)]
    again = [i for i, _ in GroupBalancedSampler(groups, seed=5)]
    assert first == again  # seeded: a resumed run draws the same
    halves = [[i for i, _ in GroupBalancedSampler(groups, seed=5, rank=r, world_size=2)] for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == sorted(first)


def test_group_dro_weights_follow_a_hand_computation():
    dro = GroupDRO(3, step=0.5, device=torch.device("cpu"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5], [0.0, 3.0]])
    labels = torch.tensor([1, 1, 0, 0, 1])
    groups = torch.tensor([0, 0, 1, 1, 2])
    per_sample = F.cross_entropy(logits, labels, reduction="none").double()
    means = [per_sample[:2].mean(), per_sample[2:4].mean(), per_sample[4]]
    q = np.array([1 / 3] * 3) * np.exp(0.5 * np.array([float(m) for m in means]))
    q /= q.sum()
    loss = dro.loss(logits, labels, groups)
    np.testing.assert_allclose(dro.weights.numpy(), q, rtol=1e-9)
    step = float(loss.total / loss.weight)
    assert step == pytest.approx(float(sum(q[g] * float(means[g]) for g in range(3))), rel=1e-6)
    # the worst group (0: a confident mistake) gains weight; a second batch without group 2 keeps its weight's ratio
    assert dro.weights[0] == dro.weights.max()
    before = dro.weights.clone()
    dro.loss(logits[:4], labels[:4], groups[:4])
    assert dro.weights[2] / before[2] < 1 and math.isclose(float(dro.weights.sum()), 1.0)
    restored = GroupDRO(3, step=0.5, device=torch.device("cpu"))
    restored.load_state_dict(dro.state_dict())
    assert torch.equal(restored.weights, dro.weights)


def test_main_trains_with_a_balanced_sampler_and_group_dro(tmp_path, tiny_la, capsys):
    labels = tmp_path / "labels.tsv"
    rows = ["utt_id\temotion"] + [f"LA_T_{i:07d}\t{'angry' if i % 4 < 2 else 'sad'}" for i in range(12)]
    labels.write_text("\n".join(rows) + "\n")
    config = make_config(tmp_path, tiny_la, num_epochs=1, emotion_labels=str(labels),
                         group_robust={"groups": "arousal", "sampler": "balanced", "dro_step": 0.05})
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "runs")])
    run = next((tmp_path / "runs").iterdir())
    checkpoint = torch.load(run / "checkpoint.pth", weights_only=True)
    weights = checkpoint["task"]["dro"]["weights"]
    assert len(weights) == 6 and float(weights.sum()) == pytest.approx(1.0)  # 2 keys x (high, low, unlabelled)
    assert not torch.allclose(weights, torch.full_like(weights, 1 / 6))  # they moved with the losses
    # an SER places the unlabelled trials: only the corrupt file it cannot read is left in '-'
    ser = {"backend": "egemaps", "ser_path": str(REPO / "models/weights/ser_egemaps_ravdess.json")}
    config = make_config(tmp_path, tiny_la, "predicted.conf", num_epochs=1, emotion_labels=str(labels),
                         group_robust={"groups": "arousal", "dro_step": 0.05, "ser_config": ser})
    capsys.readouterr()
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "predicted")])
    groups = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("training groups:"))
    assert "bonafide/-" not in groups and "spoof/- 1" in groups, groups
    assert json.loads((run / "eval_report.json").read_text())["training"]["seed"] == 1234

"""What the countermeasure objective asks of groups of trials: class weights from the training
set's class counts, and group-robust training over (key x emotion group).

Class weights (``class_weights``): ``balanced`` (default) weights each class by the inverse of its
share of the trials the loss sees, so both classes carry the same total weight whatever the data
(with the group-balanced sampler that share is the class's share of the groups, not of the
trials: the sampler has already balanced the classes, and weighting by trial counts on top would
count the rarer class twice); with group DRO no class weight is applied, since the groups already
split the classes and DRO weighs each group by its loss;
``reference`` is the AASIST reference's 0.1 spoof / 0.9 bona fide (ASVspoof 2019 LA's ratio; on
the devkit it gives bona fide 81 % of the loss); or a list ``[spoof, bona fide]``.

Group-robust training (``group_robust``): groups are the key crossed with the arousal group (or
the emotion) of each training trial, from its emotion label when the training set has one (e.g.
the devkit's ``meta.tsv`` through ``emotion_labels``), else from an SER's predicted emotion
(``group_robust.ser_config``), else ``-``. ``sampler: balanced`` draws every group equally often
in each epoch (``data_utils.GroupBalancedSampler``); ``dro_step`` > 0 turns on group DRO
(Sagawa et al., "Distributionally Robust Neural Networks for Group Shifts", ICLR 2020, their
online algorithm): a weight per group, multiplied after each batch by exp(step x the group's mean
loss) and renormalised, so the worst group's loss counts most; the loss of a batch is the
weighted mean of its groups' mean losses.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from data_utils import Trial
from emospoof.core.config import ConfigError, check_keys, is_number
from emospoof.core.emotions import UNLABELLED, arousal_of
from emospoof.core.labels import BONAFIDE_INDEX, SPOOF_INDEX, key_of, label_of
from emospoof.training import distributed
from emospoof.training.engine import StepLoss
from models.emotion.branch import validate_ser_config

REFERENCE_WEIGHTS = (0.1, 0.9)  # spoof (index 0), bona fide (index 1): the AASIST reference's
GROUP_ROBUST_KEYS = {"groups", "sampler", "dro_step", "ser_config"}
GROUPINGS = ("arousal", "emotion")
SAMPLERS = ("shuffle", "balanced")


def check_group_config(config: dict) -> None:
    """``class_weights`` and the ``group_robust`` section (no file is read)."""
    weights = config.get("class_weights", "balanced")
    if not (weights in ("balanced", "reference") or (isinstance(weights, list) and len(weights) == 2 and all(
            is_number(w) and w > 0 for w in weights))):
        raise ConfigError(f"config key 'class_weights': expected 'balanced', 'reference' or [spoof, bona fide] "
                          f"positive numbers, got {weights!r}")
    section = config.get("group_robust")
    if section is None:
        return
    if not isinstance(section, dict):
        raise ConfigError(f"config key 'group_robust': expected an object, got {section!r}")
    check_keys(section, GROUP_ROBUST_KEYS, "group_robust.")
    if "ser_config" in section:
        validate_ser_config(section["ser_config"], "group_robust.ser_config")
    if section.get("groups", "arousal") not in GROUPINGS:
        raise ConfigError(f"config key 'group_robust.groups': expected one of {', '.join(GROUPINGS)}, "
                          f"got {section['groups']!r}")
    if section.get("sampler", "balanced") not in SAMPLERS:
        raise ConfigError(f"config key 'group_robust.sampler': expected one of {', '.join(SAMPLERS)}, "
                          f"got {section['sampler']!r}")
    step = section.get("dro_step", 0.01)
    if not (is_number(step) and step >= 0):
        raise ConfigError(f"config key 'group_robust.dro_step': expected a number >= 0, got {step!r}")
    if step > 0 and "class_weights" in config:
        raise ConfigError("config key 'class_weights' does nothing with group DRO (group_robust.dro_step > 0), "
                          "which weighs each (key x group) group by its loss; remove one of them")
    if section.get("sampler", "balanced") == "shuffle" and step == 0:
        raise ConfigError("config key 'group_robust': with sampler 'shuffle' and dro_step 0 it does nothing; "
                          "remove it or turn one of them on")


def class_weights(config: dict, trials: list[Trial], sampled_groups: list[str] | None = None) -> tuple[float, float]:
    """(spoof, bona fide) weights of the cross-entropy, as ``class_weights`` says; ``balanced``
    counts the trials, or the groups ``sampled_groups`` (``<key>/<group>`` names) when a
    group-balanced sampler draws each of them equally often."""
    weights = config.get("class_weights", "balanced")
    if weights == "reference":
        return REFERENCE_WEIGHTS
    if isinstance(weights, list):
        return float(weights[SPOOF_INDEX]), float(weights[BONAFIDE_INDEX])
    labels = [t.label for t in trials] if sampled_groups is None else [
        label_of(name.split("/")[0]) for name in sampled_groups]
    counts = np.bincount(labels, minlength=2).astype(float)
    if np.any(counts == 0):
        raise ConfigError("class_weights 'balanced': the training data hold only one class")
    inverse = counts.sum() / (2 * counts)
    return float(inverse[SPOOF_INDEX]), float(inverse[BONAFIDE_INDEX])


def group_names(trials: list[Trial], grouping: str, predicted: dict[str, str] | None = None) -> list[str]:
    """Each trial's group, ``<key>/<arousal or emotion>``: the trial's emotion label, else the
    predicted emotion (``predicted``: utterance id -> emotion), else '-'."""
    names = []
    for trial in trials:
        emotion = trial.emotion if trial.emotion != UNLABELLED else (predicted or {}).get(trial.utt_id, UNLABELLED)
        part = emotion if grouping == "emotion" else (arousal_of(emotion) or UNLABELLED)
        names.append(f"{key_of(trial.label)}/{part}")
    return names


class GroupDRO:
    """The online group-DRO objective over ``n_groups`` groups; ``weights`` is its state (kept in
    the run's checkpoint so a resumed run continues exactly)."""

    def __init__(self, n_groups: int, step: float, device: torch.device) -> None:
        self.step = step
        self.weights = torch.full((n_groups,), 1.0 / n_groups, dtype=torch.float64, device=device)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> StepLoss:
        """Per-sample cross-entropy; the group weights updated with this batch's group means (summed
        over every process, so all keep the same weights); the batch loss weighted by them."""
        per_sample = F.cross_entropy(logits.float(), labels, reduction="none")
        n_groups = self.weights.numel()
        sums = torch.zeros(n_groups, dtype=torch.float64, device=logits.device).index_add_(
            0, groups, per_sample.detach().double())
        counts = torch.zeros(n_groups, dtype=torch.float64, device=logits.device).index_add_(
            0, groups, torch.ones_like(per_sample, dtype=torch.float64))
        totals = distributed.sum_over_ranks(torch.cat([sums, counts]))
        sums, counts = totals[:n_groups], totals[n_groups:]
        present = counts > 0
        self.weights[present] *= torch.exp(self.step * sums[present] / counts[present])
        self.weights /= self.weights.sum()
        weight_per_sample = (self.weights / counts.clamp_min(1))[groups].float()
        total = (weight_per_sample * per_sample).sum()
        return StepLoss(total, weight_per_sample.sum(), logits)

    def state_dict(self) -> dict:
        return {"weights": self.weights.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.weights.copy_(state["weights"])

"""Utterance-level inputs computed once per file on the whole recording: the emotion input of an
emotion-conditioned model, the SER's predicted emotion of an unlabelled training trial, the
covariates of emotion-aware calibration.

Why once per file: an emotion is a property of the utterance, and a one-second training crop or a
silent window says little about it; computed on the whole (preprocessed, never augmented)
recording, every crop and window of a file gets the same input in every epoch, and a frozen SER
runs once per file instead of once per crop. Files are decoded and the features computed in
loader workers; under torchrun each process computes a share and all get every input.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data_utils import SkipReport, Trial, default_num_workers, read_trial_audio
from emospoof.training import distributed

# features(waveforms (1, samples)) -> (1, dim)
Features = Callable[[torch.Tensor], torch.Tensor]


class WholeRecordings(Dataset):
    """Each trial's whole recording (preprocessed when asked) through ``features``: (utt_id,
    vector) or (utt_id, None, reason)."""

    def __init__(self, trials: list[Trial], features: Features,
                 preprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.trials, self.features, self.preprocess = trials, features, preprocess

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray | None, str | None]:
        trial = self.trials[index]
        audio, reason = read_trial_audio(trial.path)
        if audio is None:
            return trial.utt_id, None, reason
        if self.preprocess is not None:
            audio = self.preprocess(audio)
        with torch.inference_mode():
            vector = self.features(torch.from_numpy(np.ascontiguousarray(audio))[None].float())
        return trial.utt_id, vector[0].float().cpu().numpy(), None


def _as_is(item):
    return item


def utterance_features(trials: list[Trial], features: Features, preprocess=None, num_workers: int | None = None,
                       desc: str = "utterance inputs", skips: SkipReport | None = None) -> dict[str, np.ndarray]:
    """utterance id -> ``features`` of the whole recording, for every trial whose audio loads
    (the others are reported to ``skips`` and left out)."""
    local = distributed.shard(trials)
    workers = default_num_workers() if num_workers is None else num_workers
    loader = DataLoader(WholeRecordings(local, features, preprocess), batch_size=None, num_workers=workers,
                        collate_fn=_as_is)
    found, failures = {}, []
    for utt_id, vector, reason in tqdm(loader, total=len(local), desc=desc, unit="file", leave=False,
                                       disable=not distributed.is_main()):
        if vector is None:
            failures.append((utt_id, reason))
        else:
            found[utt_id] = vector
    gathered = distributed.all_gather((found, failures))
    found = {utt: vector for part in gathered for utt, vector in part[0].items()}
    if skips is not None:
        paths = {t.utt_id: str(t.path) for t in trials}
        skips.add([(paths[utt], reason) for part in gathered for utt, reason in part[1]])
    return found

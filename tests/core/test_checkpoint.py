"""Weight files and checkpoints are written atomically: a save interrupted at any point leaves the
previous file readable and byte for byte as it was, at every place the project writes weights."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils import SkipReport
from emospoof.cm.training import CountermeasureTask
from emospoof.core.checkpoint import read_state, save_checkpoint
from emospoof.ser.classifiers import ACRNNClassifier, HFClassifier
from models import build_model
from models.emotion.acrnn import ACRNN
from tests.conftest import TINY_MODEL

# Where the cut falls, as a fraction of the file: the start, the end and random points between.
CUTS = [0.0, *np.random.default_rng(21).uniform(0, 1, 4).round(3), 0.999]


class Killed(BaseException):
    """What a kill in mid-save amounts to for the code that was saving: it never continues."""


def tear_saves(monkeypatch, cut: float) -> None:
    """Every serialiser the project writes weights with (``torch.save``, safetensors' ``save_file``
    and the one transformers' ``save_pretrained`` calls) writes the first ``cut`` of its bytes to
    its target and then stops, as a process killed during the write would."""
    import safetensors.torch
    import transformers.modeling_utils

    real_torch_save, safetensors_bytes = torch.save, safetensors.torch.save

    def torn(data: bytes, target) -> None:
        part = data[:int(len(data) * cut)]
        if hasattr(target, "write"):
            target.write(part)
        else:
            Path(target).write_bytes(part)
        raise Killed

    def torch_save(obj, target, *args, **kwargs) -> None:
        buffer = io.BytesIO()
        real_torch_save(obj, buffer, *args, **kwargs)
        torn(buffer.getvalue(), target)

    def save_file(tensors, filename, metadata=None) -> None:
        torn(safetensors_bytes(tensors, metadata=metadata), filename)

    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def changed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    return model


class RunWeights:
    """``weights/best`` as a training run writes it at a new best epoch."""

    def __init__(self, folder: Path) -> None:
        (folder / "weights").mkdir(parents=True)
        torch.manual_seed(0)
        self.task = CountermeasureTask(build_model(TINY_MODEL), {"swa": "False"}, torch.device("cpu"), folder, [],
                                       None, SkipReport(print))
        self.folder = folder

    def save(self) -> None:
        self.task.new_best(1, {})

    def change(self) -> None:
        changed(self.task.model)

    def read(self) -> dict:
        (path,) = (self.folder / "weights").glob("best.*")
        return read_state(path)


class TrainingCheckpoint:
    def __init__(self, folder: Path) -> None:
        self.folder, self.step = folder, 0

    def save(self) -> None:
        save_checkpoint({"step": self.step, "model": {"w": torch.full((1000,), float(self.step))}}, self.folder)

    def change(self) -> None:
        self.step += 1

    def read(self) -> dict:
        checkpoint = read_state(self.folder / "checkpoint.pth", what="checkpoint")
        return {"step": torch.tensor(checkpoint["step"]), **checkpoint["model"]}


class ACRNNFolder:
    """The ACRNN emotion classifier as train_ser.py keeps its best epoch."""

    def __init__(self, folder: Path) -> None:
        torch.manual_seed(0)
        self.classifier, self.folder = ACRNNClassifier(ACRNN((4, 8, 16, 8), 3), ("a", "b", "c")), folder

    def save(self) -> None:
        self.classifier.save(self.folder)

    def change(self) -> None:
        changed(self.classifier.model)

    def read(self) -> dict:
        return ACRNNClassifier.load(self.folder).model.state_dict()


class HFFolder:
    """A Hugging Face emotion classifier folder as train_ser.py keeps its best epoch."""

    def __init__(self, folder: Path, tiny_ser_dir: Path) -> None:
        self.classifier, self.folder = HFClassifier.load(tiny_ser_dir), folder

    def save(self) -> None:
        self.classifier.save(self.folder)

    def change(self) -> None:
        changed(self.classifier.model)

    def read(self) -> dict:
        return HFClassifier.load(self.folder).model.state_dict()


@pytest.mark.parametrize("writer", ["run weights", "training checkpoint", "ACRNN classifier", "HF classifier"])
def test_an_interrupted_save_leaves_the_previous_file_as_it_was(tmp_path, monkeypatch, tiny_ser_dir, writer):
    folder = tmp_path / "run"
    saver = {"run weights": lambda: RunWeights(folder), "training checkpoint": lambda: TrainingCheckpoint(folder),
             "ACRNN classifier": lambda: ACRNNFolder(folder),
             "HF classifier": lambda: HFFolder(folder, tiny_ser_dir)}[writer]()
    folder.mkdir(exist_ok=True)
    saver.save()
    saver.change()
    saver.save()  # a previous checkpoint exists too (checkpoint.prev.pth)
    before, state = files_under(folder), {k: v.clone() for k, v in saver.read().items()}
    saver.change()
    for cut in CUTS:
        with monkeypatch.context() as patch:
            tear_saves(patch, cut)
            with pytest.raises(Killed):
                saver.save()
        assert files_under(folder) == before, f"cut at {cut}"  # no torn file, no temporary left behind
        again = saver.read()
        assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)
    saver.save()  # uninterrupted, the new weights replace the old
    after = saver.read()
    assert any(not torch.equal(after[k], state[k]) for k in state)

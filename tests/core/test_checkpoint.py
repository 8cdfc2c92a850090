"""Weight files and checkpoints are written atomically: a save interrupted at any point leaves the
previous file readable and byte for byte as it was, at every place the project writes weights.
Weight files are safetensors; .pth files still load, the format told by content; a corrupt file
is a one-line ConfigError."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils import SkipReport
from emospoof.cm.training import CountermeasureTask, eval_dev_scores
from emospoof.core.checkpoint import (load_weights, read_state, save_checkpoint, save_weights, standalone_tensors,
                                      weights_file)
from emospoof.core.config import ConfigError
from emospoof.ser.classifiers import ACRNNClassifier, HFClassifier, load_classifier
from models import build_model
from models.emotion.acrnn import ACRNN
from tests.conftest import TINY_MODEL, safetensors_weights

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
                                       None, SkipReport(print), (0.5, 0.5))
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


class SERFolder:
    """An emotion classifier (ACRNN or Hugging Face) as train_ser.py keeps its best epoch."""

    def __init__(self, classifier: ACRNNClassifier | HFClassifier, folder: Path) -> None:
        self.classifier, self.folder = classifier, folder

    def save(self) -> None:
        self.classifier.save(self.folder)

    def change(self) -> None:
        changed(self.classifier.model)

    def read(self) -> dict:
        return load_classifier(self.folder).model.state_dict()


def acrnn_classifier() -> ACRNNClassifier:
    torch.manual_seed(0)
    return ACRNNClassifier(ACRNN((4, 8, 16, 8), 3), ("a", "b", "c"))


@pytest.mark.parametrize("writer", ["run weights", "training checkpoint", "ACRNN classifier", "HF classifier"])
def test_an_interrupted_save_leaves_the_previous_file_as_it_was(tmp_path, monkeypatch, tiny_ser_dir, writer):
    folder = tmp_path / "run"
    saver = {"run weights": lambda: RunWeights(folder), "training checkpoint": lambda: TrainingCheckpoint(folder),
             "ACRNN classifier": lambda: SERFolder(acrnn_classifier(), folder),
             "HF classifier": lambda: SERFolder(HFClassifier.load(tiny_ser_dir), folder)}[writer]()
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


# ---------------------------------------------------------------------------------------------
# Weight files are safetensors; .pth files of the reference code and older runs still load


def tiny_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return build_model(TINY_MODEL).state_dict()


def test_weights_are_written_as_safetensors_that_pickle_cannot_read(tmp_path):
    model = build_model(TINY_MODEL).to(memory_format=torch.channels_last)  # as main.py trains it
    state = model.state_dict()
    save_weights(state, tmp_path / "w.safetensors")
    stored = safetensors_weights(tmp_path / "w.safetensors")
    assert set(stored) == set(state) and all(torch.equal(stored[k], state[k]) for k in state)
    fresh = build_model(TINY_MODEL)
    load_weights(fresh, tmp_path / "w.safetensors", torch.device("cpu"))
    assert all(torch.equal(fresh.state_dict()[k], state[k]) for k in state)


def test_tied_tensors_are_stored_once_each():
    shared = torch.arange(6.0)
    tensors = standalone_tensors({"a": shared, "b": shared, "c": shared[:3], "d": torch.zeros(0), "e": torch.zeros(0)})
    pointers = [t.untyped_storage().data_ptr() for name, t in tensors.items() if name in "abc"]
    assert len(set(pointers)) == 3 and torch.equal(tensors["b"], shared) and torch.equal(tensors["c"], shared[:3])


@pytest.mark.parametrize("name", ["old.pth", "old.bin", "old.safetensors"])
def test_torch_save_files_still_load_whatever_their_name(tmp_path, name):
    """Weight files of the reference code and of runs before safetensors (torch.save, zip or the
    legacy format) load with weights_only; the format is read from the content, not the name."""
    state = tiny_state(1)
    torch.save(state, tmp_path / name)
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for path in (tmp_path / name, tmp_path / "legacy.pth"):
        model = build_model(TINY_MODEL)
        load_weights(model, path, torch.device("cpu"))
        assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    save_weights(state, tmp_path / "new.pth")  # a safetensors file under a .pth name loads as well
    assert set(read_state(tmp_path / "new.pth")) == set(state)


def test_a_run_folder_written_before_safetensors_still_loads(tmp_path):
    """``acrnn.pth`` of an older SER run; ``weights/final.pth`` of an older countermeasure run."""
    torch.manual_seed(0)
    net = ACRNN((4, 8, 16, 8), 3)
    torch.save(net.state_dict(), tmp_path / "acrnn.pth")
    (tmp_path / "labels.json").write_text('["a", "b", "c"]')
    loaded = load_classifier(tmp_path)
    assert isinstance(loaded, ACRNNClassifier) and loaded.labels == ("a", "b", "c")
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in net.state_dict().items())
    assert weights_file(tmp_path, "acrnn") == tmp_path / "acrnn.pth"
    save_weights(net.state_dict(), tmp_path / "acrnn.safetensors")
    assert weights_file(tmp_path, "acrnn") == tmp_path / "acrnn.safetensors"
    # main.py --eval of an older run's weights/final.pth still calibrates on the run's dev scores.
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "dev_scores.txt").write_text("LA_D_0 - bonafide 1.0\n")
    for name in ("final.pth", "final.safetensors"):
        assert eval_dev_scores([run / "weights" / name], None) == [run / "dev_scores.txt"]
    assert eval_dev_scores([run / "weights" / "best.safetensors"], None) == [None]


@pytest.mark.parametrize("damage", ["cut in the header", "cut in the tensors", "header length too large",
                                    "header not JSON", "empty"])
def test_a_corrupt_safetensors_file_is_a_one_line_config_error(tmp_path, damage):
    save_weights(tiny_state(), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    header = int.from_bytes(data[:8], "little")
    broken = {
        "cut in the header": data[:8 + header // 2],
        "cut in the tensors": data[:len(data) - 100],
        "header length too large": (len(data) * 2).to_bytes(8, "little") + data[8:],
        "header not JSON": data[:9] + b"\x00" * (header - 1) + data[8 + header:],
        "empty": b"",
    }[damage]
    path = tmp_path / "w.safetensors"
    path.write_bytes(broken)
    model = build_model(TINY_MODEL)
    with pytest.raises(ConfigError) as err:
        load_weights(model, path, torch.device("cpu"))
    message = str(err.value)
    assert str(path) in message and "not a loadable state dict" in message and "\n" not in message

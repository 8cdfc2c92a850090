"""The project's errors: one base class, ``emospoof.core.errors.InputError``, for problems with
what a user gave it. The entry points print those in one line and exit with code 2; every other
exception is a bug and keeps its traceback (a ValueError or KeyError included)."""
import subprocess
import sys

import pytest

import compare
import inference
import main as main_module
import train_ser
from data_utils import AudioError
from emospoof.core.config import ConfigError
from emospoof.core.errors import InputError, InputValueError
from emospoof.corpora.common import DatasetError
from emospoof.downloads.archives import CorruptArchiveError, UnsafeArchiveError
from emospoof.downloads.http import DownloadError
from emospoof.metrics.score_files import ScoreFileError
from models import build_model
from tests.conftest import REPO, TINY_MODEL


def test_the_projects_errors_share_one_base():
    for error in (ConfigError, DatasetError, ScoreFileError, AudioError, DownloadError, UnsafeArchiveError,
                  CorruptArchiveError, InputValueError):
        assert issubclass(error, InputError), error
    # ValueErrors before the base existed, and still: code that catches them as such still does.
    for error in (DatasetError, ScoreFileError, InputValueError):
        assert issubclass(error, ValueError), error


# (module, the recipe function its main() calls, arguments that reach it)
ENTRY_POINTS = [
    pytest.param(main_module, "run", ["--config", "any.conf"], id="main.py"),
    pytest.param(train_ser, "run", ["--config", "any.conf"], id="train_ser.py"),
    pytest.param(compare, "compare_runs", ["any_run_dir"], id="compare.py"),
    pytest.param(inference, "run", ["--config", "any.conf", "--test_dir", "any_dir"], id="inference.py"),
]


def exit_code(module, argv: list[str]) -> int | None:
    try:
        return module.main(argv)
    except SystemExit as stop:
        return stop.code


def fail_with(error: Exception):
    def recipe(*args, **kwargs):
        raise error
    return recipe


@pytest.mark.parametrize("module,recipe,argv", ENTRY_POINTS)
@pytest.mark.parametrize("error", [
    InputValueError("no training batch could be loaded (every file was skipped)"),
    DatasetError("protocol.txt", "expected 5 fields", 3),
    ConfigError("config key 'batch_size': expected a positive integer"),
    AudioError("clip.wav", "file not found"),
], ids=lambda error: type(error).__name__)
def test_an_input_error_is_one_line_and_exit_code_2(monkeypatch, capsys, module, recipe, argv, error):
    monkeypatch.setattr(module, recipe, fail_with(error))
    assert exit_code(module, argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {error}"]


@pytest.mark.parametrize("module,recipe,argv", ENTRY_POINTS)
@pytest.mark.parametrize("error", [ValueError("a shape mismatch in the code"), KeyError("encoder.0.weight"),
                                   TypeError("a bad call")], ids=lambda error: type(error).__name__)
def test_a_programming_error_keeps_its_traceback(monkeypatch, capsys, module, recipe, argv, error):
    monkeypatch.setattr(module, recipe, fail_with(error))
    with pytest.raises(type(error)) as raised:
        exit_code(module, argv)
    assert raised.value is error
    assert "error:" not in capsys.readouterr().err


def test_a_programming_error_in_a_process_prints_a_traceback_and_exits_with_1():
    """As a user sees it: main.py whose recipe has a bug that raises a ValueError."""
    script = ("import main, sys\n"
              "def run(args):\n"
              "    raise ValueError('operands could not be broadcast together')\n"
              "main.run = run\n"
              "main.main(['--config', 'any.conf'])\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "in run" in done.stderr
    assert done.stderr.splitlines()[-1] == "ValueError: operands could not be broadcast together"


def test_only_missing_model_config_keys_are_reported_as_config_keys(monkeypatch):
    incomplete = {key: value for key, value in TINY_MODEL.items() if key != "gat_dims"}
    with pytest.raises(ConfigError, match=r"^config is missing the required key 'model_config.gat_dims'$"):
        build_model(incomplete)
    import models.AASIST as aasist

    def constructor_with_a_bug(d_args):
        d_args["filts"], d_args.get("unknown", 0)  # present keys and defaults read as before
        return {"encoder.weight": None}["encoder.0.weight"]  # e.g. a state-dict key that is not there

    monkeypatch.setattr(aasist, "Model", constructor_with_a_bug)
    with pytest.raises(KeyError, match="encoder.0.weight"):
        build_model(TINY_MODEL)

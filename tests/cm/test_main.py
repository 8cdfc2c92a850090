"""main.py end to end on a tiny generated LA-layout dataset: start-up errors, training, resume, --eval."""
import csv
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import main as main_module
from data_utils import Batch, SkipReport
from tests.conftest import REPO, TINY_MODEL, make_config, run_script, safetensors_weights, stop_after_first_checkpoint


def run_cli(*args, cwd=REPO):
    """main.py in a fresh interpreter (about 3 s of CPU for the imports): only for what a process
    shows; ``run_main(main_module.main, ...)`` runs it in this process for what it prints and writes."""
    return run_script("main.py", *args, cwd=cwd)


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c.update(batch_sise=4), "unknown config key 'batch_sise' (did you mean 'batch_size'?)"),
    (lambda c: c["model_config"].update(gat_dim=[1]), "unknown config key 'model_config.gat_dim'"),
    (lambda c: c["optim_config"].update(base_rl=1), "unknown config key 'optim_config.base_rl'"),
    (lambda c: c["model_config"].update(architecture="AASISTT"), "unknown architecture 'AASISTT'"),
    (lambda c: c.update(database_path="/nonexistent/LA"), "/nonexistent/LA"),
    (lambda c: c.pop("batch_size"), "missing the required key 'batch_size'"),
    (lambda c: c.update(eval_all_best="maybe"), "'eval_all_best'"),
    # Accepted keys must do something: values the framework cannot honour yet are refused.
    (lambda c: c.update(loss="focal"), "config key 'loss': 'focal' is not supported"),
    (lambda c: c.update(track="DF"), "config key 'track': 'DF' is judged on ASVspoof 2021 DF eval"),
    (lambda c: c.update(track="PA"), "config key 'track': 'PA' is not a track (available: LA, DF, ASVspoof5)"),
    (lambda c: c.update(eval_datasets=[{"format": "in_the_wil", "path": "x"}]),
     "'eval_datasets[0].format': unknown dataset format 'in_the_wil' (did you mean 'in_the_wild'?)"),
    (lambda c: c.update(eval_datasets=[{"format": "asvspoof5", "path": "x", "split": "eval", "subset": "eval"}]),
     "unknown config key 'eval_datasets[0].subset'"),
    (lambda c: c.update(train_dataset={"format": "asvspoof5", "path": "x"}),
     "'train_dataset.split': format asvspoof5 needs one of train, dev, eval"),
    (lambda c: c.update(eval_datasets=[{"format": "in_the_wild", "path": "/nonexistent/itw"}]),
     "'eval_datasets[0].path': not found: /nonexistent/itw"),
    (lambda c: c.update(emotion_labels="/nonexistent/meta.tsv"), "config key 'emotion_labels': file not found"),
    (lambda c: c.update(augmentation={"rawbost": {"algo": 5}}), "unknown config key 'augmentation.rawbost'"),
    (lambda c: c.update(augmentation={"rawboost": {"algo": 9}}), "config key 'augmentation.rawboost.algo'"),
    (lambda c: c.update(augmentation={"noise": {"dir": "/nonexistent/noise"}}),
     "config key 'augmentation.noise.dir': folder not found: /nonexistent/noise"),
    (lambda c: c.update(eval_condition={"mp3": {"codec": {"codecs": ["mp4"]}}}),
     "config key 'eval_condition.mp3.codec.codecs': unknown codec 'mp4'"),
])
def test_config_errors_are_one_line(tmp_path, tiny_la, capsys, mutate, expected):
    """In this process: a fresh interpreter per case cost about 3 s of imports, 19 times (57 s
    against 4 s, measured); test_eval_all_best_without_eval_data_is_one_line runs main.py as a
    process (one line on stderr, exit code 2 there too)."""
    config = json.loads(make_config(tmp_path, tiny_la).read_text())
    mutate(config)
    path = tmp_path / "bad.conf"
    path.write_text(json.dumps(config))
    with pytest.raises(SystemExit) as stop:
        main_module.main(["--config", str(path), "--output_dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], stderr


@pytest.mark.parametrize("arguments,expected", [
    (["--dev_scores", "d.txt"], "--dev_scores goes with --eval"),
    (["--eval_model_weights", "w.pth"], "--eval_model_weights goes with --eval"),
    (["--ablations"], "--ablations goes with --eval"),
    (["--threshold", "0"], "--threshold goes with --eval"),
    (["--eval", "--resume", "run"], "--resume continues training"),
    (["--seed", "-1"], "-1: a seed is a whole number"),
])
def test_options_that_need_another_are_refused(arguments, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        main_module.parse_args(["--config", "c.conf", *arguments])
    assert stop.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.conf")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    from emospoof.cm.config import load_config
    from emospoof.ser.config import load_ser_config
    (load_ser_config if path.name.startswith("SER_") else load_config)(path)


def test_train_then_resume_matches_uninterrupted_run(tmp_path, tiny_la, monkeypatch):
    config = make_config(tmp_path, tiny_la)
    main_module.main(["--config", str(config), "--output_dir", str(tmp_path / "full"), "--seed", "7"])
    full = next((tmp_path / "full").iterdir())
    rows = list(csv.DictReader(open(full / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(r["n_skipped"] == "1" for r in rows)  # the corrupt training file, reported not fatal
    assert "LA_T_9999999" in (full / "skipped_files.tsv").read_text()
    report = json.loads((full / "eval_report.json").read_text())
    assert report["la_eval"]["n_bonafide"] == 4 and report["la_eval"]["n_spoof"] == 4
    assert set(report["la_eval"]["per_attack"]) == {"A01", "A02"}
    assert len((full / "eval_scores.txt").read_text().splitlines()) == 8

    # Stop a second run after epoch 1's checkpoint, as a kill would, then resume it.
    stop_after_first_checkpoint(monkeypatch, main_module.main,
                                ["--config", str(config), "--output_dir", str(tmp_path / "split"), "--seed", "7"])
    split = next((tmp_path / "split").iterdir())
    assert torch.load(split / "checkpoint.pth", weights_only=True)["epoch"] == 1
    main_module.main(["--resume", str(split)])

    # The run's weight files are safetensors, which no pickle reader can run code from.
    assert sorted(path.name for path in (full / "weights").iterdir()) == [
        "best.safetensors", "final.safetensors", "swa.safetensors"]
    for name in ("final.safetensors", "best.safetensors", "swa.safetensors"):
        a = safetensors_weights(full / "weights" / name)
        b = safetensors_weights(split / "weights" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (full / "metrics.csv").read_text().count("\n") == (split / "metrics.csv").read_text().count("\n")
    assert (full / "eval_scores.txt").read_text() == (split / "eval_scores.txt").read_text()


def test_refuses_to_overwrite_a_run(tmp_path, tiny_la, run_main):
    config = make_config(tmp_path, tiny_la, num_epochs=1)
    assert run_main(main_module.main, "--config", str(config), "--output_dir", str(tmp_path / "o")).returncode == 0
    again = run_main(main_module.main, "--config", str(config), "--output_dir", str(tmp_path / "o"))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--resume" in lines[0], again.stderr


def test_eval_mode_writes_scores_and_report(tmp_path, tiny_la, run_main):
    from models import build_model
    weights = tmp_path / "w.pth"
    torch.save(build_model(TINY_MODEL).state_dict(), weights)
    config = make_config(tmp_path, tiny_la, model_path=str(weights), eval_mode="full")
    result = run_main(main_module.main, "--config", str(config), "--eval", "--output_dir", str(tmp_path / "ev"))
    assert result.returncode == 0, result.stderr
    assert "EER" in result.stdout and "A01" in result.stdout
    run_dir = next((tmp_path / "ev").iterdir())
    report = json.loads((run_dir / "eval_report.json").read_text())
    assert report["la_eval"]["min_tdcf"] is None and report["n_scored"] == 8
    lines = (run_dir / "eval_scores.txt").read_text().splitlines()
    assert all(len(line.split()) == 4 for line in lines)

    bad = make_config(tmp_path, tiny_la, "bad.conf", model_path=str(tmp_path / "missing.pth"))
    result = run_main(main_module.main, "--config", str(bad), "--eval", "--output_dir", str(tmp_path / "ev"))
    assert result.returncode == 2 and "missing.pth" in result.stderr

    torch.save({"unrelated": torch.zeros(1)}, weights)
    result = run_main(main_module.main, "--config", str(config), "--eval", "--output_dir", str(tmp_path / "ev"))
    assert result.returncode == 2 and "unexpected keys" in result.stderr


def test_eval_all_best_without_eval_data_is_one_line(tmp_path, tiny_la):
    """As a process (main.py's one kept: its ``if __name__ == "__main__"`` path, and an input error
    as the user sees it: exit code 2 from the process, one line on stderr, no traceback)."""
    shutil.rmtree(tiny_la / "ASVspoof2019_LA_eval")
    config = make_config(tmp_path, tiny_la, eval_all_best="True")
    result = run_cli("--config", str(config), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'eval_all_best'" in lines[0] and "ASVspoof2019_LA_eval" in lines[0], result.stderr


def test_resume_from_a_truncated_checkpoint_continues_from_the_previous_one(tmp_path, tiny_la, run_main):
    config = make_config(tmp_path, tiny_la)
    assert run_main(main_module.main, "--config", str(config), "--output_dir", str(tmp_path / "full")).returncode == 0
    full = next((tmp_path / "full").iterdir())
    assert run_main(main_module.main, "--config", str(config), "--output_dir", str(tmp_path / "torn")).returncode == 0
    torn = next((tmp_path / "torn").iterdir())
    assert torch.load(torn / "checkpoint.prev.pth", weights_only=True)["epoch"] == 1
    checkpoint = torn / "checkpoint.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # as a full disk or a kill mid-write would leave it

    result = run_main(main_module.main, "--resume", str(torn))
    assert result.returncode == 0, result.stderr
    warning = [line for line in (result.stdout + result.stderr).splitlines() if "corrupt" in line]
    assert len(warning) == 1 and str(checkpoint) in warning[0] and "checkpoint.prev.pth" in warning[0]
    # Epoch 2 was run again from epoch 1's checkpoint: the run ends as the uninterrupted one did.
    a = load_file(full / "weights/final.safetensors")
    b = load_file(torn / "weights/final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_a_truncated_only_checkpoint_is_one_line(tmp_path, tiny_la, run_main):
    config = make_config(tmp_path, tiny_la, num_epochs=1)
    assert run_main(main_module.main, "--config", str(config), "--output_dir", str(tmp_path / "o")).returncode == 0
    run_dir = next((tmp_path / "o").iterdir())
    (run_dir / "checkpoint.pth").write_bytes((run_dir / "checkpoint.pth").read_bytes()[:1000])
    result = run_main(main_module.main, "--resume", str(run_dir))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{run_dir / 'checkpoint.pth'} is corrupt" in lines[0], result.stderr


# ---------------------------------------------------------------------------------------------
# Model selection on ties


class Linear(nn.Module):
    """A countermeasure's interface around one linear layer: ``(embedding, logits)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x, Freq_aug=False):
        return x, self.fc(x)


class Epoch(list):
    """The batches of an epoch, iterated as fit iterates a loader (no sampler to set)."""

    sampler = None


def select_over(tmp_path, monkeypatch, dev: list[tuple[float, float | None]], resume: dict | None = None):
    """``engine.fit`` of a countermeasure task over ``len(dev)`` epochs (after ``resume``'s), whose
    dev scoring gives the (EER, min t-DCF) pairs of ``dev`` (min t-DCF None: no dev ASV scores).
    Returns the result, the task and the weights after each epoch."""
    from emospoof.cm import training as cm_training
    from emospoof.training.engine import fit

    figures = iter(dev)
    monkeypatch.setattr(cm_training, "score_trials", lambda *args, **kwargs: {})
    monkeypatch.setattr(cm_training, "metrics_for",
                        lambda trials, scores, asv: dict(zip(("eer", "min_tdcf"), next(figures))))
    torch.manual_seed(0)
    model = Linear()
    run_dir = tmp_path / "run"
    (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    task = cm_training.CountermeasureTask(model, {"swa": True}, torch.device("cpu"), run_dir, [], None, SkipReport(),
                                          (0.5, 0.5))
    after_epoch = []
    validate = task.validate
    monkeypatch.setattr(task, "validate", lambda epoch: after_epoch.append(
        {k: v.clone() for k, v in model.state_dict().items()}) or validate(epoch))
    batches = Epoch([Batch(torch.randn(4, 8, generator=torch.Generator().manual_seed(i)), torch.tensor([0, 1] * 2),
                           list("abcd"), [1] * 4, []) for i in range(2)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    start = resume["epoch"] if resume else 0
    result = fit(task, batches, optimizer, scheduler, run_dir=run_dir, epochs=start + len(dev), seed=0,
                 generator=torch.Generator(), device=torch.device("cpu"), skips=SkipReport(), resume=resume)
    return result, task, after_epoch


def best_weights_are(run_dir, weights: dict) -> bool:
    best = load_file(run_dir / "weights" / "best.safetensors")
    return all(torch.equal(best[key], value) for key, value in weights.items())


def test_equal_dev_eers_keep_the_first_epoch_and_average_it_once(tmp_path, monkeypatch):
    """With 130 dev trials equal EERs are common: a tie is no new best (no replaced best weights, no
    second SWA copy of the same level). Without dev ASV scores nothing breaks the tie."""
    result, task, after_epoch = select_over(tmp_path, monkeypatch, [(20.0, None), (20.0, None), (20.0, None)])
    assert [row["new_best"] for row in result.rows] == [1, 0, 0]
    assert not torch.equal(after_epoch[0]["fc.weight"], after_epoch[2]["fc.weight"])  # the model did move
    assert best_weights_are(task.run_dir, after_epoch[0])
    assert task.swa_model.n_averaged.item() == 1
    assert result.best == 20.0
    checkpoint = torch.load(task.run_dir / "checkpoint.pth", weights_only=True)
    assert checkpoint["best"] == 20.0 and checkpoint["best_tie_break"] is None


def test_a_tie_with_a_lower_dev_min_tdcf_replaces_the_best(tmp_path, monkeypatch):
    dev = [(20.0, 0.5), (20.0, 0.5), (20.0, 0.6), (20.0, 0.4), (25.0, 0.1)]
    result, task, after_epoch = select_over(tmp_path, monkeypatch, dev)
    assert [row["new_best"] for row in result.rows] == [1, 0, 0, 1, 0]
    assert best_weights_are(task.run_dir, after_epoch[3])
    assert task.swa_model.n_averaged.item() == 2
    checkpoint = torch.load(task.run_dir / "checkpoint.pth", weights_only=True)
    assert result.best == checkpoint["best"] == 20.0 and checkpoint["best_tie_break"] == 0.4


def test_resume_keeps_the_tie_break_and_reads_old_checkpoints(tmp_path, monkeypatch):
    select_over(tmp_path, monkeypatch, [(20.0, 0.5)])
    saved = tmp_path / "epoch1.pth"
    shutil.copyfile(tmp_path / "run" / "checkpoint.pth", saved)
    checkpoint = torch.load(saved, weights_only=True)
    assert checkpoint["best"] == 20.0 and checkpoint["best_tie_break"] == 0.5
    result, _, _ = select_over(tmp_path, monkeypatch, [(20.0, 0.5), (20.0, 0.4)], resume=checkpoint)
    assert [row["new_best"] for row in result.rows] == [1, 0, 1]
    # A checkpoint written before ties were broken: 'best' a float, no 'best_tie_break'.
    checkpoint = torch.load(saved, weights_only=True)
    del checkpoint["best_tie_break"]
    result, _, _ = select_over(tmp_path, monkeypatch, [(20.0, 0.4), (19.0, 0.9)], resume=checkpoint)
    assert [row["new_best"] for row in result.rows] == [1, 0, 1] and result.best == 19.0

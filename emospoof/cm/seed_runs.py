"""What ``compare.py`` runs: the missing seeds of each config trained by ``main.py`` (finished runs
reused, interrupted ones resumed), then the finished runs compared (``emospoof.reports.seed_comparison``).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emospoof.cm.config import load_config, run_name
from emospoof.cm.training import FINAL
from emospoof.core.checkpoint import weights_file
from emospoof.core.config import ConfigError
from emospoof.reports.html import write_comparison_html
from emospoof.reports.seed_comparison import compare, find_runs, group_runs, write_outputs


def missing_runs(configs: list[Path], seeds: int, output_dir: Path) -> tuple[list[Path], list[tuple[Path, list[str]]]]:
    """Run folders of every config and seed 1..``seeds``, and the ``main.py`` arguments of those
    still to train (``--resume`` where a checkpoint shows an interrupted run); finished runs are reused."""
    folders, todo = [], []
    for config_path in configs:
        config = load_config(config_path)
        for seed in range(1, seeds + 1):
            run_dir = output_dir / run_name(str(config_path), config, f"seed{seed}")
            folders.append(run_dir)
            if (run_dir / "eval_report.json").is_file() and weights_file(run_dir / "weights", FINAL).is_file():
                print(f"reusing {run_dir}", file=sys.stderr)
            elif (run_dir / "checkpoint.pth").is_file() or (run_dir / "checkpoint.prev.pth").is_file():
                todo.append((run_dir, ["--resume", str(run_dir)]))
            else:
                todo.append((run_dir, ["--config", str(config_path), "--seed", str(seed), "--comment", f"seed{seed}",
                                       "--output_dir", str(output_dir)]))
    return folders, todo


def child_environment(jobs: int) -> dict[str, str]:
    """The environment of each training: with several at once, the machine's cores shared among
    them (``OMP_NUM_THREADS``), unless the caller set a thread count already."""
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def train_one(command: list[str], env: dict[str, str], log: Path | None) -> int:
    """One ``main.py`` process; its output goes to ``log`` when given, else to the terminal."""
    repo = Path(__file__).resolve().parents[2]
    with open(log, "a") if log else contextlib.nullcontext() as out:
        return subprocess.run([sys.executable, str(repo / "main.py"), *command], env=env, stdout=out,
                              stderr=subprocess.STDOUT if out else None).returncode


def train_missing(configs: list[Path], seeds: int, output_dir: Path, extra_args: list[str],
                  jobs: int = 1) -> list[Path]:
    """Run folders of every config and seed 1..``seeds``: finished runs are reused, interrupted
    ones resumed, missing ones trained, each by ``main.py`` in its own process, ``jobs`` at a time
    (one at a time, its output is the terminal's; several, each writes ``output_dir/logs/<run>.log``).
    A failed run does not stop the others; the failures are reported together at the end."""
    folders, todo = missing_runs(configs, seeds, output_dir)
    env = child_environment(jobs)

    def train(item: tuple[Path, list[str]]) -> str | None:
        run_dir, command = item
        log = output_dir / "logs" / f"{run_dir.name}.log" if jobs > 1 else None
        if log:
            log.parent.mkdir(parents=True, exist_ok=True)
        print(f"training {run_dir}" + (f" (log {log})" if log else ""), file=sys.stderr)
        code = train_one(command + extra_args, env, log)
        print(f"{'failed' if code else 'finished'} {run_dir}", file=sys.stderr)
        return f"{run_dir} (exit code {code}{f', log {log}' if log else ''})" if code else None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        failed = [failure for failure in pool.map(train, todo) if failure]
    if failed:
        raise ConfigError(f"training failed: {'; '.join(failed)}; run the same command again to resume")
    return folders


def compare_runs(folders: list[Path], configs: list[Path] | None, seeds: int, runs_dir: Path, output_dir: Path,
                 n_boot: int, extra_args: list[str], jobs: int = 1) -> Path:
    """``compare.py``: train what ``configs`` x seeds still lacks, compare every run folder (the
    trained ones first, in config order), write the comparison to ``output_dir`` (``comparison.md``,
    ``.json``, ``.png`` and the self-contained ``report.html``); returns the Markdown table's path."""
    if configs:
        folders = train_missing(configs, seeds, runs_dir, extra_args, jobs) + list(folders)
    result = compare(group_runs(find_runs(folders)), n_boot)
    write_outputs(result, output_dir)
    write_comparison_html(result, output_dir / "report.html", output_dir / "comparison.png")
    return output_dir / "comparison.md"

"""What ``compare.py`` runs: the missing seeds of each config trained by ``main.py`` (finished runs
reused, interrupted ones resumed), then the finished runs compared (``emospoof.reports.seed_comparison``).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from emospoof.cm.config import load_config, run_name
from emospoof.cm.training import FINAL
from emospoof.core.checkpoint import weights_file
from emospoof.core.config import ConfigError
from emospoof.reports.html import write_comparison_html
from emospoof.reports.seed_comparison import compare, find_runs, group_runs, write_outputs


def train_missing(configs: list[Path], seeds: int, output_dir: Path, extra_args: list[str]) -> list[Path]:
    """Run folders of every config and seed 1..``seeds``: finished runs are reused, interrupted
    ones resumed, missing ones trained (each by ``main.py`` in its own process)."""
    repo = Path(__file__).resolve().parents[2]
    folders = []
    for config_path in configs:
        config = load_config(config_path)
        for seed in range(1, seeds + 1):
            run_dir = output_dir / run_name(str(config_path), config, f"seed{seed}")
            folders.append(run_dir)
            if (run_dir / "eval_report.json").is_file() and weights_file(run_dir / "weights", FINAL).is_file():
                print(f"reusing {run_dir}", file=sys.stderr)
                continue
            if (run_dir / "checkpoint.pth").is_file() or (run_dir / "checkpoint.prev.pth").is_file():
                command = ["--resume", str(run_dir)]
            else:
                command = ["--config", str(config_path), "--seed", str(seed), "--comment", f"seed{seed}",
                           "--output_dir", str(output_dir)]
            print(f"training {run_dir}", file=sys.stderr)
            done = subprocess.run([sys.executable, str(repo / "main.py"), *command, *extra_args])
            if done.returncode != 0:
                raise ConfigError(f"training {run_dir} failed (exit code {done.returncode}); run it again to resume")
    return folders


def compare_runs(folders: list[Path], configs: list[Path] | None, seeds: int, runs_dir: Path, output_dir: Path,
                 n_boot: int, extra_args: list[str]) -> Path:
    """``compare.py``: train what ``configs`` x seeds still lacks, compare every run folder (the
    trained ones first, in config order), write the comparison to ``output_dir`` (``comparison.md``,
    ``.json``, ``.png`` and the self-contained ``report.html``); returns the Markdown table's path."""
    if configs:
        folders = train_missing(configs, seeds, runs_dir, extra_args) + list(folders)
    result = compare(group_runs(find_runs(folders)), n_boot)
    write_outputs(result, output_dir)
    write_comparison_html(result, output_dir / "report.html", output_dir / "comparison.png")
    return output_dir / "comparison.md"

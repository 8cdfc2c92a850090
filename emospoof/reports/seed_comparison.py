"""Comparing countermeasures honestly: several seeds per model, the same trials, a paired test.

Finished run folders (``main.py`` output: ``config.conf``, ``eval_report.json`` and the score files
it names) are grouped by their config; the runs of a group are its seeds. Per group: mean and
standard deviation over seeds of the dev EER, the LA eval EER and min t-DCF, each emotion's EER,
the worst-emotion EER and the arousal gap (``emospoof.metrics.groups.arousal_gap``). Each group is compared with the
first (the baseline) by a paired bootstrap on the same trials: utterances are resampled with
replacement (bona fide and spoof separately), every run's EER is recomputed on the resample, and the
statistic is the difference of the two groups' seed-mean EERs (Efron & Tibshirani, "An Introduction
to the Bootstrap", 1993, ch. 16: bootstrap hypothesis tests; pooling the seeds this way follows the
recommendation of Bouthillier et al., "Accounting for variance in machine learning benchmarks",
MLSys 2021, to randomise over both data and seeds). The two-sided p-value is twice the share of
resamples on the far side of zero, with the usual +1 correction.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emospoof.core.config import ConfigError
from emospoof.metrics.groups import arousal_gap, emotion_cells, worst_emotion
from emospoof.metrics.paired import PairedScores, paired_bootstrap, paired_scores
from emospoof.reports.plots import plot_comparison

SEED_SUFFIX = re.compile(r"_seed\d+$")
SETS = {"la_eval": "LA eval", "emotional_set": "emotional set"}


@dataclass
class Run:
    path: Path
    config: dict
    report: dict
    seed: int | None

    @property
    def label(self) -> str:
        return SEED_SUFFIX.sub("", self.path.name)

    def score_file(self, which: str) -> Path | None:
        """The per-trial scores of ``la_eval`` (named at the report's top level) or ``emotional_set``.
        The report names the file as the run saw it (often relative to where it was started); a run
        folder that was moved, or read from elsewhere, still has the file beside its report."""
        if which not in self.report:
            return None
        name = self.report.get("score_file") if which == "la_eval" else self.report[which].get("score_file")
        if not name:
            return None
        path = Path(name)
        if not path.is_file():
            path = self.path / path.name
            if not path.is_file():
                raise ConfigError(f"{self.path}: the score file its report names is missing: {name}")
        return path

    def metrics(self) -> dict[str, float]:
        """The figures compared across seeds (absent ones left out)."""
        found: dict[str, float] = {}
        training = self.report.get("training", {})
        dev = training.get("swa_dev_eer") if training.get("final") == "swa.pth" else training.get("best_epoch_dev_eer")
        if dev is not None:
            found["dev EER"] = dev
        la = self.report.get("la_eval", {})
        if la.get("eer") is not None:
            found["LA eval EER"] = la["eer"]
        if la.get("min_tdcf") is not None:
            found["LA eval min t-DCF"] = la["min_tdcf"]
        for which, title in SETS.items():
            per_emotion = emotion_cells(self.report.get(which, {}))
            if which == "emotional_set" and self.report.get(which, {}).get("pooled", {}).get("eer") is not None:
                found[f"{title} EER"] = self.report[which]["pooled"]["eer"]
            for emotion, eer in per_emotion.items():
                found[f"{title} EER {emotion}"] = eer
            if per_emotion:
                found[f"{title} worst-emotion EER"] = worst_emotion(per_emotion)[1]
                gap = arousal_gap(per_emotion)
                if gap is not None:
                    found[f"{title} arousal gap"] = gap
        return found


def read_run(path: Path) -> Run:
    """A finished run folder; anything missing is a ConfigError naming the folder."""
    report_path = path / "eval_report.json"
    if not report_path.is_file() or not (path / "config.conf").is_file():
        raise ConfigError(f"{path}: not a finished run (needs config.conf and eval_report.json)")
    report, config = (_read_json(file) for file in (report_path, path / "config.conf"))
    return Run(path, config, report, report.get("training", {}).get("seed"))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: invalid JSON ({err})") from None


def find_runs(paths: list[Path]) -> list[Run]:
    """Run folders, given directly or as folders of run folders (one level), in the order given;
    a folder reached twice counts once."""
    runs: list[Run] = []
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"{path}: folder not found")
        if (path / "eval_report.json").is_file():
            runs.append(read_run(path))
        else:
            inner = sorted(p for p in path.iterdir() if (p / "eval_report.json").is_file())
            if not inner:
                raise ConfigError(f"{path}: no finished run in it (no eval_report.json)")
            runs += [read_run(p) for p in inner]
    unique: dict[Path, Run] = {}
    for run in runs:
        unique.setdefault(run.path.resolve(), run)
    return list(unique.values())


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs with the same config are seeds of one model; groups keep the order of first appearance."""
    by_config: dict[str, list[Run]] = {}
    for run in runs:
        by_config.setdefault(json.dumps(run.config, sort_keys=True), []).append(run)
    groups: dict[str, list[Run]] = {}
    for members in by_config.values():
        label = members[0].label
        while label in groups:
            label += "'"
        groups[label] = members
    return groups


def summarise(runs: list[Run]) -> dict[str, dict]:
    """Mean, standard deviation (ddof 1; 0 for one seed) and count of every figure over seeds."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.metrics().items():
            values.setdefault(name, []).append(value)
    return {name: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
            for name, v in values.items()}


def compare(groups: dict[str, list[Run]], n_boot: int = 1000) -> dict:
    """Summary of every group and, for each group after the first, its paired tests against the first."""
    labels = list(groups)
    result = {"baseline": labels[0], "models": {}}
    for label, runs in groups.items():
        entry = {"runs": [str(run.path) for run in runs], "seeds": [run.seed for run in runs],
                 "summary": summarise(runs), "paired_vs_baseline": {}}
        if label != labels[0]:
            for which, title in SETS.items():
                base_files = [run.score_file(which) for run in groups[labels[0]]]
                files = [run.score_file(which) for run in runs]
                if None in base_files or None in files:
                    continue
                both = paired_scores(base_files + files)
                split = len(base_files)
                base = PairedScores(both.scores[:split], both.is_bonafide, both.utt_ids)
                model = PairedScores(both.scores[split:], both.is_bonafide, both.utt_ids)
                entry["paired_vs_baseline"][title] = paired_bootstrap(base, model, n_boot)
        result["models"][label] = entry
    return result


def _cell(summary: dict, name: str, digits: int) -> str:
    if name not in summary:
        return "–"
    stats = summary[name]
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"


def format_markdown(result: dict) -> str:
    """comparison.md: one table of figures (mean ± sd over seeds), one of paired tests."""
    models = result["models"]
    names = list(dict.fromkeys(name for entry in models.values() for name in entry["summary"]))
    lines = ["# Comparison", "", f"Baseline: {result['baseline']}. Figures are mean ± sd over seeds (EERs in %, "
             "min t-DCF unitless, arousal gap in percentage points: high- minus low-arousal mean EER).", "",
             "| model | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, entry in models.items():
        cells = [_cell(entry["summary"], name, 4 if "t-DCF" in name else 2) for name in names]
        lines.append(f"| {label} | {len(entry['runs'])} | " + " | ".join(cells) + " |")
    lines += ["", "Paired bootstrap against the baseline on the same trials (difference of seed-mean EERs, "
              "model minus baseline):", "", "| model | set | difference (points) | 95 % interval | p | trials |",
              "|---|---|---|---|---|---|"]
    for label, entry in models.items():
        for title, test in entry["paired_vs_baseline"].items():
            lines.append(f"| {label} | {title} | {test['difference']:+.2f} | [{test['ci95'][0]:+.2f}, "
                         f"{test['ci95'][1]:+.2f}] | {test['p_value']:.3g} | {test['n_bonafide']} + {test['n_spoof']} |")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "comparison.json").write_text(json.dumps(result, indent=2))
    (output_dir / "comparison.md").write_text(format_markdown(result))
    plot_comparison(result, output_dir / "comparison.png")

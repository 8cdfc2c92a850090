"""Comparing countermeasures honestly: several seeds per model, the same trials, paired tests.

Finished run folders (``main.py`` output: ``config.conf``, ``eval_report.json`` and the score files
it names) are grouped by their config; the runs of a group are its seeds. Per group, the mean and
standard deviation over seeds of: the dev EER; for every evaluated set its EER, min t-DCF, EER per
emotion, worst-emotion EER and arousal gap (``emospoof.metrics.groups``), and, at each run's fixed
threshold (its dev EER threshold, ``emospoof.metrics.operating_point``), the FRR and FAR, the FRR per
emotion and the high- to low-arousal FRR ratio. Genuine-speech sets have the FRR figures only.

Each group is compared with the first (the baseline) on the same trials by the two-level paired
bootstrap of ``emospoof.metrics.paired`` (seeds, then trials): the EER of every set with both
classes, and the FRR at the fixed threshold over all bona fide trials and over the high-arousal
ones of every set with bona fide trials. Per model and set, the high- minus low-arousal FRR at the
fixed threshold gets the same two-level interval: does the model reject aroused genuine speech
more often, counting its seeds and the trials?
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emospoof.core.config import ConfigError
from emospoof.metrics.groups import arousal_gap, emotion_cells, worst_emotion
from emospoof.metrics.paired import frr_gap_interval, paired_bootstrap, paired_scores
from emospoof.metrics.score_files import read_trial_groups
from emospoof.reports.plots import plot_comparison

SEED_SUFFIX = re.compile(r"_seed\d+$")
TITLES = {"la_eval": "LA eval", "emotional_set": "emotional set"}


def title_of(name: str) -> str:
    return TITLES.get(name, name)


@dataclass
class Run:
    path: Path
    config: dict
    report: dict
    seed: int | None

    @property
    def system(self) -> str:
        """What the report is of beyond the run itself, e.g. 'emotion calibration' for a run's
        emotion-calibrated system (``<run>/emotion_calibrated/``); '' for the run."""
        return self.report.get("system", "")

    @property
    def label(self) -> str:
        if self.system:
            return f"{SEED_SUFFIX.sub('', self.path.parent.name)} + {self.system}"
        return SEED_SUFFIX.sub("", self.path.name)

    @property
    def sets(self) -> dict[str, dict]:
        """The report of every evaluated set that has one (sets without metrics left out)."""
        return {name: r for name, r in self.report.get("datasets", {}).items() if "error" not in r}

    def found(self, name: str) -> Path:
        """A file the report names: beside the report first (the run writes its files there, and a
        moved run folder keeps them), else the path as the run saw it (relative to where it was
        started), which from another folder could name some other run's file."""
        for path in (self.path / Path(name).name, Path(name)):
            if path.is_file():
                return path
        raise ConfigError(f"{self.path}: a file its report names is missing: {name}")

    def score_file(self, which: str) -> Path | None:
        """The per-trial scores of set ``which``."""
        name = self.sets.get(which, {}).get("score_file")
        return self.found(name) if name else None

    def groups_file(self, which: str) -> Path | None:
        """The emotion, arousal group and speaker of each trial of set ``which``, when written."""
        name = self.sets.get(which, {}).get("groups_file")
        return self.found(name) if name else None

    def threshold(self, which: str) -> float | None:
        """The fixed threshold the set was reported at (the run's dev EER threshold by default)."""
        fixed = self.sets.get(which, {}).get("operating_points", {}).get("fixed")
        return fixed["threshold"] if fixed else None

    def metrics(self) -> dict[str, float]:
        """The figures compared across seeds (absent ones left out)."""
        found: dict[str, float] = {}
        training = self.report.get("training", {})
        chose_swa = Path(training.get("final", "")).stem == "swa"  # swa.safetensors, or swa.pth in older runs
        dev = training.get("swa_dev_eer") if chose_swa else training.get("best_epoch_dev_eer")
        if dev is not None:
            found["dev EER"] = dev
        for name, report in self.sets.items():
            title = title_of(name)
            if report.get("eer") is not None:
                found[f"{title} EER"] = report["eer"]
            if report.get("min_tdcf") is not None:
                found[f"{title} min t-DCF"] = report["min_tdcf"]
            per_emotion = emotion_cells(report)
            for emotion, eer in per_emotion.items():
                found[f"{title} EER {emotion}"] = eer
            if per_emotion:
                found[f"{title} worst-emotion EER"] = worst_emotion(per_emotion)[1]
                if (gap := arousal_gap(per_emotion)) is not None:
                    found[f"{title} arousal EER gap"] = gap
            found.update(_threshold_figures(title, report.get("operating_points", {}).get("fixed")))
        return found


def _threshold_figures(title: str, point: dict | None) -> dict[str, float]:
    """FRR, FAR, FRR per emotion and the arousal FRR ratio and gap at the fixed threshold."""
    if point is None:
        return {}
    found = {}
    for rate in ("frr", "far"):
        if point["pooled"][rate] is not None:
            found[f"{title} {rate.upper()}@thr"] = point["pooled"][rate]["rate"]
    for emotion, cells in point["groups"].get("emotion", {}).items():
        if cells["frr"] is not None:
            found[f"{title} FRR@thr {emotion}"] = cells["frr"]["rate"]
    arousal = point.get("arousal_frr") or {}
    if arousal.get("ratio") is not None:
        found[f"{title} arousal FRR ratio"] = arousal["ratio"]
    if arousal.get("gap_points") is not None:
        found[f"{title} arousal FRR gap"] = arousal["gap_points"]
    return found


def read_run(path: Path) -> Run:
    """A finished run folder; anything missing is a ConfigError naming the folder."""
    report_path = path / "eval_report.json"
    if not report_path.is_file() or not (path / "config.conf").is_file():
        raise ConfigError(f"{path}: not a finished run (needs config.conf and eval_report.json)")
    if unfinished_training(path):
        raise ConfigError(f"{path}: training not finished (no weights/final.*; its eval_report.json is of an "
                          "epoch's best model, from eval_all_best)")
    report, config = (read_json(file) for file in (report_path, path / "config.conf"))
    return Run(path, config, report, report.get("training", {}).get("seed"))


def unfinished_training(path: Path) -> bool:
    """A training run still going (or stopped): it has a weights folder but no final weights.
    (An evaluation-only folder of ``main.py --eval`` has no weights folder.)"""
    weights = path / "weights"
    return weights.is_dir() and not any(weights.glob("final.*"))


def read_json(path: Path) -> dict:
    """A JSON file a run wrote; invalid JSON is a ConfigError naming the file."""
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
            for going in [p for p in inner if unfinished_training(p)]:
                print(f"note: {going}: training not finished; left out", file=sys.stderr)
                inner.remove(going)
            if not inner:
                raise ConfigError(f"{path}: no finished run in it (no eval_report.json beside final weights)")
            runs += [read_run(p) for p in inner]
    unique: dict[Path, Run] = {}
    for run in runs:
        unique.setdefault(run.path.resolve(), run)
    return list(unique.values())


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs with the same config and system are seeds of one model (a run and its emotion-calibrated
    system share a config but are two systems); groups keep the order of first appearance."""
    by_config: dict[str, list[Run]] = {}
    for run in runs:
        by_config.setdefault(json.dumps([run.config, run.system], sort_keys=True), []).append(run)
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


def arousal_groups(run: Run, which: str, utt_ids: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Masks of the high- and low-arousal trials of a set, from its trial groups file."""
    path = run.groups_file(which)
    if path is None:
        return None
    groups = read_trial_groups(path)
    arousal = [groups.get(utt, {}).get("arousal") for utt in utt_ids]
    return np.array([a == "high" for a in arousal]), np.array([a == "low" for a in arousal])


def arousal_gap_of(runs: list[Run], which: str, n_boot: int) -> dict | None:
    """A model's high- minus low-arousal FRR on a set at its runs' thresholds, seeds and trials counted."""
    files = [run.score_file(which) for run in runs]
    thresholds = [run.threshold(which) for run in runs]
    if None in files or None in thresholds:
        return None
    scores = paired_scores(files, thresholds)
    masks = arousal_groups(runs[0], which, scores.utt_ids)
    if masks is None or not (masks[0] & scores.is_bonafide).any() or not (masks[1] & scores.is_bonafide).any():
        return None
    return frr_gap_interval(scores, *masks, n_boot=n_boot)


def paired_tests(baseline: list[Run], model: list[Run], which: str, n_boot: int) -> dict[str, dict]:
    """The paired tests of one set: EER, FRR at the fixed threshold, FRR of the high-arousal bona fide."""
    runs = baseline + model
    files = [run.score_file(which) for run in runs]
    if None in files:
        return {}
    thresholds = [run.threshold(which) for run in runs]
    both = paired_scores(files, None if None in thresholds else thresholds)
    split = slice(0, len(baseline)), slice(len(baseline), len(runs))
    base, other = both.select(split[0]), both.select(split[1])
    tests = {}
    if both.is_bonafide.any() and not both.is_bonafide.all():
        tests["EER"] = paired_bootstrap(base, other, "eer", n_boot=n_boot)
    if both.thresholds is not None and both.is_bonafide.any():
        tests["FRR@thr"] = paired_bootstrap(base, other, "frr", n_boot=n_boot)
        masks = arousal_groups(runs[0], which, both.utt_ids)
        if masks is not None and (masks[0] & both.is_bonafide).any():
            tests["FRR@thr high arousal"] = paired_bootstrap(base, other, "frr", subset=masks[0], n_boot=n_boot)
    return tests


def compare(groups: dict[str, list[Run]], n_boot: int = 1000) -> dict:
    """Summary of every group and, for each group after the first, its paired tests against the first."""
    labels = list(groups)
    baseline = groups[labels[0]]
    sets = dict.fromkeys(title_of(name) for runs in groups.values() for run in runs for name in run.sets)
    result = {"baseline": labels[0], "sets": list(sets), "models": {}}
    for label, runs in groups.items():
        entry = {"runs": [str(run.path) for run in runs], "seeds": [run.seed for run in runs],
                 "summary": summarise(runs), "paired_vs_baseline": {}, "arousal_frr_gap": {}}
        for which in dict.fromkeys(name for run in runs for name in run.sets):
            if all(which in run.sets for run in runs) and (gap := arousal_gap_of(runs, which, n_boot)):
                entry["arousal_frr_gap"][title_of(which)] = gap
        if label != labels[0]:
            common = [name for name in baseline[0].sets if all(name in run.sets for run in baseline + runs)]
            for which in common:
                for statistic, test in paired_tests(baseline, runs, which, n_boot).items():
                    entry["paired_vs_baseline"][f"{title_of(which)}: {statistic}"] = test
        result["models"][label] = entry
    return result


def summary_cell(summary: dict, name: str, n_runs: int) -> str | None:
    """'mean ± sd' of a figure over seeds (t-DCF with four decimals, the rest two), with the number
    of seeds when fewer than the model's runs define it (e.g. a per-emotion FRR a seed could not
    compute); None when no seed has it."""
    if name not in summary:
        return None
    stats = summary[name]
    digits = 4 if "t-DCF" in name else 2
    text = f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"
    return text if stats["n"] == n_runs else f"{text} (n={stats['n']})"


def figure_tables(result: dict) -> dict[str, list[str]]:
    """The figures' names by what they are about: dev, then each set (the longest set title a
    figure's name starts with)."""
    names = list(dict.fromkeys(name for entry in result["models"].values() for name in entry["summary"]))
    titles = sorted(result["sets"], key=len, reverse=True)
    tables: dict[str, list[str]] = {}
    for name in names:
        topic = next((title for title in titles if name.startswith(title + " ")), "dev")
        tables.setdefault(topic, []).append(name)
    return tables


GAP_HEADER = ["model", "set", "gap (points)", "95 % interval (seeds, then trials)", "share <= 0", "seeds",
              "bona fide high + low"]
TEST_HEADER = ["model", "set: figure", "difference (points)", "95 % interval", "p", "seeds", "trials"]


def _interval(bounds: list[float]) -> str:
    return f"[{bounds[0]:+.2f}, {bounds[1]:+.2f}]"


def gap_rows(result: dict) -> list[list[str]]:
    """The arousal FRR gap of every model and set, as table rows (GAP_HEADER)."""
    return [[label, title, f"{gap['gap']:+.2f}", _interval(gap["ci95"]), f"{gap['share_at_or_below_zero']:.3f}",
             str(gap["n_seeds"]), f"{gap['n_first']} + {gap['n_second']}"]
            for label, entry in result["models"].items() for title, gap in entry["arousal_frr_gap"].items()]


def test_rows(result: dict) -> list[list[str]]:
    """Every paired test against the baseline, as table rows (TEST_HEADER)."""
    return [[label, title, f"{test['difference']:+.2f}", _interval(test["ci95"]), f"{test['p_value']:.3g}",
             f"{test['n_seeds'][0]} vs {test['n_seeds'][1]}",
             f"{test['n_bonafide']} bona fide" if test["statistic"] == "frr"
             else f"{test['n_bonafide']} + {test['n_spoof']}"]
            for label, entry in result["models"].items() for title, test in entry["paired_vs_baseline"].items()]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |"
                                                                           for row in rows]


def format_markdown(result: dict) -> str:
    """comparison.md: per set, a table of figures (mean ± sd over seeds); then the paired tests."""
    models = result["models"]
    lines = ["# Comparison", "", f"Baseline: {result['baseline']}. Figures are mean ± sd over seeds: EERs, FRR "
             "(bona fide rejected) and FAR (spoofs accepted) in %, FRR and FAR at each run's fixed threshold "
             "(@thr: its dev EER threshold unless another was given), min t-DCF unitless, gaps in percentage "
             "points (high- minus low-arousal), the arousal FRR ratio high over low; (n=k): only k of the model's "
             "seeds define the figure."]
    for topic, names in figure_tables(result).items():
        short = [name[len(topic):].strip() if topic != "dev" else name for name in names]
        rows = [[label, str(len(entry["runs"]))] + [summary_cell(entry["summary"], name, len(entry["runs"])) or "–"
                                                    for name in names] for label, entry in models.items()]
        lines += ["", f"## {topic}", "", *markdown_table(["model", "seeds", *short], rows)]
    lines += ["", "## Arousal FRR gap", "", "Each model's seed-mean FRR of high-arousal minus low-arousal bona fide "
              "trials at each run's fixed threshold (points), with its two-level bootstrap 95 % interval and the "
              "share of replicates at or below zero:", "", *markdown_table(GAP_HEADER, gap_rows(result))]
    lines += ["", "## Paired tests against the baseline", "",
              "Difference of seed means, model minus baseline, with its two-level bootstrap 95 % interval "
              "(seeds, then trials):", "", *markdown_table(TEST_HEADER, test_rows(result))]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "comparison.json").write_text(json.dumps(result, indent=2))
    (output_dir / "comparison.md").write_text(format_markdown(result))
    plot_comparison(result, output_dir / "comparison.png")

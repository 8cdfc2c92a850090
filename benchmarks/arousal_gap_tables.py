"""Print the tables of docs/emotion.md#the-arousal-gap-on-the-devkit from a comparison.

    python benchmarks/arousal_gap_tables.py arousal_gap/comparison.json

Reads what ``benchmarks/arousal_gap.sh`` (``compare.py``) wrote, and the baseline's run folders it
names, and prints in Markdown: the baseline's FRR and FAR per emotion pooled over its seeds (FRR
with its counts), the
rows' figures (mean ± sd over seeds), the paired tests against the baseline and each row's
high- minus low-arousal FRR. A figure a row lacks prints as '–'.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emospoof.reports.seed_comparison import markdown_table, read_json  # noqa: E402

ROWS = {  # config name -> the row's name in the docs
    "AASIST-L_devkit": "AASIST-L",
    "AASIST_FiLM_utterance_devkit": "emotion per utterance",
    "AASIST_FiLM_learnable_devkit": "emotion parts that learn",
    "AASIST-L_group_robust_devkit": "group-robust",
    "AASIST-L_prosody_devkit": "prosody",
    "AASIST-L_silence_devkit": "silence",
    "AASIST-L_emocal_devkit": "emotion calibration",
    "AASIST-L_combined_devkit": "combination",
}
TRIMMED, RECORDED, LA, DSES = "ravdess_11_12_trimmed", "ravdess_11_12", "LA eval", "emotional set"
FIGURES = [("LA eval EER", f"{LA} EER"), ("LA min t-DCF", f"{LA} min t-DCF"), ("LA FAR", f"{LA} FAR@thr"),
           ("LA FRR", f"{LA} FRR@thr"), ("DSES EER", f"{DSES} EER"), ("DSES FAR", f"{DSES} FAR@thr"),
           ("RAVDESS trimmed FRR", f"{TRIMMED} FRR@thr"), ("trimmed high − low FRR", f"{TRIMMED} arousal FRR gap"),
           ("RAVDESS as recorded FRR", f"{RECORDED} FRR@thr")]
TESTS = [("LA eval EER", f"{LA}: EER"), ("LA eval FRR, high arousal", f"{LA}: FRR@thr high arousal"),
         ("RAVDESS trimmed FRR, high arousal", f"{TRIMMED}: FRR@thr high arousal"),
         ("RAVDESS trimmed FRR", f"{TRIMMED}: FRR@thr"), ("RAVDESS as recorded FRR", f"{RECORDED}: FRR@thr"),
         ("DSES EER", f"{DSES}: EER")]
GAPS = [("RAVDESS trimmed", TRIMMED), ("LA eval", LA), ("DSES", DSES), ("RAVDESS as recorded", RECORDED)]
EMOTIONS = ["angry", "happy", "fearful", "surprised", "disgust", "neutral", "calm", "sad"]
SETS = [("RAVDESS 11–12 trimmed", "ravdess_11_12_trimmed"), ("RAVDESS 11–12 as recorded", "ravdess_11_12"),
        ("LA eval", "la_eval"), ("DSES", "emotional_set")]


def row_name(label: str) -> str:
    """The docs' name of a comparison's model label (``LA_<config>_ep4_bs16``), else the label."""
    return next((name for config, name in ROWS.items() if f"_{config}_ep" in f"_{label}"), label)


def signed(value: float, digits: int = 1) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def plain(value: float, digits: int) -> str:
    return f"{value:.{digits}f}".replace("-", "−")


def figure_cell(summary: dict, name: str) -> str:
    if name not in summary:
        return "–"
    stats, digits = summary[name], 3 if "t-DCF" in name else 1
    text = plain(stats["mean"], digits)
    return text if stats["n"] == 1 else f"{text} ± {plain(stats['sd'], digits)}"


def interval_cell(value: float, bounds: list[float]) -> str:
    text = f"{signed(value)} [{signed(bounds[0])}, {signed(bounds[1])}]"
    return f"**{text}**" if bounds[0] > 0 or bounds[1] < 0 else text


def pooled_counts(run_folders: list[str], dataset: str) -> dict[str, dict[str, list[int]]]:
    """Errors and trials per emotion and arousal group at each run's fixed threshold, summed over
    the runs: {'frr' | 'far': {group: [errors, n]}}."""
    totals: dict[str, dict[str, list[int]]] = {"frr": {}, "far": {}}
    for folder in run_folders:
        point = read_json(Path(folder) / "eval_report.json")["datasets"].get(dataset, {}).get(
            "operating_points", {}).get("fixed")
        if point is None:
            continue
        groups = {**point["groups"].get("emotion", {}), **point["groups"].get("arousal", {})}
        for group, cells in groups.items():
            for rate in ("frr", "far"):
                if cells.get(rate):
                    count = totals[rate].setdefault(group, [0, 0])
                    count[0] += cells[rate]["errors"]
                    count[1] += cells[rate]["n"]
    return totals


def count_cell(count: list[int] | None, with_counts: bool) -> str:
    if not count or count[1] == 0:
        return ""
    rate = plain(100 * count[0] / count[1], 1)
    return f"{rate} ({count[0]}/{count[1]})" if with_counts else rate


def baseline_table(result: dict) -> list[str]:
    runs = result["models"][result["baseline"]]["runs"]
    rows = []
    for title, dataset in SETS:
        totals = pooled_counts(runs, dataset)
        for rate in ("frr", "far"):
            if not totals[rate]:
                continue
            cells = [count_cell(totals[rate].get(emotion), rate == "frr") for emotion in EMOTIONS]
            cells += [count_cell(totals[rate].get(group), True) for group in ("high", "low")]
            rows.append([f"{title}, {rate.upper()}", *cells])
    return markdown_table(["set", *EMOTIONS, "high arousal", "low arousal"], rows)


def tables(result: dict) -> str:
    models = result["models"]
    figures = [[row_name(label), str(len(entry["runs"])), *(figure_cell(entry["summary"], name) for _, name in FIGURES)]
               for label, entry in models.items()]
    tests = [[row_name(label), str(len(entry["runs"])),
              *(interval_cell(test["difference"], test["ci95"]) if (test := entry["paired_vs_baseline"].get(name))
                else "–" for _, name in TESTS)]
             for label, entry in models.items() if label != result["baseline"]]
    gaps = [[row_name(label), *(interval_cell(gap["gap"], gap["ci95"]) if (gap := entry["arousal_frr_gap"].get(name))
                                else "–" for _, name in GAPS)]
            for label, entry in models.items()]
    parts = [f"Baseline ({row_name(result['baseline'])}, {len(models[result['baseline']]['runs'])} seeds), counts "
             "pooled over its seeds, % at each run's fixed threshold:", "", *baseline_table(result), "",
             "Mean ± sd over seeds:", "", *markdown_table(["row", "seeds", *(h for h, _ in FIGURES)], figures), "",
             "Paired tests against the baseline (model minus baseline, points, two-level 95 % interval; "
             "bold: excludes zero):", "", *markdown_table(["row", "seeds", *(h for h, _ in TESTS)], tests), "",
             "High- minus low-arousal FRR (points, two-level 95 % interval):", "",
             *markdown_table(["row", *(h for h, _ in GAPS)], gaps)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparison", type=Path, help="comparison.json of compare.py")
    args = parser.parse_args(argv)
    if not args.comparison.is_file():
        print(f"error: {args.comparison}: no such file", file=sys.stderr)
        return 2
    print(tables(json.loads(args.comparison.read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

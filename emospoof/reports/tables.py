"""Printed tables: the metrics of a set, the per-emotion table of an emotional set, a set's
per-emotion cells, and the summary table across sets."""
from __future__ import annotations

from emospoof.metrics.asvspoof2019 import Metrics


def format_metrics(title: str, metrics: Metrics, digits: int = 3, tdcf_digits: int = 5) -> str:
    """EER (percent, ``digits`` decimals), min t-DCF, trial counts and the EER of each attack."""
    tdcf = ("n/a (needs ASV scores)" if metrics["min_tdcf"] is None
            else f"{metrics['min_tdcf']:.{tdcf_digits}f}")
    lines = [f"{title}: EER {metrics['eer']:.{digits}f} %   min t-DCF {tdcf}",
             f"  trials: {metrics['n_bonafide']} bona fide, {metrics['n_spoof']} spoof"]
    if metrics["per_attack"]:
        lines.append(f"  {'attack':<8} {'EER (%)':>{digits + 5}}")
        lines += [f"  {attack:<8} {eer:>{digits + 5}.{digits}f}" for attack, eer in metrics["per_attack"].items()]
    return "\n".join(lines)


def _format_cell(cell: dict) -> str:
    counts = f"{cell['n_bonafide']}+{cell['n_spoof']}"
    if cell["eer"] is None:
        return f"n/a ({counts})"
    low, high = cell["ci95"]
    return f"{cell['eer']:5.1f} [{low:4.1f},{high:5.1f}] ({counts})"


def format_emotion_table(report: dict) -> str:
    """Rows: emotions and 'all'; columns: all spoof systems, then each system. Each cell is
    'EER [95 % CI] (bona fide + spoof trials)', EERs in percent."""
    systems = list(report["per_system"])
    rows = [["emotion", "all systems", *systems]]
    for emotion, cell in report["per_emotion"].items():
        by_system = (_format_cell(report["per_system_emotion"][s][emotion]) for s in systems)
        rows.append([emotion, _format_cell(cell), *by_system])
    rows.append(["all", _format_cell(report["pooled"]), *(_format_cell(report["per_system"][s]) for s in systems)])
    return "\n".join(["EER % [bootstrap 95 % CI] (bona fide + spoof trials)", _text_table(rows)])


def format_emotion_cells(report: dict) -> str:
    """A set's per-emotion EERs as a table, with the worst emotion, the arousal gap and the
    unlabelled trials."""
    gap, worst, unlabelled = report["arousal_gap"], report["worst_emotion"], report["n_unlabelled"]
    rows = [["emotion", "EER % [95 % CI] (bona fide + spoof)"]]
    rows += [[emotion, _format_cell(cell)] for emotion, cell in report["per_emotion"].items()]
    return "\n".join([
        f"  per emotion: worst {worst['emotion'] if worst else 'n/a'}, arousal gap "
        f"{'n/a' if gap is None else f'{gap:+.1f} points'}, unlabelled {unlabelled['bonafide']}+{unlabelled['spoof']}",
        *("  " + line for line in _text_table(rows).splitlines()),
    ])


SUMMARY_COLUMNS = (("dataset", "{}"), ("bona fide", "{}"), ("spoof", "{}"), ("EER %", "{:.3f}"),
                   ("min t-DCF", "{:.4f}"), ("min DCF", "{:.4f}"), ("act DCF", "{:.4f}"), ("Cllr", "{:.4f}"),
                   ("act DCF cal.", "{:.4f}"), ("Cllr cal.", "{:.4f}"), ("worst emotion", "{}"))


def summary_row(name: str, report: dict) -> dict:
    """One line of the summary table: a set's headline numbers (None where they do not apply)."""
    calibrated = (report.get("calibration") or {}).get("after", {})
    worst = report.get("worst_emotion")
    values = (name, report["n_bonafide"], report["n_spoof"], report["eer"], report["min_tdcf"],
              report["asvspoof5"]["min_dcf"], report["asvspoof5"]["act_dcf"], report["asvspoof5"]["cllr"],
              calibrated.get("act_dcf"), calibrated.get("cllr"),
              f"{worst['emotion']} ({worst['eer']:.1f} %)" if worst else None)
    return dict(zip((c for c, _ in SUMMARY_COLUMNS), values))


def format_table(rows: list[dict], formats: dict[str, str] | None = None) -> str:
    """Rows of equal keys as an aligned text table; None prints as '-'."""
    formats = formats or dict(SUMMARY_COLUMNS)
    columns = list(rows[0])
    return _text_table([columns] + [["-" if row[c] is None else formats.get(c, "{}").format(row[c]) for c in columns]
                                     for row in rows])


def _text_table(rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, a rule under the first row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)



def format_ablations(summary: dict) -> str:
    lines = []
    for title, entry in summary.items():
        names = list(entry["pooled"])
        lines += [f"{title}: EER % by emotion_ablation (change from 'none' in brackets)",
                  "  " + "emotion".ljust(10) + "".join(name.rjust(18) for name in names)]
        emotions = list(entry["per_emotion"]["none"]) + ["pooled"]
        for emotion in emotions:
            row = "  " + emotion.ljust(10)
            for name in names:
                value = entry["pooled"][name] if emotion == "pooled" else entry["per_emotion"][name].get(emotion)
                base = entry["pooled"]["none"] if emotion == "pooled" else entry["per_emotion"]["none"].get(emotion)
                text = "n/a" if value is None else (f"{value:.2f}" if name == "none" else f"{value:.2f} [{value - base:+.2f}]")
                row += text.rjust(18)
            lines.append(row)
    return "\n".join(lines)

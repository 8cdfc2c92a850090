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
                   ("act DCF cal.", "{:.4f}"), ("Cllr cal.", "{:.4f}"), ("worst emotion", "{}"),
                   ("FRR % @thr", "{:.1f}"), ("FAR % @thr", "{:.1f}"), ("arousal FRR ratio", "{:.2f}"))


def summary_row(name: str, report: dict) -> dict:
    """One line of the summary table: a set's headline numbers (None where they do not apply),
    the error rates at the fixed threshold among them."""
    calibrated = (report.get("calibration") or {}).get("after", {})
    worst = report.get("worst_emotion")
    five = report.get("asvspoof5", {})
    point = report.get("operating_points", {}).get("fixed")
    rates = point["pooled"] if point else {}
    ratio = (point.get("arousal_frr") or {}).get("ratio") if point else None
    values = (name, report["n_bonafide"], report["n_spoof"], report.get("eer"), report.get("min_tdcf"),
              five.get("min_dcf"), five.get("act_dcf"), five.get("cllr"),
              calibrated.get("act_dcf"), calibrated.get("cllr"),
              f"{worst['emotion']} ({worst['eer']:.1f} %)" if worst else None,
              (rates.get("frr") or {}).get("rate"), (rates.get("far") or {}).get("rate"), ratio)
    return dict(zip((c for c, _ in SUMMARY_COLUMNS), values))


def rate_text(cell: dict | None) -> str | None:
    """An error rate at a threshold: 'rate [95 % CI] (errors/trials)', percent; None when undefined."""
    if cell is None:
        return None
    low, high = cell["ci95"]
    return f"{cell['rate']:.1f} [{low:.1f}, {high:.1f}] ({cell['errors']}/{cell['n']})"


def format_operating_point(point: dict) -> str:
    """FRR and FAR at one threshold, pooled and per group, with the arousal contrast."""
    rows = [["group", "FRR % [95 % CI] (rejected/bona fide)", "FAR % [95 % CI] (accepted/spoof)"],
            ["all", rate_text(point["pooled"]["frr"]) or "n/a", rate_text(point["pooled"]["far"]) or "n/a"]]
    for factor in ("emotion", "arousal", "speaker", *(f for f in point["groups"] if f not in
                                                      ("emotion", "arousal", "speaker", "attack"))):
        for value, cells in point["groups"].get(factor, {}).items():
            rows.append([f"{factor}={value}", rate_text(cells["frr"]) or "n/a", rate_text(cells["far"]) or "n/a"])
    lines = [f"  at threshold {point['threshold']:.4f} ({point['source']}):"]
    lines += ["  " + line for line in _text_table(rows).splitlines()]
    arousal = point.get("arousal_frr")
    if arousal and arousal["gap_points"] is not None:
        ratio = "n/a (no low-arousal rejection)" if arousal["ratio"] is None else f"{arousal['ratio']:.2f}"
        lines.append(f"  high- vs low-arousal FRR: {arousal['high_frr']:.1f} % vs {arousal['low_frr']:.1f} %, ratio "
                     f"{ratio}, gap {arousal['gap_points']:+.1f} points [{arousal['gap_ci95'][0]:+.1f}, "
                     f"{arousal['gap_ci95'][1]:+.1f}]")
    return "\n".join(lines)


def format_one_class(name: str, report: dict) -> str:
    """A one-class set (e.g. genuine speech only): its size, and its error rates at the fixed threshold."""
    kind = "bona fide" if report["one_class"] == "bonafide" else "spoof"
    head = f"{name}: {report['n_bonafide'] + report['n_spoof']} {kind} trials only (no EER)"
    point = report["operating_points"].get("fixed")
    if point is None:
        return f"{head}; {report['note']}"
    return f"{head}; accepted as bona fide: {report['acceptance']:.1f} %\n" + format_operating_point(point)


def formatted_cells(row: dict, formats: dict[str, str] | None = None) -> list[str | None]:
    """A row's values as text, each in its column's format (the summary's by default); None stays None."""
    formats = formats or dict(SUMMARY_COLUMNS)
    return [None if value is None else formats.get(column, "{}").format(value) for column, value in row.items()]


def format_table(rows: list[dict], formats: dict[str, str] | None = None) -> str:
    """Rows of equal keys as an aligned text table; None prints as '-'."""
    return _text_table([list(rows[0])] + [["-" if v is None else v for v in formatted_cells(row, formats)]
                                           for row in rows])


def _text_table(rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, a rule under the first row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_ablations(summary: dict) -> str:
    """Per set: EER per emotion and pooled, and the FRR at the fixed threshold, under each
    ablation, with the change from 'none' in brackets."""
    lines = []
    for title, entry in summary.items():
        names = list(entry["pooled"])
        lines += [f"{title}: by emotion_ablation (EER %, FRR % at the fixed threshold; change from 'none')",
                  "  " + "".ljust(14) + "".join(name.rjust(18) for name in names)]
        rows = [(f"EER {e}", {n: entry["per_emotion"][n].get(e) for n in names}) for e in entry["per_emotion"]["none"]]
        rows += [("EER pooled", entry["pooled"]), ("FRR@thr", entry["frr_at_threshold"])]
        rows += [(f"FRR@thr {e}", {n: entry["frr_per_emotion"][n].get(e) for n in names})
                 for e in entry["frr_per_emotion"]["none"]]
        for label, values in rows:
            if all(v is None for v in values.values()):
                continue
            base = values["none"]
            cells = ["n/a" if v is None else (f"{v:.2f}" if n == "none" or base is None else f"{v:.2f} [{v - base:+.2f}]")
                     for n, v in values.items()]
            lines.append("  " + label.ljust(14) + "".join(c.rjust(18) for c in cells))
    return "\n".join(lines)

"""One page to look at: ``report.html``, written beside ``eval_report.json`` by ``main.py --eval``
and beside ``comparison.md`` by ``compare.py``. It is self-contained -- the tables are HTML, the
pictures are embedded as data URIs -- so it opens offline in any browser and can be mailed or
archived as one file.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from emospoof.reports.seed_comparison import GAP_HEADER, TEST_HEADER, figure_tables, gap_rows, summary_cell, test_rows
from emospoof.reports.tables import formatted_cells, rate_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
.note { color: #555; font-size: 0.9em; }
"""
PICTURES = (("det_plot", "DET curves"), ("histogram", "score histogram"), ("emotion_plot", "EER per emotion"),
            ("operating_point_plot", "error rates at the fixed threshold"))


def image(path: str | Path, words: str) -> str:
    """An <img> holding the PNG itself; a missing picture is said, not dropped."""
    path = Path(path)
    if not path.is_file():
        return f'<p class="note">{html.escape(words)}: {html.escape(str(path))} not found</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(words)}" src="data:image/png;base64,{data}"></figure>'


def table(header: list[str], rows: list[list[object]]) -> str:
    """An HTML table; None shows as '–', floats with two decimals."""
    def cell(value: object) -> str:
        if value is None:
            return "–"
        return html.escape(f"{value:.2f}" if isinstance(value, float) else str(value))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def operating_point_section(point: dict) -> str:
    """FRR and FAR at one threshold, pooled and per group, and the arousal contrast."""
    rows = [["all", rate_text(point["pooled"]["frr"]), rate_text(point["pooled"]["far"])]]
    rows += [[f"{factor} = {value}", rate_text(cells["frr"]), rate_text(cells["far"])]
             for factor, values in point["groups"].items() for value, cells in values.items()]
    parts = [f"<p>Threshold {point['threshold']:.4f}: {html.escape(point['source'])}. A trial is accepted as "
             "bona fide above it.</p>",
             table(["group", "FRR % [95 % CI] (rejected/bona fide)", "FAR % [95 % CI] (accepted/spoof)"], rows)]
    arousal = point.get("arousal_frr")
    if arousal and arousal.get("gap_points") is not None:
        parts.append(table(["high-arousal FRR %", "low-arousal FRR %", "ratio", "gap (points)", "gap 95 % CI"],
                           [[arousal["high_frr"], arousal["low_frr"], arousal["ratio"], arousal["gap_points"],
                             f"[{arousal['gap_ci95'][0]:+.1f}, {arousal['gap_ci95'][1]:+.1f}]"]]))
    return "".join(parts)


def set_section(name: str, report: dict) -> str:
    """One evaluated set: its headline, per-emotion EERs, error rates at the thresholds, pictures."""
    parts = [f"<h2>{html.escape(name)}</h2>", f'<p class="note">{html.escape(str(report.get("source", "")))}</p>']
    if "error" in report:
        return "".join(parts) + f"<p>No metrics: {html.escape(report['error'])}</p>"
    if "one_class" in report:
        parts.append(f"<p>{report['n_bonafide'] + report['n_spoof']} trials of one class ({report['one_class']}): "
                     "no EER.</p>")
        if "note" in report:
            parts.append(f"<p>{html.escape(report['note'])}</p>")
    else:
        row = {"EER %": report["eer"], "min t-DCF": report["min_tdcf"], "bona fide": report["n_bonafide"],
               "spoof": report["n_spoof"]}
        parts.append(table(list(row), [formatted_cells(row)]))
        if report.get("per_emotion"):
            parts.append("<h3>EER per emotion (each emotion at its own threshold)</h3>")
            parts.append(table(["emotion", "EER %", "95 % CI", "bona fide", "spoof"],
                               [[e, c["eer"], c["ci95"] and f"[{c['ci95'][0]:.1f}, {c['ci95'][1]:.1f}]",
                                 c["n_bonafide"], c["n_spoof"]] for e, c in report["per_emotion"].items()]))
    for kind, words in (("fixed", "at the fixed threshold"), ("set_eer", "at the set's own EER threshold")):
        point = report.get("operating_points", {}).get(kind)
        if point is not None:
            parts += [f"<h3>Error rates {words}</h3>", operating_point_section(point)]
    parts += [image(report[key], words) for key, words in PICTURES if report.get(key)]
    return "".join(parts)


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def write_eval_html(report: dict, path: Path, title: str) -> None:
    """``main.py --eval``'s page: the summary across sets, then every set."""
    parts = []
    if report.get("summary"):
        parts += ["<h2>Summary</h2>", table(list(report["summary"][0]), [formatted_cells(row) for row in report["summary"]])]
    parts += [set_section(name, r) for name, r in report.get("datasets", {}).items()]
    if report.get("emotional_set", {}).get("plot"):
        parts += ["<h2>Emotional set per system</h2>", image(report["emotional_set"]["plot"], "EER per emotion")]
    path.write_text(page(title, "".join(parts)), encoding="utf-8")


def write_comparison_html(result: dict, path: Path, picture: Path) -> None:
    """``compare.py``'s page: the figures of every model per set, the paired tests, the chart."""
    models = result["models"]
    parts = [f"<p>Baseline: {html.escape(result['baseline'])}. Figures are mean ± sd over seeds; FRR and FAR at "
             "each run's fixed threshold (@thr); (n=k): only k of the model's seeds define the figure.</p>"]
    for topic, names in figure_tables(result).items():
        rows = [[label, len(entry["runs"])] + [summary_cell(entry["summary"], n, len(entry["runs"])) for n in names]
                for label, entry in models.items()]
        parts += [f"<h2>{html.escape(topic)}</h2>", table(["model", "seeds", *names], rows)]
    if any(entry.get("arousal_frr_gap") for entry in models.values()):
        parts += ["<h2>Arousal FRR gap: high- minus low-arousal genuine speech rejected at the fixed threshold</h2>",
                  table(GAP_HEADER, gap_rows(result))]
    parts += ["<h2>Paired tests against the baseline (seeds, then trials)</h2>", table(TEST_HEADER, test_rows(result)),
              image(picture, "comparison")]
    path.write_text(page("Comparison", "".join(parts)), encoding="utf-8")

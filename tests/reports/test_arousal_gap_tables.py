"""benchmarks/arousal_gap_tables.py: the docs' tables from a comparison, checked by hand."""
import json

from benchmarks.arousal_gap_tables import main, pooled_counts, row_name


def frr_cell(errors: int, n: int) -> dict:
    return {"frr": {"rate": 100 * errors / n, "errors": errors, "n": n}, "far": None}


def write_run(folder, angry: tuple[int, int], calm: tuple[int, int]) -> str:
    """A run folder whose report holds trimmed-RAVDESS FRR counts for two emotions and their arousal groups."""
    point = {"groups": {"emotion": {"angry": frr_cell(*angry), "calm": frr_cell(*calm)},
                        "arousal": {"high": frr_cell(*angry), "low": frr_cell(*calm)}}}
    folder.mkdir(parents=True)
    report = {"datasets": {"ravdess_11_12_trimmed": {"operating_points": {"fixed": point}}}}
    (folder / "eval_report.json").write_text(json.dumps(report))
    return str(folder)


def test_counts_are_pooled_over_seeds_and_rows_named_as_in_the_docs(tmp_path, capsys):
    runs = [write_run(tmp_path / "s1", (3, 16), (0, 16)), write_run(tmp_path / "s2", (1, 16), (2, 16))]
    totals = pooled_counts(runs, "ravdess_11_12_trimmed")
    assert totals["frr"]["angry"] == [4, 32] and totals["frr"]["low"] == [2, 32] and totals["far"] == {}
    assert row_name("LA_AASIST-L_devkit_ep4_bs16") == "AASIST-L"
    assert row_name("LA_AASIST-L_emocal_devkit_ep4_bs16 + emotion calibration") == "emotion calibration"
    assert row_name("LA_other_ep1_bs4") == "LA_other_ep1_bs4"

    summary = {"ravdess_11_12_trimmed FRR@thr": {"mean": 6.25, "sd": 1.5, "n": 2},
               "LA eval min t-DCF": {"mean": 0.35612, "sd": 0.01, "n": 2}}
    test = {"difference": -22.2, "ci95": [-31.0, -13.7]}
    result = {"baseline": "LA_AASIST-L_devkit_ep4_bs16", "models": {
        "LA_AASIST-L_devkit_ep4_bs16": {"runs": runs, "summary": summary, "paired_vs_baseline": {},
                                        "arousal_frr_gap": {"ravdess_11_12_trimmed": {"gap": 5.5, "ci95": [-0.4, 11]}}},
        "LA_AASIST-L_silence_devkit_ep4_bs16": {"runs": runs[:1], "summary": {}, "arousal_frr_gap": {},
                                                "paired_vs_baseline": {"ravdess_11_12: FRR@thr": test}}}}
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(result))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| RAVDESS 11–12 trimmed, FRR | 12.5 (4/32) |" in out  # angry: 4 of 32 over both seeds
    assert "12.5 (4/32) | 6.2 (2/32) |" in out  # high and low arousal
    assert "| AASIST-L | 2 | – | 0.356 ± 0.010 |" in out
    assert "| silence | 1 | – | – | – | – | **−22.2 [−31.0, −13.7]** | – |" in out  # excludes zero: bold
    assert "| AASIST-L | +5.5 [−0.4, +11.0] |" in out  # contains zero: plain


def test_a_missing_comparison_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.json'}: no such file"

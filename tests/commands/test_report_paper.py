"""``report`` for a reviewer: intervals of each run and of the difference, the disagreeing rows as cases,
MRR named by its cut-off, the paper's table (Markdown + CSV) and a titled chart; hand-checkable values."""

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
SIDS = [f"<a_{i}><b_{i}><c_{i}>" for i in range(12)]


def records(hit_rows, rows=8):
    """Row r's target is SIDS[r]; a hit ranks it first in a list of 10, a miss leaves it out."""
    out = []
    for row in range(rows):
        others = [s for s in SIDS if s != SIDS[row]]
        predict = [SIDS[row]] + others[:9] if row in hit_rows else others[:10]
        out.append({"row": row, "input": "", "output": SIDS[row], "predict": predict,
                    "target_title": f"Target item {row}", "predict_titles": [f"title of {s}" for s in predict]})
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """A hits rows 4-7, B every row, C rows 0-1; evaluate's metrics.json beside A names split and category."""
    root = tmp_path_factory.mktemp("paper")
    for name, hits in (("a", {4, 5, 6, 7}), ("b", set(range(8))), ("c", {0, 1})):
        (root / name).mkdir()
        (root / name / "eval_results.json").write_text(json.dumps(records(hits)))
    (root / "a" / "metrics.json").write_text(json.dumps({"split": "test", "category": "Demo_Shop", "num_beams": 10}))
    result = run_cli("report", *(str(root / n / "eval_results.json") for n in "abc"), "--names", "A", "B", "C",
                     "--output", str(root / "out"), "--cases", "2", check=True)
    return root / "out", result.stdout


def test_intervals_of_each_run_and_of_the_difference(report_dir):
    """B is 1 on every row, so its interval is [1, 1]. A's per-row HR@3 is [0,0,0,0,1,1,1,1] and B - A is
    [1,1,1,1,0,0,0,0]: a resample of 8 rows has mean k/8 with k ~ Binomial(8, 1/2); P(k = 0) = 1/256 and
    P(k <= 1) = 9/256 = 3.5%, so the 2.5% percentile is 1/8 and by symmetry the 97.5% one is 7/8: both A's
    interval and the difference's are [0.125, 0.875]. The means are 0.5, 1.0 and +0.5."""
    out, stdout = report_dir
    paired = json.loads((out / "report.json").read_text())["paired_vs_first"]["B"]
    hr3 = next(c for c in paired if c["metric"] == "hr@3")
    assert (hr3["mean_a"], hr3["mean_b"], hr3["difference"]) == (0.5, 1.0, 0.5)
    assert (hr3["ci_a_low"], hr3["ci_a_high"]) == (0.125, 0.875)
    assert (hr3["ci_b_low"], hr3["ci_b_high"]) == (1.0, 1.0)
    assert (hr3["ci_low"], hr3["ci_high"]) == (0.125, 0.875)
    # sign flips of four +1s and four 0s: |mean| >= 0.5 only when all four flip the same way: p = 2/16
    assert hr3["p_value"] == pytest.approx(0.125, abs=0.015)
    assert "[0.1250, 0.8750]" in stdout and "[1.0000, 1.0000]" in stdout


def test_cases_are_exactly_the_disagreeing_rows(report_dir):
    out, stdout = report_dir
    cases = json.loads((out / "report.json").read_text())["cases_vs_first"]
    assert cases["B"] == {"k": 10, "B_hit_A_missed": [0, 1, 2, 3], "A_hit_B_missed": []}
    assert cases["C"] == {"k": 10, "C_hit_A_missed": [0, 1], "A_hit_C_missed": [4, 5, 6, 7]}
    assert "B hit@10, A missed: 4 rows; the first 2:" in stdout
    assert "A hit@10, C missed: 4 rows; the first 2:" in stdout
    assert f'row 0: target {SIDS[0]} "Target item 0"\n    A: not in the list' in stdout
    assert f'    B: found at rank 1\n      1. {SIDS[0]} "title of {SIDS[0]}"' in stdout
    shown = stdout.split("B hit@10, A missed")[1].split("A hit@10, B missed")[0]  # --cases 2: rows 0 and 1
    assert "row 1: target" in shown and "row 2: target" not in shown
    assert "correct cases" not in stdout  # random cases only for a single run


def test_mrr_is_named_by_its_cutoff_and_the_paper_table(report_dir):
    out, stdout = report_dir
    metrics = json.loads((out / "report.json").read_text())["runs"][0]["metrics"]
    assert metrics["mrr@10"] == 0.5 and metrics["num_beams"] == 10
    lines = {line.split()[0]: line for line in stdout.splitlines() if line.strip()}
    assert "mrr@10" in lines and "mrr" not in lines  # the table names the cut-off
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("Demo_Shop, test split: 8 rows, beam width 10\n")
    assert "| Method | HR@3 | HR@5 | HR@10 | NDCG@3 | NDCG@5 | NDCG@10 |" in markdown
    assert "| A | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 |" in markdown
    assert "| B | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in markdown
    assert "| HR@3 | +0.5000 | [+0.1250, +0.8750] |" in markdown
    rows = list(csv.reader((out / "report.csv").open()))
    assert rows[0] == ["Method", "HR@3", "HR@5", "HR@10", "NDCG@3", "NDCG@5", "NDCG@10"]
    assert rows[3] == ["C"] + ["0.2500"] * 6
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text())["title"] == "Demo_Shop, test split: 8 rows, beam width 10"
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_chart_title_leaves_out_unknown_parts():
    from rec_lightning.evaluation.report_chart import chart_title

    assert chart_title(None, None, 5, 20) == "5 rows, beam width 20"
    assert chart_title("Industrial_and_Scientific", "valid", 4532, 50) == \
        "Industrial_and_Scientific, valid split: 4532 rows, beam width 50"

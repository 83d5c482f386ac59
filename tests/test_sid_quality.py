"""benchmarks/sid_quality.py without training: row pairing, seed pooling, s.e., resumability, the results table.

Its end-to-end smoke run (build, fit, evaluate, table, resume) is in tests/test_benchmark_scripts.py (slow tier).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sid_quality", ROOT / "benchmarks" / "sid_quality.py")
sq = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("sid_quality", sq)  # dataclasses look their module up by name
_spec.loader.exec_module(sq)

SIDS = ["<a_0><b_0><c_0>", "<a_0><b_1><c_0>", "<a_1><b_0><c_0>", "<a_1><b_1><c_0>", "<a_2><b_0><c_0>"]


def records(ranks: list[int], sids: list[str] = SIDS, order: list[int] | None = None) -> list[dict]:
    """One eval_results.json record per validation row: row r's target is item r (SID ``sids[r]``) and the beam
    list holds it at ``ranks[r]`` (-1: not at all), the other slots filled with other SIDs."""
    out = []
    for row in order or range(len(ranks)):
        others = [s for s in sids if s != sids[row]]
        predict = list(others[:3])
        if ranks[row] >= 0:
            predict.insert(ranks[row], sids[row])
        out.append({"output": sids[row], "predict": predict, "row": row, "target_item_id": row})
    return out


def test_target_ranks_and_per_row_values_count_the_target_sid():
    ranks = sq.target_ranks(records([0, 2, -1, 1]))
    assert ranks == {0: (0, 0), 1: (1, 2), 2: (2, -1), 3: (3, 1)}
    ndcg = sq.row_values(ranks, "ndcg@10")
    assert ndcg[0] == (0, 1.0) and ndcg[1] == (1, 0.5) and ndcg[2] == (2, 0.0)  # 1 / log2(2 + 2) = 0.5
    assert ndcg[3][1] == pytest.approx(1 / math.log2(3))
    assert {r: v for r, (_, v) in sq.row_values(ranks, "hr@1").items()} == {0: 1.0, 1: 0.0, 2: 0.0, 3: 0.0}


def test_rows_pair_by_validation_row_not_by_sid_string_or_position():
    # another SID set: every SID string differs, the records come in another order; row r is still item r
    other_sids = [f"<a_{i}><b_{i}><c_{i}>" for i in range(5)]
    shipped = {0: sq.row_values(sq.target_ranks(records([0, -1, -1, -1, -1])), "hr@10")}
    other = {0: sq.row_values(sq.target_ranks(records([-1, 0, -1, -1, -1], other_sids, order=[4, 3, 2, 1, 0])), "hr@10")}
    comparison = sq.paired_vs_shipped(shipped, other, "hr@10", num_samples=200)
    assert comparison.count == 5 and comparison.difference == 0.0 and comparison.seeds == [0]
    assert (comparison.mean_a, comparison.mean_b) == (0.2, 0.2)
    mismatched = {0: {r: (r + 1 if r == 3 else r, v) for r, (_, v) in other[0].items()}}  # row 3: another target
    with pytest.raises(ValueError, match="validation row 3 has target item 3 in shipped but 4"):
        sq.paired_vs_shipped(shipped, mismatched, "hr@10")


def test_seeds_are_pooled_by_averaging_each_row_before_the_bootstrap():
    def values(*per_row: float) -> dict:
        return {row: (row, value) for row, value in enumerate(per_row)}

    shipped = {0: values(1, 0, 0, 0), 1: values(1, 1, 0, 0)}  # pooled: 1, 0.5, 0, 0
    other = {0: values(1, 1, 1, 0), 1: values(1, 1, 0, 0), 2: values(0, 0, 0, 0)}  # seed 2 has no shipped partner
    pooled = sq.pooled_rows(other, [0, 1])
    assert pooled == {0: (0, 1.0), 1: (1, 1.0), 2: (2, 0.5), 3: (3, 0.0)}
    comparison = sq.paired_vs_shipped(shipped, other, "hr@10", num_samples=500)
    assert comparison.seeds == [0, 1]  # only the seeds both sets have
    assert comparison.mean_a == pytest.approx(1.5 / 4) and comparison.mean_b == pytest.approx(2.5 / 4)
    assert comparison.difference == pytest.approx(0.25)  # per-row differences 0, 0.5, 0.5, 0
    assert 0.0 <= comparison.ci_low <= 0.25 <= comparison.ci_high <= 0.5
    constant = sq.paired_vs_shipped({0: values(0, 0, 0)}, {0: values(1, 1, 1)}, "hr@10", num_samples=100)
    assert (comparison.count, constant.ci_low, constant.ci_high) == (4, 1.0, 1.0)  # no spread: the interval is a point
    assert sq.paired_vs_shipped({1: values(1)}, {0: values(1)}, "hr@10") is None  # no common seed


def test_mean_and_standard_error_over_seeds():
    mean, se = sq.mean_se([0.1, 0.3])
    assert mean == pytest.approx(0.2) and se == pytest.approx(0.1)  # s.d. 0.1414 / sqrt(2)
    mean, se = sq.mean_se([0.10, 0.12, 0.14])
    assert mean == pytest.approx(0.12) and se == pytest.approx(0.02 / math.sqrt(3))  # s.d. 0.02
    assert sq.mean_se([0.5])[0] == 0.5 and math.isnan(sq.mean_se([0.5])[1])
    assert sq.format_mean_se([0.1, 0.3]) == "0.2000 +/- 0.1000" and sq.format_mean_se([0.5]) == "0.5000"
    assert sq.format_mean_se([]) == "-"


def test_third_seed_goes_to_sets_whose_interval_crosses_zero():
    above, crossing, point = (SimpleNamespace(ci_low=lo, ci_high=hi) for lo, hi in ((0.01, 0.03), (-0.01, 0.02), (0, 0)))
    assert not sq.crosses_zero(above) and sq.crosses_zero(crossing) and sq.crosses_zero(point)
    both = {"hr@10": above, "ndcg@10": crossing}
    assert sq.needs_third_seed(both, "either") and sq.needs_third_seed(both, "ndcg@10")
    assert not sq.needs_third_seed(both, "hr@10")
    assert sq.needs_third_seed({"hr@10": None, "ndcg@10": above}, "either")  # no comparison yet: more seeds


def test_run_stage_decides_what_a_run_still_needs(tmp_path):
    run = tmp_path / "seed0"
    assert sq.run_stage(run) == "fit"
    (run / "train" / "final_checkpoint").mkdir(parents=True)
    assert sq.run_stage(run) == "fit"  # a folder without its metadata is not a finished export
    (run / "train" / "final_checkpoint" / "rec_lightning.json").write_text("{}")
    assert sq.run_stage(run) == "evaluate"
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")
    assert sq.run_stage(run) == "evaluate"  # both result files, or evaluate again
    (run / "eval" / "eval_results.json").write_text("[]")
    assert sq.run_stage(run) == "done"


def test_fit_command_overrides_only_budget_seed_data_and_folder(tmp_path):
    s = sq.Settings(data_dir=tmp_path / "data", category="Shop", work_dir=tmp_path, embeddings=tmp_path / "e.npy",
                    budget_seconds=480, timeout_seconds=720, num_beams=20, levels=3, codebook_size=256, build_seed=0,
                    build_args=[], extra_fit_args=[], eval_batch_size=64, threads=None)
    command = sq.fit_command(s, tmp_path / "sids", tmp_path / "run", 1)
    assert command[:3] == ["timeout", "--kill-after=60", "720"] and str(sq.RECIPE) in command
    assert " ".join(command).endswith(
        f"--trainer.max_time 00:00:08:00 --seed_everything 1 --model.init_args.backbone.init_seed 1 --data.seed 1 "
        f"--data.data_dir {tmp_path / 'sids'} --data.category Shop --trainer.default_root_dir {tmp_path / 'run'} "
        f"--trainer.logger.init_args.save_dir {tmp_path / 'run'}")
    assert sq.max_time(90061) == "01:01:01:01"
    evaluate = " ".join(sq.evaluate_command(s, tmp_path / "sids", tmp_path / "run"))
    assert "--split valid --num_beams 20" in evaluate and "--limit" not in evaluate


def test_results_table_from_finished_runs(tmp_path):
    data = tmp_path / "data"
    (data / "index").mkdir(parents=True)  # 4 items; items 0 and 1 share a SID
    (data / "index" / "Shop.index.json").write_text(json.dumps({
        "0": ["<a_0>", "<b_0>", "<c_0>"], "1": ["<a_0>", "<b_0>", "<c_0>"], "2": ["<a_1>", "<b_0>", "<c_1>"],
        "3": ["<a_1>", "<b_1>", "<c_0>"]}))
    s = sq.Settings(data_dir=data, category="Shop", work_dir=tmp_path / "work", embeddings=tmp_path / "e.npy",
                    budget_seconds=480, timeout_seconds=720, num_beams=20, levels=3, codebook_size=4, build_seed=0,
                    build_args=[], extra_fit_args=[], eval_batch_size=64, threads=None)
    built = s.work_dir / "sids" / "rq-kmeans-balanced"
    built.mkdir(parents=True)
    (built / "sid_report.json").write_text(json.dumps({
        "quantise_seconds": 9.87, "collision_rate_before": 0.1015, "collision_rate_after": 0.0,
        "level_stats": [{"used_codes": 4, "entropy_bits": 2.0}, {"used_codes": 3, "entropy_bits": 1.5},
                        {"used_codes": 2, "entropy_bits": 1.0}]}))
    ranks = {("shipped", 0): [0, -1, -1, -1, -1], ("shipped", 1): [0, 0, -1, -1, -1],
             ("rq-kmeans-balanced", 0): [0, 0, 0, -1, -1], ("rq-kmeans-balanced", 1): [0, 0, 2, -1, -1]}
    for number, ((name, seed), run_ranks) in enumerate(ranks.items()):
        run = sq.run_dir_of(s, name, seed)
        (run / "eval").mkdir(parents=True)
        hits = sum(r >= 0 for r in run_ranks)
        (run / "eval" / "eval_results.json").write_text(json.dumps(records(run_ranks)))
        (run / "eval" / "metrics.json").write_text(json.dumps({"hr@10": hits / 5, "ndcg@10": 0.0, "hr@1": 0.2,
                                                                "count": 5}))
        os.utime(run / "eval" / "metrics.json", (1e9 + number, 1e9 + number))  # finish order = this order
        (run / "fit.json").write_text(json.dumps({"exit_code": 0, "wall_seconds": 540.0 + number}))
    study = sq.Study([sq.SHIPPED, "rq-kmeans-balanced"], s, "context line", bootstrap_samples=200)
    text = study.write(tmp_path / "results.md")
    assert (tmp_path / "results.md").read_text() == text and "context line" in text
    lines = text.splitlines()
    shipped = next(line for line in lines if line.startswith("| shipped | -"))
    # collisions: (4 items - 3 distinct SIDs) / 4; codes per level a {0,0,1,1}, b {0,0,0,1}, c {0,0,1,0}
    assert shipped.startswith("| shipped | - | 25.00% | 25.00% | 2 / 2 / 2 | 1.00 / 0.81 / 0.81 | 0,1 | "
                              "0.3000 +/- 0.1000 |")  # HR@10 0.2 and 0.4
    balanced = next(line for line in lines if line.startswith("| rq-kmeans-balanced | 9.9"))
    assert "| 10.15% | 0.00% | 4 / 3 / 2 | 2.00 / 1.50 / 1.00 | 0,1 | 0.6000 +/- 0.0000 |" in balanced
    # pooled per row: shipped 1, .5, 0, 0, 0; balanced 1, 1, 1, 0, 0 -> difference (0 + .5 + 1) / 5 = +0.3
    assert "| +0.3000 [" in balanced and "(seeds 0,1) |" in balanced
    run_rows = [line for line in lines if line.split(" | ")[1:2] in (["0"], ["1"])]
    assert len(run_rows) == 4 and run_rows[0].startswith("| shipped | 0 | 9.0 | - | - | 0.2000 | 0.0000 | 0.2000 | 5 |")


def test_a_variant_trains_on_its_sid_set_with_its_extra_fit_arguments(tmp_path):
    variants = sq.parse_variants([["ls0.1", "shipped", "--model.init_args.loss.label_smoothing 0.1"],
                                  ["w2", "rq-kmeans-balanced", "--model.init_args.loss.level_weights '[2, 1, 1]'"]])
    assert variants == {"ls0.1": ("shipped", ["--model.init_args.loss.label_smoothing", "0.1"]),
                        "w2": ("rq-kmeans-balanced", ["--model.init_args.loss.level_weights", "[2, 1, 1]"])}
    s = sq.Settings(data_dir=tmp_path / "data", category="Shop", work_dir=tmp_path / "work", embeddings=tmp_path / "e.npy",
                    budget_seconds=480, timeout_seconds=720, num_beams=20, levels=3, codebook_size=256, build_seed=0,
                    build_args=[], extra_fit_args=[], eval_batch_size=64, threads=None, variants=variants)
    assert sq.sid_folder("ls0.1", s) == tmp_path / "data"  # the shipped data folder
    assert sq.sid_folder("w2", s) == tmp_path / "work" / "sids" / "rq-kmeans-balanced"
    assert sq.run_dir_of(s, "ls0.1", 1) == tmp_path / "work" / "runs" / "ls0.1" / "seed1"
    command = " ".join(sq.fit_command(s, tmp_path / "data", tmp_path / "run", 1, variants["ls0.1"][1]))
    # the variant's arguments come after the recipe (so they override it) and before the protocol's own overrides
    assert f"--config {sq.RECIPE} --model.init_args.loss.label_smoothing 0.1 --trainer.max_time 00:00:08:00" in command
    # the plain runs are unchanged
    assert "label_smoothing" not in " ".join(sq.fit_command(s, tmp_path / "data", tmp_path / "run", 1))


@pytest.mark.parametrize("spec, message", [
    (["shipped", "shipped", ""], "new plain name"),
    (["a b", "shipped", ""], "new plain name"),
    (["x", "Not A Method", ""], "neither 'shipped'"),
    (["x", "shipped", "--a 'unclosed"], "do not parse"),
])
def test_a_bad_variant_is_refused_naming_it(spec, message):
    with pytest.raises(SystemExit, match=message):
        sq.parse_variants([spec])
    with pytest.raises(SystemExit, match="new plain name"):
        sq.parse_variants([["v", "shipped", ""], ["v", "shipped", "--x 1"]])

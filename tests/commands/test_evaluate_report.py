"""``evaluate`` and ``report`` end to end in subprocesses, on a checkpoint built like the quickstart's."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli

from rec_lightning.commands import evaluate as evaluate_command
from rec_lightning.commands import report
from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.modules.sft import SFTModule

REPO = Path(__file__).resolve().parents[2]
TIMING_KEYS = {"seconds", "users_per_second", "processes"}


@pytest.fixture(scope="module")
def quickstart_checkpoint(quickstart_trained):
    """(checkpoint, data dir, number of test rows) of the shared quickstart-trained model (conftest)."""
    checkpoint, data_dir, examples = quickstart_trained
    return checkpoint, data_dir, len(examples)


def run(*args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=REPO, timeout=300, check=expect_ok)


def evaluate(checkpoint, data_dir, output, *extra: str) -> tuple[list, dict, str]:
    result = run("evaluate", "--checkpoint", str(checkpoint), "--data_dir", str(data_dir), "--category", "Demo_Shop",
                 "--split", "test", "--num_beams", "10", "--output", str(output), "--accelerator", "cpu",
                 "--batch_size", "8", *extra)
    records = json.loads((output / "eval_results.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    return records, metrics, result.stdout


@pytest.fixture(scope="module")
def single_process_run(quickstart_evaluated):
    """(output, records, metrics, stdout) of one ``evaluate`` like ``evaluate()`` below (conftest, shared)."""
    return quickstart_evaluated


def test_evaluate_writes_results_metrics_and_a_table(quickstart_checkpoint, single_process_run):
    _, _, num_test_rows = quickstart_checkpoint
    output, records, metrics, stdout = single_process_run
    assert metrics["count"] == num_test_rows == len(records)
    assert sorted(r["row"] for r in records) == list(range(num_test_rows))
    assert metrics["invalid"] == 0 and set(metrics) >= {"hr@1", "hr@10", "ndcg@10", "mrr", "ambiguous_targets"}
    assert all(len(r["predict"]) == 10 and len(set(r["predict"])) == 10 for r in records)
    assert {"input", "output", "predict", "target_item_id", "target_title", "predict_titles"} <= set(records[0])
    assert "hr@10" in stdout and "ambiguous targets" in stdout
    assert not list(output.glob(".*"))  # no temporary files left behind


@pytest.mark.slow  # ~19 s: two evaluate processes (the default tier's 8-minute limit)
def test_two_processes_count_each_row_once_and_report_compares_runs(quickstart_checkpoint, single_process_run,
                                                                    tmp_path):
    checkpoint, data_dir, num_test_rows = quickstart_checkpoint
    one_dir, one, metrics_one, _ = single_process_run
    two, metrics_two, _ = evaluate(checkpoint, data_dir, tmp_path / "two", "--devices", "2")
    assert metrics_two["processes"] == 2 and metrics_two["count"] == num_test_rows
    assert [r["row"] for r in two] == [r["row"] for r in one]
    assert [r["predict"] for r in two] == [r["predict"] for r in one]
    for name, value in metrics_one.items():
        if name not in TIMING_KEYS:
            assert metrics_two[name] == pytest.approx(value, abs=1e-9), name

    report = run("report", str(one_dir / "eval_results.json"), str(tmp_path / "two" / "eval_results.json"),
                 "--names", "one", "two", "--output", str(tmp_path / "report"), "--cases", "2").stdout
    assert "vs one" in report and "mean_hit_rank" in report and "two hit@10, one missed" in report
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    # the report recomputes the metrics from the records: they match what evaluate wrote
    for name in ("hr@1", "hr@5", "hr@10", "ndcg@10", "mrr"):
        assert summary["runs"][0]["metrics"][name] == pytest.approx(metrics_one[name], abs=1e-9)
    assert (tmp_path / "report" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_reads_minionerec_records(tmp_path, capsys):
    # the original's format: input/output/predict only, output with its trailing newline
    original = [{"input": "...", "output": "<a_1><b_2><c_3>\n", "predict": ["<a_1><b_2><c_3>", "<a_4><b_5><c_6>"]},
                {"input": "...", "output": "<a_4><b_5><c_6>\n", "predict": ["<a_1><b_2><c_3>", "<a_4><b_5><c_6>"]},
                {"input": "...", "output": "<a_7><b_8><c_9>\n", "predict": ["<a_1><b_2><c_3>", "not a sid"]}]
    path = tmp_path / "original.json"
    path.write_text(json.dumps(original))
    report.main([str(path), "--output", str(tmp_path / "out")])
    metrics = json.loads((tmp_path / "out" / "report.json").read_text())["runs"][0]["metrics"]
    # ranks 0, 1, miss: HR@1 = 1/3, MRR = (1 + 1/2) / 3 = 0.5, mean hit rank (1-based) = 1.5; one invalid
    assert metrics["hr@1"] == pytest.approx(1 / 3) and metrics["mrr"] == pytest.approx(0.5)
    assert metrics["mean_hit_rank"] == pytest.approx(1.5) and metrics["invalid"] == 1
    assert "row 2: target <a_7><b_8><c_9>" in capsys.readouterr().out


@pytest.mark.slow  # the default tier's 8-minute limit (a clean clone took 9 min 10 s on this machine)
def test_report_gives_paired_intervals_through_the_cli(tmp_path):
    """B finds the target at rank 0 on rows 0-3 where A missed it; rows 4-7 are alike. Per-row HR@3 differences
    are [1, 1, 1, 1, 0, 0, 0, 0], so A = 0.375, B = 0.875, difference +0.5. A resample of 8 rows has mean k/8 for
    k ones drawn with probability 1/2 each: P(k = 0) = 1/256 = 0.4% and P(k <= 1) = 9/256 = 3.5%, so the 2.5%
    percentile is 1/8; by symmetry the 97.5% one is 7/8: the interval is [+0.125, +0.875]."""
    sids = [f"<a_{i}><b_{i}><c_{i}>" for i in range(8)]

    def records(hits):
        out = []
        for row, hit in enumerate(hits):
            others = [s for s in sids if s != sids[row]]
            out.append({"row": row, "input": "", "output": sids[row],
                        "predict": [sids[row]] + others[:2] if hit else others[:3]})
        return out

    (tmp_path / "a.json").write_text(json.dumps(records([0, 0, 0, 0, 1, 1, 1, 0])))
    (tmp_path / "b.json").write_text(json.dumps(records([1, 1, 1, 1, 1, 1, 1, 0])))
    stdout = run("report", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--names", "A", "B",
                 "--output", str(tmp_path / "report")).stdout
    assert "B vs A on 8 paired rows" in stdout
    paired = json.loads((tmp_path / "report" / "report.json").read_text())["paired_vs_first"]["B"]
    hr3 = next(c for c in paired if c["metric"] == "hr@3")
    assert (hr3["mean_a"], hr3["mean_b"], hr3["difference"]) == (0.375, 0.875, 0.5)
    assert (hr3["ci_low"], hr3["ci_high"]) == (0.125, 0.875)
    (tmp_path / "c.json").write_text(json.dumps(records([1, 1, 1])))
    stdout = run("report", str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--output", str(tmp_path / "r2")).stdout
    assert "no paired comparison" in stdout and "different rows" in stdout


def test_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="not a checkpoint folder"):
        evaluate_command.main(["--checkpoint", str(tmp_path), "--output", str(tmp_path / "o")])
    (tmp_path / "broken.json").write_text("[{\"output\": 3}]")
    with pytest.raises(SystemExit, match=r"record 0.*'predict'"):
        report.main([str(tmp_path / "broken.json"), "--output", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="2 names for 1 result"):
        report.main([str(tmp_path / "broken.json"), "--names", "a", "b", "--output", str(tmp_path / "o")])


def test_quickstart_checkpoint_is_what_the_config_builds(quickstart_checkpoint):
    checkpoint, _, _ = quickstart_checkpoint
    metadata = json.loads((checkpoint / "rec_lightning.json").read_text())
    assert metadata["format"] == "full" and metadata["backbone"]["config"]["hidden_size"] == 128


def test_lightning_test_command_writes_results(quickstart_checkpoint, tmp_path):
    _, data_dir, num_test_rows = quickstart_checkpoint
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "logger": False,
                    "enable_progress_bar": False, "default_root_dir": str(tmp_path),
                    "callbacks": [{"class_path": "rec_lightning.callbacks.RankingEvaluation",
                                   "init_args": {"test_num_beams": 5, "test_output_dir": str(tmp_path / "test")}}]},
        "model": {"class_path": "rec_lightning.modules.sft.SFTModule",
                  "init_args": {"backbone": {"config": {"model_type": "qwen2", "hidden_size": 32,
                                                        "intermediate_size": 64, "num_hidden_layers": 2,
                                                        "num_attention_heads": 4, "num_key_value_heads": 2}},
                                "finetune": "full"}},
        "data": {"class_path": "rec_lightning.data.datamodule.RecDataModule",
                 "init_args": {"data_dir": str(data_dir), "category": "Demo_Shop", "eval_batch_size": 16,
                               "cache_dir": str(tmp_path / "cache")}},
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(config))
    result = run("test", "--config", str(tmp_path / "test.yaml"))
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["count"] == num_test_rows and metrics["num_beams"] == 5
    assert len(json.loads((tmp_path / "test" / "eval_results.json").read_text())) == num_test_rows
    assert "test/hr@5" in result.stdout + result.stderr  # Lightning's table of logged test metrics


def test_adapter_and_its_merged_export_rank_alike(quickstart_checkpoint, tmp_path):
    """In process (one device): a LoRA adapter checkpoint, and the same adapter merged into a plain HF folder."""
    import torch

    from rec_lightning.modules.export import export_merged

    _, data_dir, num_test_rows = quickstart_checkpoint
    datamodule = RecDataModule(data_dir=str(data_dir), category="Demo_Shop", cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    module = SFTModule(backbone={"config": {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64,
                                            "num_hidden_layers": 2, "num_attention_heads": 4,
                                            "num_key_value_heads": 2}},
                       finetune="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0})
    module.build(datamodule.tokenizer, datamodule.catalog.sid_tokens, datamodule.catalog.checksum())
    with torch.no_grad():  # a non-trivial adapter, so "merged" differs from the bare base
        for parameter in module.model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn_like(parameter))
    adapter = module.save_final_checkpoint(tmp_path / "adapter")
    merged = export_merged(adapter, tmp_path / "merged")
    results = {}
    for name, checkpoint in (("adapter", adapter), ("merged", merged)):
        evaluate_command.main(["--checkpoint", str(checkpoint), "--data_dir", str(data_dir), "--category", "Demo_Shop",
                               "--num_beams", "5", "--output", str(tmp_path / name), "--accelerator", "cpu"])
        results[name] = json.loads((tmp_path / name / "eval_results.json").read_text())
    assert len(results["adapter"]) == num_test_rows
    same = sum(a["predict"] == m["predict"] for a, m in zip(results["adapter"], results["merged"]))
    assert same >= num_test_rows - 2  # merging reorders float sums: at most a near-tie flips

"""The whole pipeline through the CLI in subprocesses: SFT quickstart -> evaluate -> GRPO -> evaluate -> report.

Slow (several minutes on 2 cores): run with ``python -m pytest -m slow tests/test_pipeline.py``. It checks
that every stage runs and hands over its outputs, that decoding stays 100% valid, and prints how RL
moved validation HR@10 (recorded in the closing notes; not asserted, since a few RL steps on a tiny
model may move it either way).
"""

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


def run(*args, env=None):
    return run_cli(*args, cwd=REPO, timeout=1800, check=True).stdout


@pytest.mark.slow
def test_sft_grpo_evaluate_report(tmp_path):
    env = None  # cli_helpers' environment: offline, the run's one cache
    sft, grpo = tmp_path / "sft", tmp_path / "grpo"
    run("fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar",
        "false", "--trainer.default_root_dir", str(sft), "--trainer.logger.init_args.save_dir", str(sft), env=env)
    checkpoint = sft / "final_checkpoint"
    run("fit", "--config", "configs/grpo_quickstart.yaml", "--model.init_args.sft_checkpoint", str(checkpoint),
        "--data.init_args.tokenizer", str(checkpoint), "--trainer.limit_train_batches", "30",
        "--trainer.val_check_interval", "30", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(grpo), "--trainer.logger.init_args.save_dir", str(grpo), env=env)
    metrics = {}
    for name, folder in (("SFT", sft), ("RL", grpo)):
        run("evaluate", "--checkpoint", str(folder / "final_checkpoint"), "--split", "valid", "--num_beams", "20",
            "--max_length", "256", "--output", str(folder / "eval"), env=env)
        metrics[name] = json.loads((folder / "eval" / "metrics.json").read_text())
        assert metrics[name]["invalid"] == 0
    out = run("report", str(sft / "eval/eval_results.json"), str(grpo / "eval/eval_results.json"), "--names", "SFT",
              "RL", "--output", str(tmp_path / "report"), env=env)
    assert "hr@10" in out.lower()
    assert (tmp_path / "report").is_dir() and any((tmp_path / "report").glob("*.png"))
    print(f"valid HR@10: SFT {metrics['SFT']['hr@10']:.4f} -> RL {metrics['RL']['hr@10']:.4f}; "
          f"NDCG@10: {metrics['SFT']['ndcg@10']:.4f} -> {metrics['RL']['ndcg@10']:.4f}")

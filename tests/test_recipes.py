"""The real-data recipes through the CLI, on a category they were not written for (the demo shop).

``configs/industrial_cpu.yaml`` and ``configs/grpo_industrial_cpu.yaml`` must run unchanged on any
category: here on the generated demo shop with tiny budgets (the real runs are in
benchmarks/real_data.py and benchmarks/README.md).
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


def cli(tmp_path: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=tmp_path, cache=cache, timeout=900, check=True)


@pytest.fixture(scope="module")
def demo_shop(tmp_path_factory) -> Path:
    from rec_lightning.data.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("shop") / "data", seed=3, num_users=120)


@pytest.mark.slow  # ~30 s: two fits and an evaluate (configs/ parse tests cover these recipes in the default tier)
def test_industrial_recipes_run_unchanged_on_another_category(tmp_path, demo_shop, cache):
    sft = cli(tmp_path, cache, "fit", "--config", str(REPO / "configs" / "industrial_cpu.yaml"),
              "--data.data_dir", str(demo_shop), "--trainer.max_time", "00:00:00:40", "--trainer.max_steps", "30",
              "--trainer.val_check_interval", "15", "--data.init_args.holdout_fraction", "0.1")
    # a seeded tenth of the train rows kept out of SFT (data.holdout_fraction), the GRPO stage trains on all of them
    train_rows = sum(1 for _ in (next((demo_shop / "train").glob("*.csv"))).open()) - 1
    kept = round(0.9 * train_rows)
    assert f"holdout_fraction 0.1 (seed 42): training on the kept rows, {kept} of {train_rows} train rows" in sft.stderr
    final = tmp_path / "outputs" / "industrial_cpu" / "final_checkpoint"
    metadata = json.loads((final / "rec_lightning.json").read_text())
    assert metadata["next_item_task"] == "sid_history_to_sid_compact" and metadata["category"] == "Demo_Shop"
    # evaluate picks the compact prompt from the checkpoint: the records' inputs are SID tokens and a newline
    # (and the recipe's decoding: the transition prior, its weight chosen on valid rows)
    cli(tmp_path, cache, "evaluate", "--checkpoint", str(final), "--data_dir", str(demo_shop), "--split", "test",
        "--num_beams", "10", "--limit", "20", "--accelerator", "cpu", "--output", "eval", "--prior", "transition",
        "--prior_weight", "auto", "--prior_tune_limit", "20")
    records = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert len(records) == 20 and records[0]["input"].startswith("<a_") and records[0]["input"].endswith(">\n")
    prior = json.loads((tmp_path / "eval" / "metrics.json").read_text())["prior"]
    assert prior["chosen"]["rows"] == 20 and prior["weight"] in [float(w) for w in prior["chosen"]["by_weight"]]
    # the GRPO recipe's transition_log reward counts the data's own train split: nothing else to fit first. Here on
    # the slice SFT held out alone (train_on: heldout), 2 batches of 64 prompts per epoch: the recipe's validation
    # interval counts steps across epochs (an interval longer than an epoch was an error on small train splits)
    held = train_rows - kept
    grpo = cli(tmp_path, cache, "fit", "--config", str(REPO / "configs" / "grpo_industrial_cpu.yaml"),
               "--data.data_dir", str(demo_shop), "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
               "--data.batch_size", "64", "--trainer.log_every_n_steps", "1", "--data.init_args.holdout_fraction", "0.1",
               "--data.init_args.train_on", "heldout")
    assert -(-held // 64) < 3  # an epoch is shorter than the validation interval
    assert f"training on the heldout rows, {held} of {train_rows} train rows" in grpo.stderr
    assert ("GRPO: the SFT model held out 0.1 of the train rows (seed 42, trained on the kept rows); this run trains "
            "on the heldout rows of holdout_fraction 0.1 (seed 42)") in grpo.stderr
    rl_root = tmp_path / "outputs" / "grpo_industrial_cpu"
    rl = json.loads((rl_root / "final_checkpoint" / "rec_lightning.json").read_text())
    assert rl["sft_holdout"] == {"fraction": 0.1, "seed": 42, "train_on": "kept"} and "holdout" not in rl
    assert rl["stage"] == "grpo" and rl.get("next_item_task", "sid_history_to_sid_compact") == "sid_history_to_sid_compact"
    rows = list(csv.DictReader((rl_root / "logs" / "version_0" / "metrics.csv").open()))
    prior = [float(row["train/rewards/transition_log"]) for row in rows if row.get("train/rewards/transition_log")]
    assert len(prior) == 3 and all(-30.0 < value < 0.0 for value in prior)  # the beams' mean log prior (finite)
    validated = [row for row in rows if row.get("val/ndcg@10")]
    assert [row["step"] for row in validated] == ["2"] and int(validated[0]["epoch"]) == 1  # step 3, second epoch

"""``python -m rec_lightning predict --ckpt_path ...`` ranks rows the way ``evaluate`` does and writes them.

The shared 8-step quickstart run (conftest's ``sft_run``): ``predict`` from its ``last.ckpt`` with the
RankingPredictionWriter (beam 10, batches of 8) on a 40-user demo shop (the same items and SID index as
the data it was trained on, so its 49 test rows rank in seconds) with the checkpoint's own tokenizer
writes ``eval_results.json`` whose rows equal, row for row, what ``evaluate`` writes for the exported
``final_checkpoint`` (the same weights) at the same beam width and batch size.
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli, run_in_process, short_fit_args, write_short_run_config


@pytest.mark.slow  # the default tier's 8-minute limit (a clean clone took 9 min 10 s on this machine)
def test_sft_predict_writes_the_rankings_evaluate_writes(tmp_path, sft_run):
    from rec_lightning.data.demo import make_demo_data

    shop = make_demo_data(tmp_path / "shop", seed=0, num_users=40)
    final = sft_run / "run" / "final_checkpoint"
    config = write_short_run_config(tmp_path)
    args = short_fit_args(config, "--ckpt_path", str(sft_run / "run" / "checkpoints" / "last.ckpt"),
                          "--data.data_dir", str(shop), "--data.tokenizer", str(final), "--data.eval_batch_size", "8",
                          "--trainer.callbacks+=RankingPredictionWriter", "--trainer.callbacks.num_beams=10",
                          f"--trainer.callbacks.output_dir={tmp_path / 'predicted'}")
    args[0] = "predict"
    run_cli(*args, cwd=tmp_path, check=True)
    predicted = json.loads((tmp_path / "predicted" / "eval_results.json").read_text())
    metrics = json.loads((tmp_path / "predicted" / "metrics.json").read_text())
    assert [r["row"] for r in predicted] == list(range(len(predicted))) and metrics["count"] == len(predicted) > 40

    run_cli("evaluate", "--checkpoint", str(final), "--data_dir", str(shop), "--split", "test",
            "--num_beams", "10", "--batch_size", "8", "--accelerator", "cpu", "--output", str(tmp_path / "eval"),
            cwd=tmp_path, check=True)
    evaluated = {record["row"]: record for record in json.loads((tmp_path / "eval" / "eval_results.json").read_text())}
    assert len(evaluated) == len(predicted)  # every test row of the shop, in both
    for record in predicted:
        again = evaluated[record["row"]]
        for key in ("input", "output", "predict", "predict_item_ids", "predict_titles", "target_item_id"):
            assert record[key] == again[key], (record["row"], key)
        assert record["scores"] == pytest.approx(again["scores"], abs=1e-4)

    # a second predict into the same folder is refused before any decoding, and the files stay as they were
    before = (tmp_path / "predicted" / "eval_results.json").read_bytes()
    again = run_in_process(*args, cwd=tmp_path)  # the same entry point, in this process (the subprocess path ran above)
    assert again.returncode == 1 and "already holds eval_results.json" in again.stderr, again.stderr[-2000:]
    assert (tmp_path / "predicted" / "eval_results.json").read_bytes() == before

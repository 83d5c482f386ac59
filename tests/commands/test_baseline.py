"""``baseline`` end to end in subprocesses on the demo data: popularity, transition, SASRec (fit, then rank)."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

from rec_lightning.data.item_sequences import encode_history
from rec_lightning.data.records import load_rec_data
from rec_lightning.modules.sasrec import load_sasrec

REPO = Path(__file__).resolve().parents[2]
# the keys of evaluate's eval_results.json records (rec_lightning.evaluation.ranking.RankingEvaluator.records)
RECORD_KEYS = {"input", "output", "predict", "row", "target_item_id", "target_title", "target_sid_items",
               "predict_item_ids", "predict_titles", "scores"}


def run(*args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=REPO, timeout=1200, check=expect_ok)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("baseline") / "data"
    run("make-demo-data", "--output", str(folder), "--num_users", "60", "--train_tokenizer", "false")
    return folder


def baseline(data: Path, output: Path, *extra: str) -> tuple[list, dict, str]:
    result = run("baseline", *extra, "--data_dir", str(data), "--split", "test", "--num_items", "10",
                 "--output", str(output))
    return (json.loads((output / "eval_results.json").read_text()), json.loads((output / "metrics.json").read_text()),
            result.stdout)


def test_popularity_and_transition_write_evaluate_format_and_report_compares_them(demo_data, tmp_path):
    test_rows = load_rec_data(demo_data, "Demo_Shop", ["test"]).splits["test"]
    popular, popular_metrics, stdout = baseline(demo_data, tmp_path / "pop", "--kind", "popularity")
    assert "hr@10" in stdout and popular_metrics["count"] == len(popular) == len(test_rows)
    assert set(popular[0]) == RECORD_KEYS and [r["row"] for r in popular] == [r.row for r in test_rows]
    assert all(r["predict"] == popular[0]["predict"] for r in popular)  # one list for everyone
    assert popular_metrics["invalid"] == 0 and popular_metrics["num_beams"] == 10
    assert popular_metrics["model"] == "popularity" and popular_metrics["split"] == "test"
    transition, transition_metrics, _ = baseline(demo_data, tmp_path / "tr", "--kind", "transition", "--decay", "0.5")
    assert transition_metrics["decay"] == 0.5 and len(transition) == len(popular)
    assert all(len(set(r["predict"])) == 10 for r in transition)
    # the demo data has real sequential structure: next-item counts beat popularity
    assert transition_metrics["ndcg@10"] > popular_metrics["ndcg@10"]
    # metrics.json matches what report recomputes from the records (same rows, same metric code)
    result = run("report", str(tmp_path / "pop" / "eval_results.json"), str(tmp_path / "tr" / "eval_results.json"),
                 "--names", "popularity", "transition", "--output", str(tmp_path / "report"))
    assert "transition vs popularity" in result.stdout
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    assert json.dumps(summary)  # readable
    assert not list((tmp_path / "pop").glob(".*"))  # no temporary files left behind


def test_baseline_refuses_bad_arguments(demo_data, tmp_path):
    result = run("baseline", "--kind", "sasrec", "--data_dir", str(demo_data), "--output", str(tmp_path),
                 expect_ok=False)
    assert result.returncode != 0 and "--checkpoint" in result.stderr
    result = run("baseline", "--kind", "sasrec", "--checkpoint", str(tmp_path / "missing"), "--data_dir",
                 str(demo_data), "--output", str(tmp_path / "out"), expect_ok=False)
    assert result.returncode != 0 and "sasrec.json not found" in result.stderr


@pytest.mark.slow
def test_sasrec_fits_from_the_config_and_ranks_with_the_saved_weights(demo_data, tmp_path):
    root = tmp_path / "run"
    run("fit", "--config", str(REPO / "configs" / "sasrec.yaml"), "--data.data_dir", str(demo_data),
        "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "3", "--model.init_args.hidden_size", "16")
    checkpoint = root / "final_checkpoint"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "sasrec.json").is_file()
    records, metrics, _ = baseline(demo_data, tmp_path / "sasrec", "--kind", "sasrec", "--checkpoint", str(checkpoint))
    assert metrics["model"] == "sasrec" and metrics["count"] == len(records) and metrics["invalid"] == 0
    # the command's scores are the reloaded network's logits for that history
    network, config = load_sasrec(checkpoint)
    rows = load_rec_data(demo_data, "Demo_Shop", ["test"]).splits["test"]
    ids = torch.tensor([encode_history(rows[0].history_item_ids, config["max_history"])])
    logits = network.score_histories(ids)[0]
    assert records[0]["scores"][0] == pytest.approx(round(logits.max().item(), 6), abs=1e-5)
    assert records[0]["predict_item_ids"][0][0] == int(logits.argmax())

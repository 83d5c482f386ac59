"""RankingEvaluation: validation metrics logged (and monitorable), and the test step writing its files."""

import csv
import json

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from rec_lightning.callbacks import RankingEvaluation
from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.data.demo import make_demo_data
from rec_lightning.evaluation.ranking import RankingEvaluator
from rec_lightning.evaluation.metrics import RankingMetrics
from rec_lightning.modules.sft import SFTModule

TINY = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def small_datamodule(tmp_path_factory):
    """A 40-user demo shop (40 valid and 40 test rows) with its trained tokenizer."""
    data_dir = make_demo_data(tmp_path_factory.mktemp("demo40") / "data", seed=0, num_users=40)
    dm = RecDataModule(data_dir=str(data_dir), category="Demo_Shop", batch_size=8, eval_batch_size=16,
                       max_length=256, cache_dir=str(tmp_path_factory.mktemp("cache")))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def trainer_for(tmp_path, callbacks, **kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, precision="32-true", logger=CSVLogger(str(tmp_path), name="logs"),
                      callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(tmp_path), **kwargs)


def test_validation_logs_ranking_metrics_every_n_validations(small_datamodule, tmp_path):
    torch.manual_seed(0)
    module = SFTModule(backbone={"config": TINY}, finetune="full")
    ranking = RankingEvaluation(num_beams=10, limit=12, seed=0, every_n_validations=2)
    trainer = trainer_for(tmp_path, [ranking], max_steps=8, val_check_interval=2, limit_val_batches=1,
                          num_sanity_val_steps=1)
    trainer.fit(module, datamodule=small_datamodule)

    # 4 validations (after steps 2, 4, 6, 8), ranking at the 2nd and 4th; the sanity check is not counted
    assert ranking.validations_seen == 4
    with open(next((tmp_path / "logs").rglob("metrics.csv"))) as handle:
        rows = list(csv.DictReader(handle))
    assert sum(1 for row in rows if row.get("val/loss")) == 4
    ranked = [row for row in rows if row.get("val/hr@10")]
    assert len(ranked) == 2
    names = {"val/hr@1", "val/hr@3", "val/hr@5", "val/hr@10", "val/ndcg@1", "val/ndcg@10", "val/mrr", "val/invalid"}
    assert names <= set(trainer.callback_metrics)
    assert "val/hr@20" not in trainer.callback_metrics  # K above the beam width is dropped
    assert {"val/hr@10", "val/ndcg@10"} <= set(trainer.progress_bar_metrics)
    assert trainer.callback_metrics["val/invalid"].item() == 0

    # the logged numbers are the metrics of the same 12 rows decoded again with the final weights
    evaluator = RankingEvaluator(small_datamodule.catalog, small_datamodule.tokenizer.get_vocab(),
                                 small_datamodule.tokenizer.eos_token_id, num_beams=10)
    module.model.eval()
    for batch in small_datamodule.generation_dataloader("valid", limit=12, seed=0):
        evaluator.update(module.model, batch)
    expected = evaluator.compute()
    assert expected["count"] == 12 and ranking.last_metrics["count"] == 12
    for name in ("hr@1", "hr@10", "ndcg@10", "mrr"):
        assert trainer.callback_metrics[f"val/{name}"].item() == pytest.approx(expected[name], abs=1e-6)


def test_checkpoint_selection_on_ndcg(small_datamodule, tmp_path):
    torch.manual_seed(0)
    module = SFTModule(backbone={"config": TINY}, finetune="full")
    best = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="val/ndcg@5", mode="max", save_top_k=1)
    stop = EarlyStopping(monitor="val/hr@5", mode="max", patience=5)
    trainer = trainer_for(tmp_path, [RankingEvaluation(num_beams=5, limit=8), best, stop], max_steps=4,
                          val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=small_datamodule)
    assert best.best_model_score is not None and best.best_model_path.endswith(".ckpt")
    assert stop.best_score is not None


def test_test_step_writes_results_and_metrics(small_datamodule, tmp_path):
    torch.manual_seed(0)
    module = SFTModule(backbone={"config": TINY}, finetune="full")
    ranking = RankingEvaluation(test_num_beams=8, test_output_dir=str(tmp_path / "results"))
    trainer = trainer_for(tmp_path, [ranking])
    logged = trainer.test(module, datamodule=small_datamodule)[0]

    records = json.loads((tmp_path / "results" / "eval_results.json").read_text())
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    test_rows = len(small_datamodule.generation_examples("test"))
    assert metrics["count"] == test_rows == len(records)
    assert sorted(r["row"] for r in records) == list(range(test_rows))  # every row exactly once
    first = records[0]
    assert first["input"].endswith("### Response:\n") and len(first["predict"]) == 8
    assert len(set(first["predict"])) == 8
    assert first["output"] == small_datamodule.catalog.sid_of(first["target_item_id"])
    assert first["predict_titles"][0] == small_datamodule.catalog.title_of(first["predict_item_ids"][0][0])
    # metrics.json agrees with the records (rank = first position of the target SID) and with the logger
    recomputed = RankingMetrics((1, 3, 5))
    recomputed.update(torch.tensor([r["predict"].index(r["output"]) if r["output"] in r["predict"] else -1
                                    for r in records]))
    for name, value in recomputed.compute().items():
        if name not in ("invalid", "count"):
            assert metrics[name] == pytest.approx(value.item(), abs=1e-9)
            assert logged[f"test/{name}"] == pytest.approx(value.item(), abs=1e-6)
    assert metrics["invalid"] == 0 and metrics["num_beams"] == 8
    assert module.test_step_fn is None  # unregistered after the test


def test_bad_settings_and_modules(small_datamodule):
    with pytest.raises(ValueError, match="every_n_validations"):
        RankingEvaluation(every_n_validations=0)
    with pytest.raises(TypeError, match="pl_module.model"):
        RankingEvaluation._language_model(pl.LightningModule())


def test_predictions_table_csv_and_wandb_best_summaries(small_datamodule, tmp_path):
    """num_logged_predictions=3 writes 3 users per ranking validation; WandbLogger gets summary="max"."""
    from types import SimpleNamespace

    from lightning.pytorch.loggers import WandbLogger

    from rec_lightning.callbacks.ranking import PREDICTION_COLUMNS, define_best_summaries

    torch.manual_seed(0)
    module = SFTModule(backbone={"config": TINY}, finetune="full")
    ranking = RankingEvaluation(num_beams=10, limit=6, seed=0, num_logged_predictions=3)
    trainer = trainer_for(tmp_path, [ranking], max_steps=2, val_check_interval=2, limit_val_batches=1,
                          num_sanity_val_steps=0)
    trainer.fit(module, datamodule=small_datamodule)
    (path,) = (tmp_path / "logs").rglob("val_predictions/step_2.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == PREDICTION_COLUMNS and len(rows) == 3
    catalog = small_datamodule.catalog
    examples = {e.row: e for e in small_datamodule.generation_examples("valid")}
    for row in rows:
        example = examples[int(row["row"])]
        assert row["history_titles"] == " | ".join(catalog.title_of(i) for i in example.history_item_ids)
        assert row["target_title"] == catalog.title_of(example.target_item_id)
        assert len(row["top5_sids"].split()) == 5 and row["hit@5"] in ("True", "False")

    calls = []
    fake = WandbLogger.__new__(WandbLogger)
    fake._experiment = SimpleNamespace(define_metric=lambda name, summary: calls.append((name, summary)))
    define_best_summaries(SimpleNamespace(is_global_zero=True, loggers=[fake]), ["val/hr@10", "val/ndcg@10"])
    assert calls == [("val/hr@10", "max"), ("val/ndcg@10", "max")]

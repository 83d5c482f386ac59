"""``RankingEvaluation``: constrained beam search metrics during validation and as the test step.

Validation: at the end of every ``every_n_validations``-th validation, decode the validation split's
next-item prompts (all, or a seeded subset of ``limit`` rows) with the module's causal LM
(``pl_module.model``) and log ``val/hr@K``, ``val/ndcg@K``, ``val/mrr`` and ``val/invalid`` to the
loggers and the progress bar, so ``ModelCheckpoint``/``EarlyStopping`` can monitor them. Test:
register the test step on the module (``pl_module.test_step_fn``), decode the test prompts, log
``test/...`` and write ``eval_results.json`` and ``metrics.json``. Under DDP each rank decodes its
own shard (the data module never repeats a row) and sum-state metrics make the totals exact. Under
sharding (``ModelParallelStrategy``) every decoder forward is a collective: the data module then gives
every rank as many batches, padded with rows of ``index`` -1 that the evaluator decodes but never counts.

With a ``WandbLogger`` the monitored metrics (``val/hr@10``, ``val/ndcg@10``) get best-value run
summaries (``define_metric(summary="max")``). ``num_logged_predictions`` adds, at every ranking
validation, a table of a few validation users (history titles, target, top-5 predictions): a
``wandb.Table`` for ``WandbLogger``, ``<log_dir>/val_predictions/step_<N>.csv`` for the other loggers.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch

from rec_lightning.errors import ConfigurationError
from rec_lightning.evaluation.metrics import DEFAULT_KS
from rec_lightning.evaluation.ranking import RankingEvaluator, write_results
from rec_lightning.modules.sharding import run_sharded

log = logging.getLogger(__name__)


class RankingEvaluation(pl.Callback):
    """Ranking metrics from constrained beam search, for model selection and final testing.

    Args:
        num_beams: beam width during validation (results per prompt); K above it are dropped.
        limit: validation rows to decode (a fixed, seeded subset); None = all.
        seed: seed of that subset.
        every_n_validations: decode at every n-th validation run (sanity checks excluded). A
            ``ModelCheckpoint``/``EarlyStopping`` monitoring ``val/hr@K`` needs the metric at every
            validation: keep 1 then (and validate less often instead).
        split: the split decoded during validation.
        batch_size: prompts per decoding batch (default: the data module's eval batch size).
        renormalize: renormalise step log-probabilities over the allowed tokens.
        ks: cut-offs K for HR@K and NDCG@K.
        prog_bar: metrics also shown on the progress bar.
        test_num_beams: beam width at test time.
        test_output_dir: where the test writes its JSON files (default ``<log_dir or root>/test_results``).
        validation_output_dir: if set, every ranking validation also writes its ``eval_results.json`` and
            ``metrics.json`` (the ``evaluate`` format) to ``<validation_output_dir>/step_<global step>/``, so a
            run's rankings can be inspected, or compared with ``evaluate`` on a saved checkpoint.
        num_logged_predictions: validation users (the first of the decoded subset) shown in a predictions
            table at every ranking validation (see the module docstring); 0 (default) = no table.
    """

    def __init__(self, num_beams: int = 20, limit: int | None = None, seed: int = 0, every_n_validations: int = 1,
                 split: str = "valid", batch_size: int | None = None, renormalize: bool = False,
                 ks: Sequence[int] = DEFAULT_KS, prog_bar: Sequence[str] = ("hr@10", "ndcg@10"),
                 test_num_beams: int = 50, test_output_dir: str | None = None,
                 validation_output_dir: str | None = None, num_logged_predictions: int = 0) -> None:
        if every_n_validations < 1:
            raise ConfigurationError(f"every_n_validations must be >= 1, got {every_n_validations}")
        self.num_beams = num_beams
        self.limit = limit
        self.seed = seed
        self.every_n_validations = every_n_validations
        self.split = split
        self.batch_size = batch_size
        self.renormalize = renormalize
        self.ks = tuple(ks)
        self.prog_bar = tuple(prog_bar)
        self.test_num_beams = test_num_beams
        self.test_output_dir = test_output_dir
        self.validation_output_dir = validation_output_dir
        self.num_logged_predictions = num_logged_predictions
        self.validations_seen = 0
        self.last_metrics: dict[str, float] = {}
        self._test: RankingEvaluator | None = None

    # ------------------------------------------------------------------ shared
    @staticmethod
    def _language_model(pl_module: pl.LightningModule) -> torch.nn.Module:
        model = getattr(pl_module, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"RankingEvaluation needs the causal LM at pl_module.model; {type(pl_module).__name__} "
                            "has none (SFTModule and GRPOModule provide it)")
        return model

    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> Any:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "generation_dataloader"):
            raise TypeError("RankingEvaluation needs a data module with generation_dataloader(), catalog and "
                            "tokenizer (rec_lightning.data.RecDataModule)")
        return datamodule

    def _evaluator(self, datamodule: Any, num_beams: int, keep_predictions: bool) -> RankingEvaluator:
        tokenizer = datamodule.tokenizer
        return RankingEvaluator(datamodule.catalog, tokenizer.get_vocab(), tokenizer.eos_token_id, num_beams,
                                self.ks, self.renormalize, keep_predictions)

    def _log(self, pl_module: pl.LightningModule, prefix: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if name in ("count", "num_beams", "ambiguous_targets"):
                continue
            # already summed over ranks by the metric: every rank logs the same value
            pl_module.log(f"{prefix}/{name}", float(value), prog_bar=name in self.prog_bar, sync_dist=False,
                          rank_zero_only=False)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validations_seen += 1
        if self.validations_seen % self.every_n_validations:
            return
        datamodule = self._datamodule(trainer)
        model = self._language_model(pl_module)
        keep = self.validation_output_dir is not None or self.num_logged_predictions > 0
        evaluator = self._evaluator(datamodule, self.num_beams, keep_predictions=keep).to(pl_module.device)
        loader = datamodule.generation_dataloader(self.split, limit=self.limit, seed=self.seed,
                                                  batch_size=self.batch_size)
        was_training = model.training
        model.eval()
        for batch in loader:  # sharded: every rank gets as many batches (padding rows are not counted)
            run_sharded(model, evaluator.update, model, _to_device(batch, pl_module.device))
        model.train(was_training)
        self.last_metrics = evaluator.compute()
        self._log(pl_module, "val", self.last_metrics)
        if keep:
            examples = loader.dataset.examples
            records = evaluator.records([e.prompt for e in examples], [e.row for e in examples])
            if trainer.is_global_zero and self.validation_output_dir is not None:
                write_results(Path(self.validation_output_dir) / f"step_{trainer.global_step}", records,
                              {**self.last_metrics, "split": self.split, "global_step": trainer.global_step})
            if trainer.is_global_zero and self.num_logged_predictions > 0:
                table = prediction_table(records[: self.num_logged_predictions], examples, datamodule.catalog)
                log_prediction_table(trainer, table)
        log.info("ranking on %d %s rows at beam %d: %s", self.last_metrics["count"], self.split, self.num_beams,
                 {k: round(v, 4) for k, v in self.last_metrics.items() if k.startswith(("hr@10", "ndcg@10"))})

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        define_best_summaries(trainer, [f"val/{name}" for name in sorted({"hr@10", "ndcg@10", *self.prog_bar})])

    # ------------------------------------------------------------------ test
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "test":
            if not hasattr(pl_module, "test_step_fn"):
                raise TypeError(f"{type(pl_module).__name__} has no test_step_fn hook; RankingEvaluation's test "
                                "works with SFTModule and GRPOModule")
            pl_module.test_step_fn = self._test_step

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test = self._evaluator(self._datamodule(trainer), self.test_num_beams,
                                     keep_predictions=True).to(pl_module.device)

    def _test_step(self, pl_module: pl.LightningModule, batch: dict, batch_idx: int) -> None:
        model = self._language_model(pl_module)
        run_sharded(model, self._test.update, model, batch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        evaluator, self._test = self._test, None
        metrics = evaluator.compute()
        self._log(pl_module, "test", metrics)
        datamodule = self._datamodule(trainer)
        examples = datamodule.generation_examples("test")
        records = evaluator.records([e.prompt for e in examples], [e.row for e in examples])
        if trainer.is_global_zero:
            default = Path(trainer.log_dir or trainer.default_root_dir) / "test_results"
            output_dir = Path(self.test_output_dir) if self.test_output_dir else default
            results_path, _ = write_results(output_dir, records, metrics)
            log.info("test results written to %s", results_path)
        self.last_metrics = metrics

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "test" and getattr(pl_module, "test_step_fn", None) == self._test_step:
            pl_module.test_step_fn = None


PREDICTION_COLUMNS = ["row", "history_titles", "target_title", "target_sid", "hit@5", "top5_titles", "top5_sids"]


def prediction_table(records: Sequence[dict], examples: Sequence[Any], catalog) -> list[list[Any]]:
    """Rows of :data:`PREDICTION_COLUMNS` for ``records`` (``evaluate``'s format) and their examples."""
    by_row = {example.row: example for example in examples}
    rows = []
    for record in records:
        history = by_row[record["row"]].history_item_ids if record["row"] in by_row else ()
        titles = " | ".join(catalog.title_of(item) for item in history if item in catalog)
        top5 = record["predict"][:5]
        rows.append([record["row"], titles, record["target_title"], record["output"], record["output"] in top5,
                     " | ".join(record["predict_titles"][:5]), " ".join(top5)])
    return rows


def log_prediction_table(trainer: pl.Trainer, table: list[list[Any]]) -> None:
    """A ``wandb.Table`` per ``WandbLogger``; a CSV file in the log folder of the other loggers (once per folder)."""
    from lightning.pytorch.loggers import WandbLogger

    written: set[Path] = set()
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table("val/predictions", columns=PREDICTION_COLUMNS, data=table, step=trainer.global_step)
            continue
        folder = Path(getattr(logger, "log_dir", None) or trainer.log_dir or trainer.default_root_dir)
        if folder in written:
            continue
        written.add(folder)
        path = folder / "val_predictions" / f"step_{trainer.global_step}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(PREDICTION_COLUMNS)
            writer.writerows(table)
    if not trainer.loggers:
        log.info("num_logged_predictions is set but the trainer has no logger: no predictions table written")


def define_best_summaries(trainer: pl.Trainer, names: Sequence[str]) -> None:
    """``define_metric(name, summary="max")`` on every ``WandbLogger``: the run summary keeps each metric's best."""
    from lightning.pytorch.loggers import WandbLogger

    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            for name in names:
                logger.experiment.define_metric(name, summary="max")


def _to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}

"""``RankingPredictionWriter``: ``predict`` ranks each row like ``evaluate`` and writes its files.

``python -m rec_lightning predict --config RUN_CONFIG --ckpt_path CKPT`` on an SFT or GRPO module
decodes the predict split's next-item prompts (the test split) with exact constrained beam search,
returns each row's ranked items from ``predict_step`` (``index``, ``item_ids`` [B, N] with -1 past the
end, ``sids``, ``scores``), and writes ``eval_results.json`` and ``metrics.json`` in ``evaluate``'s
format to ``<log_dir>/predictions`` (or ``output_dir``). On a SASRec module it ranks every item for
each row's history and writes the same files as ``baseline --kind sasrec`` (one process: SASRec's
rankings are not gathered across DDP ranks). The CLI adds this callback to ``predict``
when the config has none. Under sharding (``ModelParallelStrategy``) decoding runs through
``run_sharded``, and the padding rows that give every rank as many batches are left out of every
answer and file. It never replaces the files of an earlier run: a folder that already holds
them is refused before decoding starts, unless ``overwrite`` is set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch

from rec_lightning.errors import ConfigurationError, OutputExistsError
from rec_lightning.evaluation.metrics import DEFAULT_KS
from rec_lightning.evaluation.ranking import (METRICS_FILE, RankingEvaluator, check_empty_rows, existing_results,
                                             write_results)
from rec_lightning.modules.sharding import run_sharded

log = logging.getLogger(__name__)

#: Sub-folder of the run's log folder that receives the files when ``output_dir`` is not given.
DEFAULT_SUBFOLDER = "predictions"


class RankingPredictionWriter(pl.Callback):
    """Constrained beam search rankings as the predict step of SFTModule / GRPOModule.

    Args:
        num_beams: beam width = length of each ranked list.
        ks: cut-offs K of the metrics written beside the rankings (those above ``num_beams`` dropped).
        renormalize: renormalise step log-probabilities over the allowed tokens (as ``evaluate``).
        output_dir: folder for ``eval_results.json`` and ``metrics.json`` (default ``<log_dir>/predictions``).
        overwrite: replace the files of an earlier run in that folder (off: such a folder is refused).
    """

    def __init__(self, num_beams: int = 50, ks: Sequence[int] = DEFAULT_KS, renormalize: bool = False,
                 output_dir: str | None = None, overwrite: bool = False) -> None:
        self.num_beams = num_beams
        self.ks = tuple(ks)
        self.renormalize = renormalize
        self.output_dir = output_dir
        self.overwrite = overwrite
        self.last_metrics: dict[str, Any] = {}
        self.written: Path | None = None
        self._evaluator: RankingEvaluator | None = None
        self._item_results: Any = None
        self._test_records: dict[int, Any] = {}

    def output_folder(self, trainer: pl.Trainer) -> Path:
        """Where the files go: ``output_dir``, else ``<log_dir or default_root_dir>/predictions``."""
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / DEFAULT_SUBFOLDER

    def check_output(self, trainer: pl.Trainer) -> None:
        """Refuse a folder holding an earlier run's results (before any decoding).

        Raises:
            OutputExistsError: ``eval_results.json`` or ``metrics.json`` is there and ``overwrite`` is off.
        """
        folder = self.output_folder(trainer)
        found = existing_results(folder)
        if found and not self.overwrite:
            raise OutputExistsError(f"{folder} already holds {' and '.join(found)} from an earlier run. Fix: pass "
                                    "another --trainer.callbacks.output_dir (or logger version), or set "
                                    "--trainer.callbacks.overwrite true to replace those files")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        if not hasattr(pl_module, "predict_step_fn"):
            raise TypeError(f"{type(pl_module).__name__} has no predict_step_fn hook; RankingPredictionWriter works "
                            "with SFTModule, GRPOModule and SASRecModule")
        if _is_item_scorer(pl_module) and trainer.world_size > 1:
            raise ConfigurationError("SASRec predict writes one process's rankings; run it with --trainer.devices 1 "
                                     "(or rank with `python -m rec_lightning baseline --kind sasrec`)")
        if trainer.is_global_zero:
            self.check_output(trainer)
        pl_module.predict_step_fn = self._predict_items if _is_item_scorer(pl_module) else self._predict_step

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = _datamodule(trainer)
        if _is_item_scorer(pl_module):
            from rec_lightning.evaluation.item_ranking import RankingResults

            self._item_results = RankingResults(pl_module.ranker, self.num_beams, self.ks)
            self._test_records = {record.row: record for record in datamodule.records("test")}
            return
        tokenizer = datamodule.tokenizer
        self._evaluator = RankingEvaluator(datamodule.catalog, tokenizer.get_vocab(), tokenizer.eos_token_id,
                                           self.num_beams, self.ks, self.renormalize,
                                           keep_predictions=True).to(pl_module.device)

    def _predict_step(self, pl_module: pl.LightningModule, batch: dict, batch_idx: int) -> dict[str, Any]:
        model = getattr(pl_module, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{type(pl_module).__name__} has no causal LM at .model to decode with")
        was_training = model.training
        model.eval()
        # sharded: every rank decodes as many batches (padding rows included), with the root's weights gathered
        output = run_sharded(model, self._evaluator.update, model, batch)
        model.train(was_training)
        index = batch["index"] if "index" in batch else torch.arange(output.items.shape[0])
        return ranked_rows(output.items, output.scores, index, self._evaluator.trie.keys, self._evaluator.catalog)

    def _predict_items(self, pl_module: pl.LightningModule, batch: dict, batch_idx: int) -> dict[str, Any]:
        """SASRec: every item scored after the row's history, ranked as ``baseline --kind sasrec`` ranks them."""
        scores = pl_module.network.score_histories(batch["input_ids"]).float().cpu()  # [B, V]
        rows = batch["row"].tolist()
        inputs = ["".join(self._test_records[row].history_sids) for row in rows]
        items = self._item_results.update(scores, batch["target_item_id"].tolist(), rows, inputs)  # ranked once
        return {"index": batch["row"].cpu(), "item_ids": items, "scores": scores.gather(1, items.clamp(min=0))}

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if _is_item_scorer(pl_module):
            results, self._item_results = self._item_results, None
            metrics = results.compute()
            metrics.update(split="test", stage="predict", global_step=trainer.global_step, model="sasrec")
            self._write(trainer, results.records, metrics)
            return
        evaluator, self._evaluator = self._evaluator, None
        metrics: dict[str, Any] = evaluator.compute()
        examples = _datamodule(trainer).predict_dataloader().dataset.examples
        records = evaluator.records([e.prompt for e in examples], [e.row for e in examples])
        metrics.update(split="test", stage="predict", global_step=trainer.global_step)
        self._write(trainer, records, metrics)

    def _write(self, trainer: pl.Trainer, records: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
        """Write ``eval_results.json`` and ``metrics.json`` (rank 0), even when most rows are empty (for inspection,
        as ``evaluate`` does), then fail on that like ``evaluate``."""
        self.last_metrics = metrics
        if not trainer.is_global_zero:
            return
        folder = self.output_folder(trainer)
        try:
            check_empty_rows(records, metrics)
        finally:
            results_path, _ = write_results(folder, records, metrics)
            self.written = folder
            log.info("predict: %d rows ranked, %d items each, hr@10 %.4f; wrote %s and %s", metrics["count"],
                     self.num_beams, metrics.get("hr@10", float("nan")), results_path, folder / METRICS_FILE)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        hooks = (self._predict_step, self._predict_items)
        if stage == "predict" and getattr(pl_module, "predict_step_fn", None) in hooks:
            pl_module.predict_step_fn = None


def ranked_rows(items: torch.Tensor, scores: torch.Tensor, index: torch.Tensor, keys: Sequence[str],
                catalog) -> dict[str, Any]:
    """``predict_step``'s answer for the real rows of a decoded batch; padding rows (``index`` -1) are dropped.

    Args:
        items: ``[B, N]`` trie keys of each row's ranked items, -1 past the end.
        scores: ``[B, N]`` their scores.
        index: ``[B]`` dataset index of each row; -1 marks a padding row (equal batches per rank under sharding,
            :class:`~rec_lightning.data.sampling.PaddedRows`).
        keys: the trie's SID string of each key.
        catalog: the :class:`~rec_lightning.sids.codec.ItemCatalog` (``items_with_sid``).

    Returns:
        ``index`` ``[R]``, ``item_ids`` ``[R, N]`` (the first item of each SID, -1 past the end), ``sids`` (R lists of
        SID strings) and ``scores`` ``[R, N]``, for the ``R`` real rows, on the CPU.
    """
    real = index.cpu() >= 0  # [B]
    items, scores, index = items.cpu()[real], scores.cpu()[real], index.cpu()[real]
    sids = [[keys[k] for k in row if k >= 0] for row in items.tolist()]
    item_ids = torch.full(items.shape, -1, dtype=torch.long)  # [R, N]
    for number, row in enumerate(sids):
        if row:
            item_ids[number, : len(row)] = torch.tensor([catalog.items_with_sid(sid)[0] for sid in row], dtype=torch.long)
    return {"index": index, "item_ids": item_ids, "sids": sids, "scores": scores}


def _is_item_scorer(pl_module: pl.LightningModule) -> bool:
    """A module that scores every item from a history (SASRec's ``ranker`` + ``network``), not a causal LM that
    decodes SIDs (both are set in the module's own ``setup``, which runs after this callback's)."""
    return hasattr(pl_module, "ranker") and hasattr(pl_module, "network") and not hasattr(pl_module, "model")


def _datamodule(trainer: pl.Trainer) -> Any:
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "predict_dataloader") or not hasattr(datamodule, "catalog"):
        raise TypeError("RankingPredictionWriter needs a data module with predict_dataloader(), catalog and tokenizer "
                        "(rec_lightning.data.RecDataModule)")
    return datamodule

"""Ranking evaluation of next-item prompts: decode, score against each row's target, keep the results.

:class:`RankingEvaluator` is shared by the validation callback, the modules' test step and the
``evaluate`` command (no Lightning here). A hit is the predicted SID equal to the target's SID, as in
the original; targets whose SID several items share are counted as ``ambiguous_targets``. Results
are written as MiniOneRec's ``eval_results.json`` records (``input``, ``output``, ``predict``) plus
item ids, titles and scores, and a ``metrics.json``, each atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from torchmetrics.aggregation import SumMetric

from rec_lightning.errors import EmptyResultsError
from rec_lightning.evaluation.metrics import DEFAULT_KS, RankingMetrics, metric_ks, target_ranks
from rec_lightning.files.atomic import write_json_atomic
from rec_lightning.generation.decoding import DecodingOutput, constrained_beam_search
from rec_lightning.generation.trie import SIDTrie
from rec_lightning.sids.codec import ItemCatalog

RESULTS_FILE = "eval_results.json"
METRICS_FILE = "metrics.json"



#: ``evaluate`` and ``predict`` fail when more than this share of rows got no item from decoding.
EMPTY_ROWS_LIMIT = 0.5

log = logging.getLogger(__name__)


class RankingEvaluator:
    """Constrained beam search over batches of prompts, with HR/NDCG/MRR and optional predictions.

    Args:
        catalog: the items (targets are item ids of this catalog).
        token_ids: SID token string -> token id (``tokenizer.get_vocab()``).
        eos_token_id: the tokenizer's EOS id (ends every response).
        num_beams: beam width = length of each ranked list.
        ks: cut-offs; those above ``num_beams`` are dropped.
        renormalize: renormalise step log-probabilities over the allowed tokens.
        keep_predictions: keep ranked lists (on CPU) for :meth:`records`.
        rerank: ``(items [R, N], scores [R, N], histories [R, H]) -> (items, scores)``, applied to each batch's
            decoded lists before they are scored (e.g. :class:`rec_lightning.modules.transition_prior.TransitionPrior`);
            the batch must then carry ``history_item_ids``.
    """

    def __init__(self, catalog: ItemCatalog, token_ids: Mapping[str, int], eos_token_id: int, num_beams: int = 50,
                 ks: Sequence[int] = DEFAULT_KS, renormalize: bool = False, keep_predictions: bool = False,
                 rerank: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
                 ) -> None:
        self.rerank = rerank
        self.catalog = catalog
        self.num_beams = num_beams
        self.renormalize = renormalize
        self.keep_predictions = keep_predictions
        self.trie = SIDTrie.from_catalog(catalog, token_ids, eos_token_id)
        self.item_to_key = self.trie.catalog_item_index(catalog)  # [max item id + 1] trie index of each item's SID
        self.key_is_ambiguous = torch.tensor([len(catalog.items_with_sid(key)) > 1 for key in self.trie.keys])
        self.metrics = RankingMetrics(metric_ks(num_beams, ks))
        self.ambiguous = SumMetric()
        self._predictions: list[dict[str, torch.Tensor]] = []

    def to(self, device: torch.device | str) -> "RankingEvaluator":
        """Move the trie and metric states to ``device`` (call it before decoding under DDP, so a
        process with no rows still syncs its metric states on the right device)."""
        device = torch.device(device)
        if self.trie.device != device:
            self.trie = self.trie.to(device)
            self.item_to_key = self.item_to_key.to(device)
            self.key_is_ambiguous = self.key_is_ambiguous.to(device)
            self.metrics = self.metrics.to(device)
            self.ambiguous = self.ambiguous.to(device)
        return self

    @torch.no_grad()
    def update(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> DecodingOutput:
        """Decode one left-padded batch (``input_ids``, ``attention_mask``, ``target_item_id``, ``index``).

        Rows whose ``index`` is negative are padding (equal batches per rank under sharding): they are
        decoded, so every rank runs the same forwards, but neither counted nor kept.
        """
        input_ids = batch["input_ids"]
        self.to(input_ids.device)
        output = constrained_beam_search(model, input_ids, batch["attention_mask"], self.trie, self.num_beams,
                                         self.renormalize)
        self.score(output, batch)
        return output

    def score(self, output: DecodingOutput, batch: Mapping[str, torch.Tensor]) -> None:
        """Count the decoded ``output`` (``[B, N]`` items) of ``batch`` in the metrics, skipping padding rows."""
        device = output.items.device
        target_ids = batch["target_item_id"].to(device)  # [B]
        real = (batch["index"].to(device) >= 0) if "index" in batch else torch.ones_like(target_ids, dtype=torch.bool)
        items, scores, target_ids = output.items[real], output.scores[real], target_ids[real]  # [R, N], [R, N], [R]
        if self.rerank is not None:
            if "history_item_ids" not in batch:
                raise ValueError("re-ranking needs each row's item history: the batch has no history_item_ids")
            items, scores = self.rerank(items, scores, batch["history_item_ids"].to(device)[real])
        targets = self.target_keys(target_ids)
        kept = DecodingOutput(items=items, scores=scores, peak_cache_bytes=output.peak_cache_bytes)
        self.metrics.update(target_ranks(items, targets), invalid_predictions(kept, self.trie.num_items))
        self.ambiguous.update(self.key_is_ambiguous[targets.clamp(min=0)].logical_and(targets >= 0).sum())
        if self.keep_predictions:
            index = batch["index"].to(device)[real] if "index" in batch else torch.full_like(target_ids, -1)
            self._predictions.append({"index": index.cpu(), "items": items.cpu(), "scores": scores.cpu(),
                                      "target_item_id": target_ids.cpu()})

    def target_keys(self, target_ids: torch.Tensor) -> torch.Tensor:
        """``[R]`` trie key of each target item id (-1 for an id outside the catalog: never a hit)."""
        item_to_key = self.item_to_key.to(target_ids.device)
        known = (target_ids >= 0) & (target_ids < item_to_key.numel())
        return torch.where(known, item_to_key[target_ids.clamp(0, item_to_key.numel() - 1)], -1)

    def compute(self) -> dict[str, float]:
        """Metrics over every row seen by every process (sum states, synced when distributed)."""
        results = {name: value.item() for name, value in self.metrics.compute().items()}
        results["ambiguous_targets"] = float(self.ambiguous.compute().item())
        results["num_beams"] = self.num_beams
        return {name: (int(value) if name in ("invalid", "count", "ambiguous_targets") else value)
                for name, value in results.items()}

    def reset(self) -> None:
        self.metrics.reset()
        self.ambiguous.reset()
        self._predictions = []

    def gathered_predictions(self) -> dict[str, torch.Tensor]:
        """This process's kept predictions, joined with every other process's, ordered by row index."""
        local = {key: torch.cat([p[key] for p in self._predictions]) if self._predictions else torch.empty(0)
                 for key in ("index", "items", "scores", "target_item_id")}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
            parts = [p for p in parts if p["index"].numel() > 0]
            local = {key: torch.cat([p[key] for p in parts]) for key in local} if parts else local
        order = local["index"].argsort()
        return {key: value[order] for key, value in local.items()}

    def records(self, prompts: Sequence[str] | None = None, rows: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One ``eval_results.json`` record per row, in row order (all processes' rows).

        Args:
            prompts: prompt text per dataset index (``input``); ``""`` when not given.
            rows: split row per dataset index (default: the index itself).
        """
        predictions = self.gathered_predictions()
        records = []
        for index, items, scores, target in zip(predictions["index"].tolist(), predictions["items"].tolist(),
                                                predictions["scores"].tolist(), predictions["target_item_id"].tolist()):
            predicted = [self.trie.keys[i] for i in items if i >= 0]
            target_sid = self.catalog.sid_of(target) if target in self.catalog else ""
            records.append({
                "input": prompts[index] if prompts is not None else "",
                "output": target_sid,
                "predict": predicted,
                "row": rows[index] if rows is not None else index,
                "target_item_id": target,
                "target_title": self.catalog.title_of(target) if target in self.catalog else "",
                "target_sid_items": len(self.catalog.items_with_sid(target_sid)),
                "predict_item_ids": [list(self.catalog.items_with_sid(sid)) for sid in predicted],
                "predict_titles": [self.catalog.title_of(self.catalog.items_with_sid(sid)[0]) for sid in predicted],
                "scores": [round(s, 6) for s in scores[: len(predicted)]],
            })
        return records


def invalid_predictions(output: DecodingOutput, num_items: int) -> torch.Tensor:
    """Per row, returned items that are not distinct valid items (out of range or repeated); must be 0."""
    filled = torch.isfinite(output.scores)  # [B, N] slots holding a result
    out_of_range = filled & ((output.items < 0) | (output.items >= num_items))
    ordered = output.items.masked_fill(~filled, -1).sort(dim=1).values  # [B, N]
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    return out_of_range.sum(dim=1) + repeated.sum(dim=1)


def existing_results(output_dir: str | Path) -> list[str]:
    """The result files (``eval_results.json``, ``metrics.json``) an earlier run left in ``output_dir``."""
    return [name for name in (RESULTS_FILE, METRICS_FILE) if (Path(output_dir) / name).exists()]


def write_results(output_dir: str | Path, records: list[dict[str, Any]],
                  metrics: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``eval_results.json`` and ``metrics.json`` into ``output_dir`` (each atomically)."""
    output_dir = Path(output_dir)
    return (write_json_atomic(output_dir / RESULTS_FILE, records),
            write_json_atomic(output_dir / METRICS_FILE, dict(metrics)))


def check_empty_rows(records: list, metrics: dict, limit: float = EMPTY_ROWS_LIMIT) -> None:
    """Count rows whose decode returned no item (``metrics['empty_rows']``); fail when most rows are empty.

    Raises:
        EmptyResultsError: more than ``limit`` of the rows got no item.
    """
    empty = sum(1 for record in records if not record["predict"])
    metrics["empty_rows"] = empty
    if empty:
        log.warning("%d of %d rows got no item from decoding", empty, len(records))
    if records and empty > limit * len(records):
        raise EmptyResultsError(f"decoding returned no item for {empty} of {len(records)} rows, so the metrics mean "
                                "nothing (the files were written for inspection). Fix: check the checkpoint (damaged "
                                "or untrained weights give -inf/NaN scores) and that --data_dir is the data it was "
                                "trained on")

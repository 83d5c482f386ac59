"""Ranked lists of SIDs from per-item scores, scored and written like ``evaluate``'s beam search results.

Baselines (popularity, transition, SASRec) score every catalog item. A hit is counted as in
:mod:`rec_lightning.evaluation.ranking`: the predicted SID equal to the target's SID. Items sharing a SID
collapse into one entry, placed where the first of them ranks. Item order is by score, descending;
ties go to the smaller item index (a stable sort over columns in item-id order), so a ranking is
deterministic. Records and metrics carry the same keys as ``evaluate``'s, so ``report`` compares a
baseline with any LLM run row by row.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from rec_lightning.evaluation.metrics import DEFAULT_KS, RankingMetrics, metric_ks, target_ranks
from rec_lightning.sids.codec import ItemCatalog


class SIDRanker:
    """Turn ``[B, V]`` item scores into ``[B, N]`` ranked SID keys, and score them against targets.

    Column ``j`` of a score matrix is item id ``j`` (``V = max item id + 1``); columns of ids missing
    from the catalog are never ranked.

    Args:
        catalog: the items; its distinct SIDs (``catalog.sids``) are the keys.
    """

    def __init__(self, catalog: ItemCatalog) -> None:
        self.catalog = catalog
        self.keys = catalog.sids  # key index -> SID
        key_of_sid = {sid: k for k, sid in enumerate(self.keys)}
        self.num_columns = max(catalog.item_ids) + 1
        key_of_item = torch.full((self.num_columns,), -1, dtype=torch.long)
        for item in catalog:
            key_of_item[item.item_id] = key_of_sid[item.sid]
        self.key_of_item = key_of_item  # [V] key of each item id, -1 for ids not in the catalog
        self.key_is_ambiguous = torch.tensor([len(catalog.items_with_sid(s)) > 1 for s in self.keys])

    def rank(self, scores: torch.Tensor, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The top ``num_items`` SID keys of each row, and each key's best item.

        Args:
            scores: ``[B, V]`` item scores (higher is better).
            num_items: length of each ranked list (at most the number of distinct SIDs).

        Returns:
            ``keys [B, N]`` (key indices, best first) and ``items [B, N]`` (the item id that placed each key).
        """
        if scores.shape[-1] != self.num_columns:
            raise ValueError(f"scores have {scores.shape[-1]} columns, the catalog needs {self.num_columns}")
        num_items = min(num_items, len(self.keys))
        scores = scores.float().masked_fill(self.key_of_item[None, :] < 0, float("-inf"))  # [B, V]
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # [B, V] item ids, best first
        position = torch.empty_like(order)
        position.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))  # [B, V] rank of each item
        keys = self.key_of_item.clamp(min=0).expand_as(order)  # [B, V]
        big = torch.full((scores.shape[0], len(self.keys)), order.shape[1], dtype=torch.long)
        masked = position.masked_fill(self.key_of_item[None, :] < 0, order.shape[1])
        key_position = big.scatter_reduce(1, keys, masked, reduce="amin")  # [B, K] rank of each key's best item
        ranked = key_position.argsort(dim=1, stable=True)[:, :num_items]  # [B, N] keys, best first
        best_item = order.gather(1, key_position.gather(1, ranked))  # [B, N] the item that placed each key
        return ranked, best_item

    def target_keys(self, target_item_ids: Sequence[int]) -> torch.Tensor:
        """``[B]`` key of each target item (``-1`` when not in the catalog: always a miss)."""
        ids = torch.tensor(list(target_item_ids), dtype=torch.long)
        known = (ids >= 0) & (ids < self.num_columns)
        return torch.where(known, self.key_of_item[ids.clamp(0, self.num_columns - 1)], -1)


class RankingResults:
    """Accumulates ranked lists of a split: metrics (as ``evaluate``) and ``eval_results.json`` records.

    Args:
        ranker: the catalog's :class:`SIDRanker`.
        num_items: list length (``num_beams`` in the metrics, for ``report``).
        ks: cut-offs; those above ``num_items`` are dropped.
    """

    def __init__(self, ranker: SIDRanker, num_items: int = 50, ks: Sequence[int] = DEFAULT_KS) -> None:
        self.ranker = ranker
        self.num_items = num_items
        self.metrics = RankingMetrics(metric_ks(num_items, ks))
        self.ambiguous = 0
        self.records: list[dict[str, Any]] = []

    def update(self, scores: torch.Tensor, target_item_ids: Sequence[int], rows: Sequence[int],
               inputs: Sequence[str], shown_scores: torch.Tensor | None = None) -> torch.Tensor:
        """Rank one batch of ``[B, V]`` item scores and score it against its targets; returns the ranked items
        ``[B, num_items]`` (the best item of each SID, best first).

        Args:
            shown_scores: ``[B, V]`` what the records' ``scores`` show (default: ``scores``), e.g. the
                transition counts behind a tie-broken rank score.
        """
        keys, best_items = self.ranker.rank(scores, self.num_items)
        shown = scores if shown_scores is None else shown_scores
        key_scores = shown.double().gather(1, best_items)  # [B, N]
        targets = self.ranker.target_keys(target_item_ids)  # [B]
        self.metrics.update(target_ranks(keys, targets), torch.zeros(len(targets), dtype=torch.long))
        self.ambiguous += int((self.ranker.key_is_ambiguous[targets.clamp(min=0)] & (targets >= 0)).sum())
        catalog = self.ranker.catalog
        for row_keys, row_scores, target, row, text in zip(keys.tolist(), key_scores.tolist(), target_item_ids, rows,
                                                           inputs):
            predicted = [self.ranker.keys[k] for k in row_keys]
            target_sid = catalog.sid_of(target) if target in catalog else ""
            self.records.append({
                "input": text,
                "output": target_sid,
                "predict": predicted,
                "row": row,
                "target_item_id": target,
                "target_title": catalog.title_of(target) if target in catalog else "",
                "target_sid_items": len(catalog.items_with_sid(target_sid)),
                "predict_item_ids": [list(catalog.items_with_sid(sid)) for sid in predicted],
                "predict_titles": [catalog.title_of(catalog.items_with_sid(sid)[0]) for sid in predicted],
                "scores": [round(s, 6) for s in row_scores],
            })
        return best_items

    def compute(self) -> dict[str, Any]:
        """``hr@K``, ``ndcg@K``, ``mrr``, ``invalid``, ``count``, ``ambiguous_targets``, ``num_beams``."""
        results: dict[str, Any] = {name: value.item() for name, value in self.metrics.compute().items()}
        results["invalid"], results["count"] = int(results["invalid"]), int(results["count"])
        results["ambiguous_targets"] = self.ambiguous
        results["num_beams"] = self.num_items
        return results

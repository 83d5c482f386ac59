"""Ranking metrics for next-item recommendation with one relevant item per row.

With ``rank`` the 0-based position of the target in the returned list (a miss when absent):
``HR@K = [rank < K]``, ``NDCG@K = [rank < K] / log2(rank + 2)`` (the ideal DCG is 1), and
``MRR = 1 / (rank + 1)`` over the whole returned list (0 for a miss), each averaged over rows, as
MiniOneRec's calc.py computes them. States are sums, so they are exact under DDP whatever the
number of rows per rank (torchmetrics' retrieval metrics are not: see environment.md).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric

from rec_lightning.errors import ConfigurationError

DEFAULT_KS = (1, 3, 5, 10, 20, 50)


def metric_ks(num_beams: int, ks: Sequence[int] = DEFAULT_KS) -> tuple[int, ...]:
    """The cut-offs that fit in a list of ``num_beams`` items (``K <= num_beams``, as calc.py)."""
    fitting = tuple(sorted(k for k in set(ks) if 0 < k <= num_beams))
    if not fitting:
        raise ConfigurationError(f"no cut-off in {tuple(ks)} fits a list of {num_beams} items; use num_beams >= {min(ks)}")
    return fitting


def target_ranks(items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based position of each row's target in its ranked list, ``-1`` when absent.

    Args:
        items: ``[B, N]`` ranked item indices (``-1`` = no item).
        targets: ``[B]`` the target's item index (``-1`` = not in the catalog: always a miss).
    """
    hits = (items == targets[:, None]) & (targets[:, None] >= 0)  # [B, N]
    first = hits.int().argmax(dim=1)  # first hit (0 if none)
    return torch.where(hits.any(dim=1), first, torch.full_like(first, -1))


class RankingMetrics(Metric):
    """HR@K, NDCG@K, MRR and the invalid-prediction count, from target ranks.

    Args:
        ks: cut-offs, e.g. ``metric_ks(num_beams)``.

    ``update(ranks, invalid=None)``: ``ranks`` ``[B]`` 0-based, negative for a miss; ``invalid``
    ``[B]`` predictions per row that are not valid catalog items (must be 0 for our decoder).
    ``compute()`` returns ``{"hr@K": ..., "ndcg@K": ..., "mrr": ..., "invalid": ..., "count": ...}``.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: Sequence[int] = DEFAULT_KS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) < 1:
            raise ConfigurationError(f"cut-offs must be positive integers, got {tuple(ks)}")
        self.add_state("hits", torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ndcg", torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("reciprocal_rank", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("invalid", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, ranks: torch.Tensor, invalid: torch.Tensor | None = None) -> None:
        ranks = ranks.long().to(self.count.device)  # [B]
        hit = ranks >= 0
        ks = torch.tensor(self.ks, device=ranks.device)
        within = hit[:, None] & (ranks[:, None] < ks[None, :])  # [B, len(ks)]
        gain = 1.0 / torch.log2(ranks.clamp(min=0).double() + 2.0)  # [B]
        self.hits += within.double().sum(dim=0)
        self.ndcg += (within.double() * gain[:, None]).sum(dim=0)
        self.reciprocal_rank += torch.where(hit, 1.0 / (ranks.clamp(min=0).double() + 1.0), 0.0).sum()
        if invalid is not None:
            self.invalid += invalid.long().to(self.count.device).sum()
        self.count += ranks.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp(min=1).double()
        results: dict[str, torch.Tensor] = {}
        for i, k in enumerate(self.ks):
            results[f"hr@{k}"] = self.hits[i] / count
        for i, k in enumerate(self.ks):
            results[f"ndcg@{k}"] = self.ndcg[i] / count
        results["mrr"] = self.reciprocal_rank / count
        results["invalid"] = self.invalid.clone()
        results["count"] = self.count.clone()
        return results

"""A transition prior at decoding: the beam list re-ranked with the transition baseline's probabilities (issue 29).

Each decoded beam (a SID ``s`` with summed log-probability ``log p_LM(s | prompt)``) gets the fused score

    score'(s) = log p_LM(s | prompt) + weight * log((1 - mix) * p_T(s | h) + mix * p_pop(s))

where ``p_T`` is the transition baseline's probability after the row's item history ``h``
(:meth:`rec_lightning.modules.transition_reward.TransitionReward.probabilities`: recency-weighted transition
counts of the train split, normalised; popularity for histories without any), ``p_pop`` the train-target
counts with add-one smoothing, and ``mix`` (0.1) keeps every beam above probability 0. A SID shared by several
items gets the sum over them. The beams are sorted by ``score'`` (stable: ties keep the beam order); no beam is
added or removed, so HR@num_beams is unchanged and the top of the list moves. ``weight`` 0 is the model alone.

Why: on Industrial the from-scratch LM finds the target more often (HR@10) and the count model puts it first
more often (HR@1); re-ranking the LM's candidates by both lifted validation NDCG@10 by ~16% in
``benchmarks/rerank_offline.py`` (weight chosen on half the valid rows, reported on the other half). Choose
``weight`` (and the decay, like the baseline's) on the valid split, never on test.

Cost: the transition fit is one pass over the train rows (O(pairs) memory); each batch of B rows costs one
sparse x dense product, O(pairs * B), and ``[B, V]`` + ``[B, K]`` float64 (V items, K distinct SIDs).
"""

from __future__ import annotations

from typing import Sequence

import torch

from rec_lightning.data.collate import unpad_histories
from rec_lightning.data.records import SequenceRecord
from rec_lightning.errors import ConfigurationError
from rec_lightning.evaluation.metrics import target_ranks
from rec_lightning.evaluation.significance import per_row_values
from rec_lightning.modules.transition_reward import LogTransitionReward
from rec_lightning.sids.codec import ItemCatalog


class TransitionPrior:
    """Re-ranks ``[R, N]`` decoded beams (trie keys) by LM score + ``weight`` x log prior (see the module docstring).

    Args:
        train_records: the train split's rows (the counts come from these only).
        catalog: the items.
        item_to_key: ``[max item id + 1]`` trie key of each item's SID, -1 for ids not in the catalog
            (``SIDTrie.catalog_item_index``).
        num_keys: number of trie keys (distinct SIDs).
        weight: the prior's weight (0: no change).
        decay: the transition model's recency decay.
        mix: share of the smoothed popularity in the prior.
    """

    def __init__(self, train_records: Sequence[SequenceRecord], catalog: ItemCatalog, item_to_key: torch.Tensor,
                 num_keys: int, weight: float, decay: float = 0.3, mix: float = 0.1) -> None:
        if weight < 0 or not 0.0 < mix <= 1.0:
            raise ConfigurationError(f"--prior_weight must be >= 0 (got {weight}) and the mix in (0, 1] (got {mix})")
        self.teacher = LogTransitionReward(train_records, catalog, decay=decay, mix=mix)  # the prior (mixed)
        self.item_to_key = item_to_key.cpu()
        self._known = torch.nonzero(self.item_to_key >= 0).squeeze(1)  # item ids in the catalog
        self.num_keys = num_keys
        self.weight, self.decay, self.mix = weight, decay, mix
        self.choice: dict | None = None  # how the weight was chosen (``evaluate --prior_weight auto``)

    def settings(self) -> dict:
        settings = {"kind": "transition", "weight": self.weight, "decay": self.decay, "mix": self.mix}
        return settings if self.choice is None else {**settings, "chosen": self.choice}

    def key_log_probs(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, K]`` float64 log prior of every trie key (SID) after each history."""
        items = self.teacher.probabilities(histories)  # [B, V] mixed with the smoothed popularity
        keys = torch.zeros(len(histories), self.num_keys, dtype=torch.float64)
        keys.index_add_(1, self.item_to_key[self._known], items[:, self._known])
        return keys.log()

    def __call__(self, items: torch.Tensor, scores: torch.Tensor,
                 histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-rank ``items [R, N]`` (trie keys, -1 = none) by their fused scores; ``histories [R, H]`` padded with -1.

        Returns the re-ordered items and their fused scores (float32, ``-inf`` where there is no item).
        """
        if self.weight == 0 or items.numel() == 0:
            return items, scores
        device = items.device
        cpu_items = items.cpu()
        log_prior = self.key_log_probs(unpad_histories(histories)).gather(1, cpu_items.clamp(min=0))  # [R, N]
        ranked, fused = fuse(cpu_items, scores.cpu(), log_prior, self.weight)
        return ranked.to(device), fused.float().to(device)


def fuse(items: torch.Tensor, scores: torch.Tensor, log_prior: torch.Tensor,
         weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``items [R, N]`` (trie keys, -1 = none) sorted by ``scores + weight * log_prior`` (each beam's own log prior,
    ``[R, N]``), stable (ties keep the beam order), empty slots last; returns the items and their float64 fused scores."""
    fused = torch.where(items >= 0, scores.double() + weight * log_prior, float("-inf"))
    fused, order = torch.sort(fused, dim=1, descending=True, stable=True)
    return items.gather(1, order), fused


#: ``evaluate --prior_weight auto`` tries these weights (0 = the model alone) and keeps the best on valid.
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0)


def prior_weight_ndcg(prior: TransitionPrior, items: torch.Tensor, scores: torch.Tensor,
                      histories: Sequence[Sequence[int]], targets: torch.Tensor, weights: Sequence[float] = WEIGHT_GRID,
                      k: int = 10, chunk: int = 1024) -> list[float]:
    """Mean NDCG@k of the re-ranked lists for each weight in ``weights`` (the choice of ``--prior_weight auto``).

    Args:
        prior: the prior (its own ``weight`` is not used).
        items: ``[R, N]`` decoded trie keys per row, best first (-1: no item).
        scores: ``[R, N]`` their LM scores (``-inf`` where there is no item).
        histories: each row's item history.
        targets: ``[R]`` trie key of each row's target (-1: not in the catalog, never a hit).
        k: the cut-off.

    Ranks and NDCG are ``evaluate``'s (``target_ranks``, ``per_row_values``). Cost: O(R x N x len(weights)) after one ``[chunk, K]`` prior per chunk of rows.
    """
    items, scores, targets = items.cpu(), scores.cpu(), targets.cpu()
    if items.shape[0] == 0:
        raise ValueError("no rows to choose the prior weight on")
    metric = f"ndcg@{min(k, items.shape[1])}"
    totals = [0.0] * len(weights)
    for start in range(0, items.shape[0], chunk):
        part, part_targets = items[start:start + chunk], targets[start:start + chunk]
        log_prior = prior.key_log_probs(histories[start:start + chunk]).gather(1, part.clamp(min=0))  # [r, N]
        for number, weight in enumerate(weights):
            ranked, _ = fuse(part, scores[start:start + chunk], log_prior, weight)
            totals[number] += float(per_row_values(target_ranks(ranked, part_targets).numpy(), metric).sum())
    return [total / items.shape[0] for total in totals]


def choose_prior_weight(ndcg: Sequence[float], weights: Sequence[float] = WEIGHT_GRID) -> float:
    """The weight with the highest NDCG (the smallest such weight on ties: no prior unless it helps)."""
    best = max(ndcg)
    return min(weight for weight, value in zip(weights, ndcg) if value == best)

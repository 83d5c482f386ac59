"""The ``transition`` GRPO reward: how likely the transition baseline finds each completion (a dense teacher).

The transition model (:class:`rec_lightning.modules.baselines.TransitionModel`, fit here on the train split
the policy trains on) beats our from-scratch LM at the top of the list on Industrial (HR@1 0.083 vs 0.070),
unlike SASRec, so it is the teacher issue 29 proposes. For a prompt whose user history is ``h`` and a
completion whose SID is ``s``, the reward is

    p(s | h) = sum_{j in items(s)} T(h)_j / sum_j T(h)_j,    T(h)_j = sum_d decay**d * count(h_d -> j)

(the recency-weighted transition counts, normalised over the catalog); a history none of whose items has an
outgoing transition in train falls back to the popularity distribution (train-target counts), as the
baseline's own ranking does. The value lies in [0, 1] like the other rewards, it is dense (every completion
the counts reach gets a graded value, target or not) and independent of the target, like ``cf``.

``transition_log`` (:class:`LogTransitionReward`) is ``log((1 - mix) * p(s | h) + mix * p_pop(s))`` with ``p_pop`` the
add-one smoothed train-target counts: exactly the term ``evaluate --prior transition`` adds to the LM score
(:mod:`rec_lightning.modules.transition_prior`). Why a log: the policy that maximises ``E[r] - beta * KL(pi || ref)``
is ``ref * exp(r / beta)``; with ``r = log prior`` and ``beta = 1 / W`` that is ``ref * prior**W``, the fused model
``evaluate --prior transition --prior_weight W`` decodes (use ``loss.reward_scaling: none``, which keeps the
reward's scale). So GRPO with this reward distils the fused ranking into the LM itself: exactly so in expectation
over sampled groups (``group.mode: sample``); beam groups are a biased, lower-variance estimate of the same.

Leave-one-out (``leave_one_out=True``, GRPO's ``transition_leave_one_out``): GRPO's prompts are the train rows the
counts come from, so each prompt's own transition ``h_last -> target`` (and its target's popularity count) is in
them, and for a rare transition it is the only count: the reward then points at the answer the SFT model has
already fitted, which the same prior never does for a test user. With it, each prompt's prior is computed with
that user's pair and that row's target count taken out (one count each: pairs are counted once per user), the
prior a user whose next item is unknown gets. (A user whose sequence holds the same pair twice loses both.)

Cost: fitting is the baseline's (one pass over the train rows, O(pairs) memory); each call scores the B
prompts' histories with one sparse x dense product, O(pairs * B) time, ``[B, V]`` memory.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from rec_lightning.data.records import SequenceRecord
from rec_lightning.modules.baselines import TransitionModel
from rec_lightning.rl.rewards import SIDProbabilityReward
from rec_lightning.sids.codec import ItemCatalog


class TransitionReward(SIDProbabilityReward):
    """``transition`` reward: the transition baseline's probability of each completion's SID after the history.

    Args:
        train_records: the train split's rows (the counts come from these only: no valid/test leakage).
        catalog: the data's catalog (SID -> item ids).
        decay: weight ``decay**d`` of the history item ``d`` steps before the last (0: the last item only).

    Called as ``reward(completions, targets, group_size, histories=...)`` with ``histories`` one tuple of
    item ids per prompt (B of them for B x G completions).
    """

    __name__ = "transition"

    def __init__(self, train_records: Sequence[SequenceRecord], catalog: ItemCatalog, decay: float = 0.3,
                 leave_one_out: bool = False) -> None:
        super().__init__(catalog)
        self.model = TransitionModel(max(catalog.item_ids) + 1, decay=decay).fit(train_records)
        popularity = self.model.popularity.counts
        self.popularity = popularity / popularity.sum() if popularity.sum() > 0 else popularity
        self.leave_one_out = leave_one_out
        self._pairs: dict[tuple[int, int], int] | None = None  # {(a, b): count}, built on the first leave-one-out call

    @property
    def uses_target_items(self) -> bool:
        """``combine_rewards`` passes ``target_items=`` to a reward that declares this (leave-one-out)."""
        return self.leave_one_out

    def _own_counts(self, histories: Sequence[Sequence[int]], target_items: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``pair [B, V]``: 1 at each prompt's own ``(last history item -> target)`` pair (where counted);
        ``target [B, V]``: 1 at each prompt's target (its popularity count)."""
        if len(target_items) != len(histories):
            raise ValueError(f"{len(target_items)} target items for {len(histories)} histories")
        columns = self.model.num_columns
        target = torch.zeros(len(histories), columns, dtype=torch.float64)
        pair = torch.zeros_like(target)
        if self._pairs is None:
            self._pairs = self.model.pair_counts()
        counted = self._pairs
        for row, (history, item) in enumerate(zip(histories, target_items)):
            if not 0 <= item < columns:
                raise ValueError(f"leave-one-out needs each prompt's target item id; got {item} for prompt {row}")
            target[row, item] = 1.0
            last = [i for i in history if 0 <= i < columns][-1:]
            if last and counted.get((last[0], item), 0) > 0:
                pair[row, item] = 1.0
        return pair, target

    def probabilities(self, histories: Sequence[Sequence[int]],
                      target_items: Sequence[int] | None = None) -> torch.Tensor:
        """``[B, V]`` float64 next-item probabilities (each row sums to 1, or is all 0 without any train data);
        with ``target_items`` (leave-one-out) each prompt's own pair and target count are taken out first."""
        own = None if target_items is None else self._own_counts(histories, target_items)
        return self._probabilities(histories, own)

    def _probabilities(self, histories: Sequence[Sequence[int]],
                       own: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """:meth:`probabilities` given ``own = (pair, target)`` from :meth:`_own_counts` (or None: nothing out)."""
        scores = self.model.transition_scores(histories)  # [B, V]
        popularity = self.popularity.expand_as(scores)
        if own is not None:
            pair, target = own
            scores = (scores - pair).clamp_min(0.0)  # the own pair has weight decay**0 = 1
            counts = (self.model.popularity.counts - target).clamp_min(0.0)  # [B, V]
            totals = counts.sum(dim=1, keepdim=True)
            popularity = torch.where(totals > 0, counts / totals.clamp_min(1e-300), counts)
        totals = scores.sum(dim=1, keepdim=True)
        return torch.where(totals > 0, scores / totals.clamp_min(1e-300), popularity)

    def __call__(self, completions: Sequence[str], targets: Sequence[str], group_size: int, *,
                 histories: Sequence[Sequence[int]], target_items: Sequence[int] | None = None) -> list[float]:
        if self.leave_one_out and target_items is None:
            raise ValueError(f"the {self.__name__} reward with leave_one_out needs each prompt's target item id "
                             "(target_items=...)")
        return self._score(completions, group_size, self.probabilities(
            histories, target_items if self.leave_one_out else None), len(histories))


class LogTransitionReward(TransitionReward):
    """``transition_log`` reward: the log of the decoding prior, ``log((1 - mix) p_T + mix p_pop)`` (module docstring).

    Args:
        train_records, catalog, decay: as :class:`TransitionReward`.
        mix: share of the add-one smoothed popularity (> 0 keeps every completion's log finite).
    """

    __name__ = "transition_log"

    def __init__(self, train_records: Sequence[SequenceRecord], catalog: ItemCatalog, decay: float = 0.3,
                 mix: float = 0.1, leave_one_out: bool = False) -> None:
        super().__init__(train_records, catalog, decay, leave_one_out)
        if not 0.0 < mix <= 1.0:
            raise ValueError(f"the popularity mix must lie in (0, 1], got {mix}")
        counts = self.model.popularity.counts
        self.smoothed_popularity = (counts + 1.0) / (counts.sum() + counts.numel())  # [V] add-one smoothed
        self.mix = mix

    def _probabilities(self, histories: Sequence[Sequence[int]],
                       own: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """``[B, V]`` float64 prior: the transition probabilities mixed with the smoothed popularity (leave-one-out:
        both without the prompt's own counts)."""
        smoothed = self.smoothed_popularity
        if own is not None:
            counts = self.model.popularity.counts - own[1]  # [B, V]
            smoothed = (counts + 1.0) / (counts.sum(dim=1, keepdim=True) + counts.shape[1])
        return (1.0 - self.mix) * super()._probabilities(histories, own) + self.mix * smoothed

    def __call__(self, completions: Sequence[str], targets: Sequence[str], group_size: int, *,
                 histories: Sequence[Sequence[int]], target_items: Sequence[int] | None = None) -> list[float]:
        if "" in completions:
            raise ValueError("transition_log has no value for an empty completion (log 0): constrained decoding must "
                             "return an item for every group member")
        return [math.log(p) for p in super().__call__(completions, targets, group_size, histories=histories,
                                                       target_items=target_items)]

"""Count-based baselines fit on the train split: ``popularity`` and ``transition``.

- ``popularity``: score(j) = how many train rows have item j as their target. Every user gets the
  same list.
- ``transition``: score(j) = sum over the history's positions, most recent first (distance
  d = 0, 1, ...), of ``decay**d * count(h_d -> j)``, where ``count(a -> b)`` is how often b directly
  follows a in the train sequences (``decay = 0``: the last item only). Ties, and users whose history
  has no known transition, fall back to popularity, then to the smaller item index.

Counting the transitions: MiniOneRec's train rows are overlapping windows of each user's sequence
(growing prefixes, then sliding windows of 10 history items), so one real transition of a user
appears in up to 10 rows. Counting per window would weight a transition by how many windows happen
to contain it (more for transitions in the middle of long sequences). We count each distinct
adjacent pair once per user instead (``per_user``, the default): it is the number of users who made
that transition. ``per_window`` (each adjacent pair once per row) is kept for comparison.

Plain torch, no Lightning. Scores are ``[B, V]`` with column j = item id j (see
:class:`rec_lightning.evaluation.item_ranking.SIDRanker`).

Cost: the transition counts are a sparse ``[V, V]`` matrix holding only the P distinct pairs seen in train
(O(P) memory, P <= the train rows' adjacent pairs; never V x V). Scoring a batch of B histories is one
sparse x dense product, O(P * B) time, and a ``[B, V]`` result (the ranked list needs every item's score).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, Sequence

import torch

from rec_lightning.data.records import SequenceRecord
from rec_lightning.errors import ConfigurationError

PairCounting = Literal["per_user", "per_window"]


def _sequence(record: SequenceRecord) -> tuple[int, ...]:
    return (*record.history_item_ids, record.item_id)


class PopularityModel:
    """Train-target counts.

    Args:
        num_columns: score columns (max item id + 1).
    """

    def __init__(self, num_columns: int) -> None:
        self.num_columns = num_columns
        self.counts = torch.zeros(num_columns, dtype=torch.float64)  # [V]

    def fit(self, records: Sequence[SequenceRecord]) -> "PopularityModel":
        for record in records:
            if 0 <= record.item_id < self.num_columns:
                self.counts[record.item_id] += 1
        return self

    def scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, V]``: the same counts for every history."""
        return self.counts.expand(len(histories), -1).clone()


class TransitionModel:
    """Next-item counts with recency-weighted history positions, popularity for ties.

    Args:
        num_columns: score columns (max item id + 1).
        decay: weight ``decay**d`` of the history item at distance ``d`` from the end (0 = last item only).
        max_history: how many of the most recent history items are used.
        counting: ``per_user`` (each distinct adjacent pair once per user) or ``per_window`` (once per row).
    """

    def __init__(self, num_columns: int, decay: float = 0.0, max_history: int = 50,
                 counting: PairCounting = "per_user") -> None:
        if not 0.0 <= decay <= 1.0:
            raise ConfigurationError(f"decay must lie in [0, 1], got {decay}")
        if counting not in ("per_user", "per_window"):
            raise ConfigurationError(f"counting must be 'per_user' or 'per_window', got {counting!r}")
        if max_history < 1:
            raise ConfigurationError(f"max_history must be at least 1, got {max_history}")
        self.num_columns = num_columns
        self.decay = decay
        self.max_history = max_history
        self.counting = counting
        # count(a -> b) as a sparse [V, V] float64 matrix (only the pairs seen); its transpose, for scoring
        self.counts = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.float64),
                                              (num_columns, num_columns), check_invariants=True).coalesce()
        self._counts_t = self.counts.t().coalesce()
        self.popularity = PopularityModel(num_columns)

    def fit(self, records: Sequence[SequenceRecord]) -> "TransitionModel":
        self.popularity.fit(records)
        seen: set[tuple[str, int, int]] = set()
        pairs: Counter[tuple[int, int]] = Counter()
        for record in records:
            sequence = [i for i in _sequence(record) if 0 <= i < self.num_columns]
            for a, b in zip(sequence[:-1], sequence[1:]):
                if self.counting == "per_user":
                    if (record.user_id, a, b) in seen:
                        continue
                    seen.add((record.user_id, a, b))
                pairs[a, b] += 1
        if pairs:
            index = torch.tensor(list(pairs), dtype=torch.long).t()  # [2, P]
            values = torch.tensor(list(pairs.values()), dtype=torch.float64)
            self.counts = (self.counts + torch.sparse_coo_tensor(index, values, self.counts.shape,
                                                                  check_invariants=True)).coalesce()
            self._counts_t = self.counts.t().coalesce()
        return self

    def pair_counts(self) -> dict[tuple[int, int], int]:
        """``{(a, b): count(a -> b)}`` for every pair seen in train."""
        a, b = self.counts.indices().tolist()
        return {(i, j): int(c) for i, j, c in zip(a, b, self.counts.values().tolist())}

    def history_weights(self, histories: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``items [B, L]`` (most recent first, -1 = none) and their weights ``decay**d`` ``[B, L]``."""
        length = max(1, min(self.max_history, max((len(h) for h in histories), default=1)))
        items = torch.full((len(histories), length), -1, dtype=torch.long)
        for row, history in enumerate(histories):
            recent = [i for i in history if 0 <= i < self.num_columns][::-1][:length]  # most recent first
            if recent:
                items[row, : len(recent)] = torch.tensor(recent, dtype=torch.long)
        distance = torch.arange(length, dtype=torch.float64)
        weights = torch.where(distance == 0, 1.0, torch.tensor(self.decay, dtype=torch.float64) ** distance)  # [L]
        return items, weights.expand(len(histories), -1) * (items >= 0)

    def transition_scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, V]`` the recency-weighted transition counts alone: ``sum_d decay**d * counts[h_d -> .]``."""
        items, weights = self.history_weights(histories)  # [B, L], [B, L]
        # each history as a [V] vector of its items' weights (an item seen twice gets both weights), then
        # counts^T @ those vectors: one sparse x dense product, O(P * B), no [B, L, V] gather
        mixed = torch.zeros(len(histories), self.num_columns, dtype=torch.float64)
        mixed.scatter_add_(1, items.clamp(min=0), weights)  # weights of absent positions (-1) are 0
        return torch.sparse.mm(self._counts_t, mixed.t()).t()  # [B, V]

    def scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, V]`` rank scores: higher is better, ties already broken (see :meth:`ranked_scores`)."""
        return self.ranked_scores(histories)

    def order(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, V]`` item ids, best first: by transition score, then popularity, then item index."""
        popular_first = torch.sort(self.popularity.counts, descending=True, stable=True).indices  # [V]
        scores = self.transition_scores(histories)[:, popular_first]  # [B, V] columns in popularity order
        within = torch.sort(scores, dim=1, descending=True, stable=True).indices  # [B, V]
        return popular_first[within]

    def ranked_scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, V]`` scores whose descending order (ties by item index) is :meth:`order`.

        Equal to ``V - position`` of each item in :meth:`order`: a rank score, usable by
        :class:`~rec_lightning.evaluation.item_ranking.SIDRanker` with no floating-point tie issues.
        """
        order = self.order(histories)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(self.num_columns).expand_as(order))
        return (self.num_columns - ranks).double()

"""Kept reviews as compact arrays, the streaming filters, and the iterative user/item k-core.

Memory is bounded by the distinct users and items (one dict entry per raw key) plus 16 bytes per kept
review (int32 user, int32 item, int64 seconds); review texts and other fields are never held. Filters
run while streaming, in this order: minimum rating, time window, item has usable metadata. Every drop
is counted by reason; duplicates of a (user, item) pair are kept, as MiniOneRec keeps repeat purchases.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from rec_lightning.data.raw.formats import Review


@dataclass
class Interactions:
    """Kept reviews in file order: ``users``, ``items`` index into the key lists; ``timestamps`` in seconds."""

    users: np.ndarray  # [R] int32
    items: np.ndarray  # [R] int32
    timestamps: np.ndarray  # [R] int64
    user_keys: list[str]
    item_keys: list[str]
    num_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def select(self, mask: np.ndarray) -> "Interactions":
        """The reviews where ``mask`` is true (keys unchanged)."""
        return Interactions(self.users[mask], self.items[mask], self.timestamps[mask], self.user_keys, self.item_keys,
                            self.num_read, dict(self.dropped))

    def counts(self) -> dict[str, int]:
        """Interactions, distinct users and distinct items."""
        return {"interactions": len(self),
                "users": int(np.count_nonzero(np.bincount(self.users, minlength=len(self.user_keys)))),
                "items": int(np.count_nonzero(np.bincount(self.items, minlength=len(self.item_keys))))}


def collect(reviews: Iterable[Review], start: int | None = None, end: int | None = None,
            min_rating: float | None = None, usable_items: set[str] | None = None) -> Interactions:
    """Stream ``reviews`` into arrays, keeping those that pass every filter.

    Args:
        start, end: keep ``start <= timestamp < end`` (seconds; None = open).
        min_rating: keep reviews rated at least this (a review without a rating is then dropped).
        usable_items: keep only reviews of these item keys (items with usable metadata); None keeps all.
    """
    users, items, times = array("i"), array("i"), array("q")
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    dropped = {"rating below minimum": 0, "outside the time window": 0, "item without usable metadata": 0}
    num_read = 0
    for review in reviews:
        num_read += 1
        if min_rating is not None and (review.rating is None or review.rating < min_rating):
            dropped["rating below minimum"] += 1
            continue
        if (start is not None and review.timestamp < start) or (end is not None and review.timestamp >= end):
            dropped["outside the time window"] += 1
            continue
        if usable_items is not None and review.item not in usable_items:
            dropped["item without usable metadata"] += 1
            continue
        users.append(user_index.setdefault(review.user, len(user_index)))
        items.append(item_index.setdefault(review.item, len(item_index)))
        times.append(review.timestamp)
    return Interactions(np.frombuffer(users, dtype=np.int32).copy(), np.frombuffer(items, dtype=np.int32).copy(),
                        np.frombuffer(times, dtype=np.int64).copy(), list(user_index), list(item_index), num_read, dropped)


@dataclass(frozen=True)
class KCoreResult:
    """The k-core's reviews and, per round, the counts left after it."""

    interactions: Interactions
    rounds: list[dict[str, int]]


def k_core(data: Interactions, user_k: int, item_k: int) -> KCoreResult:
    """Iteratively drop users with fewer than ``user_k`` and items with fewer than ``item_k`` interactions.

    Each round removes every review of an under-threshold user or item (counted with repeats, as
    MiniOneRec counts), until no review is removed; the result is the unique maximal subset in which
    every user and item meets its threshold.
    """
    mask = np.ones(len(data), dtype=bool)
    rounds = []
    while True:
        user_counts = np.bincount(data.users[mask], minlength=len(data.user_keys))
        item_counts = np.bincount(data.items[mask], minlength=len(data.item_keys))
        bad = mask & ((user_counts[data.users] < user_k) | (item_counts[data.items] < item_k))
        if not bad.any():
            break
        mask &= ~bad
        kept = data.select(mask)
        rounds.append(kept.counts())
    return KCoreResult(data.select(mask), rounds)

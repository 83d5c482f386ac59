"""Per-user chronological sequences, item indexing, sliding windows and the two split protocols.

- Users are ranked by their first kept review in the file; each user's reviews are sorted by time
  (ties keep file order); items get ids ``0..N-1`` by first appearance in that order (MiniOneRec).
- Windows: for a user's items ``x_0..x_{n-1}`` and each ``i >= 1``, history ``x[max(0, i-H):i]`` and
  target ``x_i`` (``H = max_history``, 10 in MiniOneRec); a window's time is its target's time.
- ``chronological`` (MiniOneRec): all windows sorted by target time (stable), cut ``a:b:c`` (8:1:1)
  with ``cut_1 = n*a // total`` and ``cut_2 = n*(a+b) // total``; a user can appear in every split.
- ``leave-last-out`` (SASRec and most of the literature): per user with at least 3 interactions the
  last window is test, the one before is valid, the rest train; users with fewer go wholly to train.
  Rows of every split are written in target-time order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rec_lightning.data.raw.interactions import Interactions
from rec_lightning.errors import ConfigurationError

PROTOCOLS = ("chronological", "leave-last-out")


@dataclass(frozen=True)
class Sequences:
    """All kept interactions grouped by user (rank order), each user's oldest first.

    Attributes:
        items: ``[R]`` item id (0-based, by first appearance) per position.
        times: ``[R]`` seconds per position.
        offsets: ``[U + 1]``; user ``u`` owns positions ``offsets[u]:offsets[u+1]``.
        user_keys: raw user key per user rank.
        item_keys: raw item key per item id.
    """

    items: np.ndarray
    times: np.ndarray
    offsets: np.ndarray
    user_keys: list[str]
    item_keys: list[str]

    @property
    def num_users(self) -> int:
        return len(self.user_keys)


def build_sequences(data: Interactions) -> Sequences:
    """Group, sort and re-index ``data`` (see the module docstring)."""
    num = len(data)
    present, first_seen = np.unique(data.users, return_index=True)
    by_first = present[np.argsort(first_seen, kind="stable")]  # raw user indices in order of first review
    rank = np.full(len(data.user_keys), -1, dtype=np.int64)
    rank[by_first] = np.arange(by_first.size)
    user_rank = rank[data.users]  # [R]
    order = np.lexsort((np.arange(num), data.timestamps, user_rank))  # user, then time, then file order
    raw_items = data.items[order]
    seen, first_pos = np.unique(raw_items, return_index=True)
    item_by_first = seen[np.argsort(first_pos, kind="stable")]
    new_id = np.full(len(data.item_keys), -1, dtype=np.int64)
    new_id[item_by_first] = np.arange(item_by_first.size)
    lengths = np.bincount(user_rank, minlength=by_first.size)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Sequences(new_id[raw_items].astype(np.int32), data.timestamps[order], offsets,
                     [data.user_keys[u] for u in by_first.tolist()], [data.item_keys[i] for i in item_by_first.tolist()])


@dataclass(frozen=True)
class Windows:
    """``[W]`` arrays: target position, first history position, and user rank of each window."""

    target: np.ndarray
    start: np.ndarray
    user: np.ndarray

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def history_lengths(self) -> np.ndarray:
        return self.target - self.start


def sliding_windows(seq: Sequences, max_history: int) -> Windows:
    """One window per interaction after each user's first, ordered by (user, time)."""
    if max_history < 1:
        raise ConfigurationError(f"max_history must be at least 1, got {max_history}")
    lengths = np.diff(seq.offsets)
    user_of = np.repeat(np.arange(seq.num_users), lengths)  # [R]
    first = seq.offsets[:-1][user_of]  # [R] first position of the position's user
    positions = np.arange(seq.items.shape[0])
    is_target = positions > first
    target = positions[is_target]
    return Windows(target, np.maximum(first[is_target], target - max_history), user_of[is_target])


def split_windows(seq: Sequences, windows: Windows, protocol: str = "chronological",
                  ratio: Sequence[int] = (8, 1, 1)) -> dict[str, np.ndarray]:
    """Window indices of train / valid / test, each ordered by target time (stable).

    Args:
        protocol: ``chronological`` or ``leave-last-out``.
        ratio: train:valid:test parts of the chronological split (integers).
    """
    if protocol not in PROTOCOLS:
        raise ConfigurationError(f"unknown split protocol {protocol!r}; expected one of {PROTOCOLS}")
    target_time = seq.times[windows.target]
    by_time = np.argsort(target_time, kind="stable")  # ties: (user rank, position) order
    if protocol == "chronological":
        if len(ratio) != 3 or min(ratio) < 0 or sum(ratio) <= 0:
            raise ConfigurationError(f"split ratio must be three non-negative integers, got {list(ratio)}")
        n, total = len(windows), sum(ratio)
        cut_train, cut_valid = n * ratio[0] // total, n * (ratio[0] + ratio[1]) // total
        return {"train": by_time[:cut_train], "valid": by_time[cut_train:cut_valid], "test": by_time[cut_valid:]}
    lengths = np.diff(seq.offsets)
    last = seq.offsets[1:][windows.user] - 1  # [W] last position of the window's user
    eligible = lengths[windows.user] >= 3
    is_test = eligible & (windows.target == last)
    is_valid = eligible & (windows.target == last - 1)
    label = np.where(is_test, 2, np.where(is_valid, 1, 0))[by_time]
    return {name: by_time[label == code] for code, name in enumerate(("train", "valid", "test"))}

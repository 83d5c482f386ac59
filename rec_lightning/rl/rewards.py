"""GRPO reward functions, one contract: ``fn(completions, targets, group_size) -> list[float]``.

``completions`` holds B x G SID strings, group after group (a group = the G completions of one
prompt; for beam groups, in beam-rank order). ``targets`` holds the B x G target SIDs (each example
carries its own target, repeated over its group). Rewards (minionerec-reference.md 4.6):

- ``rule``: 1 for an exact SID match, else 0.
- ``ranking_only``: when the target is in the group, a wrong completion at beam rank i gets
  ``-(1/log2(i+2)) / sum_j 1/log2(j+2)`` (the weights sum to -1); everything else 0. Needs ranked
  groups (beam search): under sampling the position carries no rank, so it is refused there.
- ``ranking``: ``rule + ranking_only`` (the original's default).
- ``prefix``: the share of the target's leading SID levels the completion matches (0, 1/3, 2/3, 1
  for 3 levels): a denser signal than exact match.
- ``semantic``: cosine similarity of item embeddings (a ``.npy`` matrix, row = item id, given by the
  user); a SID shared by several items uses the mean of their cosines.
- ``cf``: the probability a collaborative-filtering model gives the completion after the user's item
  history (:class:`rec_lightning.modules.cf_reward.CollaborativeReward`, backed by our SASRec).
- ``transition``: the transition baseline's probability of the completion after the user's item history
  (:class:`rec_lightning.modules.transition_reward.TransitionReward`, counted on the train split): a dense
  teacher that is strong at rank 1. Reward objects with ``uses_histories = True`` (``cf``, ``transition``)
  get ``histories=`` (one tuple of item ids per prompt) as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from rec_lightning.errors import ConfigurationError
from rec_lightning.sids.codec import ItemCatalog, parse_sid

RewardFn = Callable[[Sequence[str], Sequence[str], int], list[float]]


def _check_groups(completions: Sequence[str], targets: Sequence[str], group_size: int) -> None:
    if len(completions) != len(targets):
        raise ValueError(f"{len(completions)} completions but {len(targets)} targets")
    if group_size < 1 or len(completions) % group_size:
        raise ValueError(f"{len(completions)} completions do not split into groups of {group_size}")


def rule_reward(completions: Sequence[str], targets: Sequence[str], group_size: int) -> list[float]:
    """1.0 where the completion is the target SID, else 0.0."""
    _check_groups(completions, targets, group_size)
    return [1.0 if c == t else 0.0 for c, t in zip(completions, targets)]


def rank_penalties(group_size: int) -> list[float]:
    """``w_i = -(1/log2(i+2)) / sum_{j<G} 1/log2(j+2)``; G=16 gives -0.16377, -0.10333, ..."""
    discounts = [1.0 / math.log2(i + 2) for i in range(group_size)]
    total = sum(discounts)
    return [-d / total for d in discounts]


def ranking_only_reward(completions: Sequence[str], targets: Sequence[str], group_size: int) -> list[float]:
    """Rank-aware penalty on wrong beams of groups that contain the target (0 elsewhere)."""
    _check_groups(completions, targets, group_size)
    weights = rank_penalties(group_size)
    rewards = [0.0] * len(completions)
    for start in range(0, len(completions), group_size):
        group = range(start, start + group_size)
        if any(completions[i] == targets[i] for i in group):
            for rank, i in enumerate(group):
                rewards[i] = 0.0 if completions[i] == targets[i] else weights[rank]
    return rewards


def ranking_reward(completions: Sequence[str], targets: Sequence[str], group_size: int) -> list[float]:
    """``rule + ranking_only``: 1 for the target, a rank penalty for beams above or below it."""
    rule = rule_reward(completions, targets, group_size)
    penalty = ranking_only_reward(completions, targets, group_size)
    return [a + b for a, b in zip(rule, penalty)]


def prefix_reward(completions: Sequence[str], targets: Sequence[str], group_size: int) -> list[float]:
    """Share of the target's SID levels matched from the first level on, e.g. ``<a_1><b_2><c_9>`` vs
    target ``<a_1><b_2><c_3>`` gives 2/3."""
    _check_groups(completions, targets, group_size)
    rewards = []
    for completion, target in zip(completions, targets):
        got, want = parse_sid(completion), parse_sid(target)
        matched = 0
        for a, b in zip(got, want):
            if a != b:
                break
            matched += 1
        rewards.append(matched / len(want))
    return rewards


class SemanticReward:
    """Cosine similarity between the completion's and the target's item embeddings.

    Args:
        embeddings: ``[num_items, d]`` array (row = item id) or a ``.npy`` path.
        catalog: maps SIDs to item ids.

    Raises:
        ValueError: the matrix has fewer rows than the largest item id, or a completion is not an item.
    """

    __name__ = "semantic"

    def __init__(self, embeddings: np.ndarray | str | Path, catalog: ItemCatalog) -> None:
        if not isinstance(embeddings, np.ndarray):
            embeddings = np.load(embeddings, allow_pickle=False)
        if embeddings.ndim != 2 or embeddings.shape[0] <= max(catalog.item_ids):
            raise ConfigurationError(f"item embeddings must be [num_items, d] with a row per item id (max id "
                             f"{max(catalog.item_ids)}), got shape {embeddings.shape}")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.unit = embeddings / np.maximum(norms, 1e-12)
        self.catalog = catalog

    def _mean_vector(self, sid: str) -> np.ndarray:
        ids = self.catalog.items_with_sid(sid)
        if not ids:
            raise ValueError(f"completion {sid!r} is not an item of the catalog; constrained decoding must only "
                             "produce valid SIDs")
        return self.unit[list(ids)].mean(axis=0)

    def __call__(self, completions: Sequence[str], targets: Sequence[str], group_size: int) -> list[float]:
        _check_groups(completions, targets, group_size)
        return [float(self._mean_vector(c) @ self._mean_vector(t)) for c, t in zip(completions, targets)]


class SIDProbabilityReward:
    """Base of the history rewards (``cf``, ``transition``): each completion gets the probability mass that a
    next-item model gives its SID's items after the prompt's history (a SID shared by several items gets the
    sum over them; ``""``, nothing decoded, gets 0). Subclasses set ``__name__`` and implement
    :meth:`probabilities`.
    """

    uses_histories = True

    def __init__(self, catalog: ItemCatalog) -> None:
        self.catalog = catalog
        self._columns: dict[str, list[int]] = {}

    def probabilities(self, histories: Sequence[Sequence[int]]):
        """``[B, V]`` next-item probabilities (a torch tensor) for each history."""
        raise NotImplementedError

    def _items_of(self, sid: str) -> list[int]:
        if sid not in self._columns:
            ids = list(self.catalog.items_with_sid(sid))
            if not ids:
                raise ValueError(f"completion {sid!r} is not an item of the catalog; constrained decoding must only "
                                 "produce valid SIDs")
            self._columns[sid] = ids
        return self._columns[sid]

    def __call__(self, completions: Sequence[str], targets: Sequence[str], group_size: int, *,
                 histories: Sequence[Sequence[int]]) -> list[float]:
        return self._score(completions, group_size, self.probabilities(histories), len(histories))

    def _score(self, completions: Sequence[str], group_size: int, probs, num_prompts: int) -> list[float]:
        """Each completion's probability mass under its prompt's row of ``probs`` ``[B, V]``."""
        if len(completions) != num_prompts * group_size:
            raise ValueError(f"{len(completions)} completions for {num_prompts} histories in groups of {group_size}")
        return [float(probs[i // group_size, self._items_of(sid)].sum()) if sid else 0.0
                for i, sid in enumerate(completions)]


REWARDS: dict[str, RewardFn] = {
    "rule": rule_reward,
    "ranking": ranking_reward,
    "ranking_only": ranking_only_reward,
    "prefix": prefix_reward,
}
RANK_AWARE = {"ranking", "ranking_only"}


@dataclass
class RewardResult:
    total: list[float]  # weighted sum, one per completion
    per_function: dict[str, list[float]]


def combine_rewards(functions: Mapping[str, RewardFn], weights: Mapping[str, float], completions: Sequence[str],
                    targets: Sequence[str], group_size: int,
                    histories: Sequence[Sequence[int]] | None = None,
                    target_items: Sequence[int] | None = None) -> RewardResult:
    """Evaluate every reward function and add them with their weights.

    ``histories`` (one tuple of item ids per prompt) is passed to the functions that declare
    ``uses_histories``; they cannot be used without it. ``target_items`` (one item id per prompt) goes to those
    that also declare ``uses_target_items`` (the leave-one-out transition rewards).
    """
    per_function = {}
    for name, fn in functions.items():
        if getattr(fn, "uses_histories", False):
            if histories is None:
                raise ValueError(f"the {name} reward needs the prompts' item histories (histories=...)")
            extra = {}
            if getattr(fn, "uses_target_items", False):
                if target_items is None:
                    raise ValueError(f"the {name} reward needs the prompts' target item ids (target_items=...)")
                extra["target_items"] = target_items
            per_function[name] = fn(completions, targets, group_size, histories=histories, **extra)
        else:
            per_function[name] = fn(completions, targets, group_size)
    total = [sum(weights[name] * per_function[name][i] for name in functions) for i in range(len(completions))]
    return RewardResult(total, per_function)

"""SID collisions (several items with one code tuple): detection, guaranteed resolution, statistics.

Two resolutions, both ending with every item's SID unique and no SID a strict prefix of another:

- ``extra-level`` (MiniOneRec's choice): every member of a colliding group gets one more level whose
  code is its 0-based rank (by item id) inside the group; the other items keep L levels.
- ``reassign`` (fixed length when possible): inside each parent (the first L-1 codes), one item of a
  colliding group keeps the code (the one nearest its codeword), the others move to the nearest
  last-level codes that no item of that parent uses, by a greedy over (item, free code) pairs in
  order of distance. One pass, each move consumes a distinct free code, so it terminates; it falls
  back to ``extra-level`` only for a parent holding more items than the codebook has codes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from rec_lightning.errors import ConfigurationError
from rec_lightning.sids.codec import LEVEL_LETTERS, format_sid
from rec_lightning.sids.quantize import squared_distances

EXTRA_LEVEL = "extra-level"
REASSIGN = "reassign"
GUARANTEES = {
    EXTRA_LEVEL: "unique and prefix-free by construction: each colliding group's members get distinct ranks "
                 "as an extra level, and every member of such a group gets it",
    REASSIGN: "unique after one pass: colliding items take distinct unused last-level codes of their parent "
              "(greedy by distance); only a parent with more items than codes falls back to the extra level",
}


def collision_groups(codes: torch.Tensor | list[tuple[int, ...]]) -> list[list[int]]:
    """Groups (item ids ascending) of items sharing one code tuple, for groups of two or more.

    Args:
        codes: ``[N, L]`` tensor or a list of per-item code tuples (row = item id).
    """
    rows = codes.tolist() if isinstance(codes, torch.Tensor) else codes
    by_code: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for item_id, row in enumerate(rows):
        by_code[tuple(row)].append(item_id)
    return [ids for ids in by_code.values() if len(ids) > 1]


def collision_rate(codes: torch.Tensor | list[tuple[int, ...]]) -> float:
    """``(N - #distinct code tuples) / N``: the share of items that would need a new SID."""
    rows = codes.tolist() if isinstance(codes, torch.Tensor) else codes
    return (len(rows) - len({tuple(r) for r in rows})) / len(rows)


@dataclass
class Resolution:
    """Final per-item codes (row = item id; length L, or L+1 for items given the extra level)."""

    codes: list[tuple[int, ...]]
    method: str
    collision_rate_before: float
    collision_rate_after: float
    num_groups_before: int
    num_colliding_items_before: int
    num_moved: int = 0
    num_extra_level: int = 0
    guarantee: str = field(default="")


def resolve_extra_level(codes: torch.Tensor) -> Resolution:
    """Give every member of each colliding group an extra level = its 0-based rank in the group.

    ``[[1, 2], [1, 2], [3, 4]] -> [(1, 2, 0), (1, 2, 1), (3, 4)]``.
    """
    rows = [tuple(r) for r in codes.tolist()]
    groups = collision_groups(rows)
    final = _extra_level(rows, groups)
    return _finish(rows, final, EXTRA_LEVEL, groups, num_moved=0)


def resolve_reassign(codes: torch.Tensor, last_residual: torch.Tensor, last_codebook: torch.Tensor) -> Resolution:
    """Move colliding items to the nearest unused last-level codes of their parent (see module docstring).

    Args:
        codes: ``[N, L]`` codes.
        last_residual: ``[N, D]`` the vectors the last level quantised.
        last_codebook: ``[K, D]`` the last level's codewords.
    """
    rows = [tuple(r) for r in codes.tolist()]
    groups = collision_groups(rows)
    k = last_codebook.shape[0]
    dist = squared_distances(last_residual.float(), last_codebook.float())  # [N, K]
    by_parent: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for item_id, row in enumerate(rows):
        by_parent[row[:-1]].append(item_id)
    final = list(rows)
    num_moved = 0
    for parent in dict.fromkeys(rows[group[0]][:-1] for group in groups):  # parents with collisions, in order
        num_moved += _reassign_parent(by_parent[parent], rows, final, dist, k)
    leftovers = collision_groups(final)  # only parents with more than K items
    final = _extra_level(final, leftovers)
    return _finish(rows, final, REASSIGN, groups, num_moved=num_moved)


def _reassign_parent(members: list[int], rows: list[tuple[int, ...]], final: list[tuple[int, ...]],
                     dist: torch.Tensor, k: int) -> int:
    """Re-assign the colliding items of one parent in place; returns how many items moved."""
    by_code: dict[int, list[int]] = defaultdict(list)
    for item_id in members:
        by_code[rows[item_id][-1]].append(item_id)
    movers = []
    for code, ids in by_code.items():
        if len(ids) > 1:
            keeper = min(ids, key=lambda i: (float(dist[i, code]), i))
            movers += [i for i in ids if i != keeper]
    free = sorted(set(range(k)) - set(by_code))
    if not movers or not free:
        return 0
    pair_dist = dist[movers][:, free]  # [M, F]
    order = torch.argsort(pair_dist.flatten(), stable=True).tolist()
    placed, taken, moved = set(), set(), 0
    for flat in order:
        mover, slot = divmod(flat, len(free))
        if mover in placed or slot in taken:
            continue
        item_id = movers[mover]
        final[item_id] = rows[item_id][:-1] + (free[slot],)
        placed.add(mover)
        taken.add(slot)
        moved += 1
        if len(placed) == len(movers) or len(taken) == len(free):
            break
    return moved


def _extra_level(rows: list[tuple[int, ...]], groups: list[list[int]]) -> list[tuple[int, ...]]:
    final = list(rows)
    for group in groups:
        for rank, item_id in enumerate(group):
            final[item_id] = rows[item_id] + (rank,)
    return final


def _finish(rows, final, method, groups, num_moved) -> Resolution:
    after = collision_rate(final)
    if after != 0.0:
        raise AssertionError(f"collision resolution '{method}' left collisions (rate {after}); please report this")
    return Resolution(
        codes=final, method=method, collision_rate_before=collision_rate(rows), collision_rate_after=after,
        num_groups_before=len(groups), num_colliding_items_before=sum(len(g) for g in groups),
        num_moved=num_moved, num_extra_level=sum(len(c) > len(r) for c, r in zip(final, rows)),
        guarantee=GUARANTEES[method])


def resolve_collisions(method: str, codes: torch.Tensor, last_residual: torch.Tensor | None = None,
                       last_codebook: torch.Tensor | None = None) -> Resolution:
    """Dispatch to :func:`resolve_extra_level` or :func:`resolve_reassign` (which needs the residuals)."""
    if method == EXTRA_LEVEL:
        return resolve_extra_level(codes)
    if method == REASSIGN:
        if last_residual is None or last_codebook is None:
            raise ConfigurationError("collision method 'reassign' needs the last level's residuals and codebook")
        return resolve_reassign(codes, last_residual, last_codebook)
    raise ConfigurationError(f"unknown collision method {method!r}; expected {EXTRA_LEVEL!r} or {REASSIGN!r}")


def code_tokens(code: tuple[int, ...]) -> list[str]:
    """``(12, 200, 7) -> ["<a_12>", "<b_200>", "<c_7>"]`` (validated by :func:`rec_lightning.sids.codec.format_sid`)."""
    tokens = [f"<{LEVEL_LETTERS[level]}_{int(value)}>" for level, value in enumerate(code)]
    format_sid(tokens)
    return tokens


def level_statistics(codes: list[tuple[int, ...]], codebook_size: int, num_base_levels: int | None = None) -> list[dict]:
    """Per level: items that have it, used codes, utilisation (used / K), entropy in bits and normalised.

    Normalised entropy divides by ``log2(K)``. Levels past ``num_base_levels`` (default: the shortest
    code) are extra (dedup) levels, whose K is the largest rank + 1.
    ``[(0,), (0,), (1,), (1,)]`` with K=4: used 2, utilisation 0.5, entropy 1.0 bit, normalised 0.5.
    """
    num_levels = max(len(c) for c in codes)
    num_base_levels = min(len(c) for c in codes) if num_base_levels is None else num_base_levels
    stats = []
    for level in range(num_levels):
        values = [c[level] for c in codes if len(c) > level]
        counts = torch.bincount(torch.tensor(values)).double()
        counts = counts[counts > 0]
        p = counts / counts.sum()
        entropy = float(-(p * p.log2()).sum())
        k = codebook_size if level < num_base_levels else max(values) + 1
        stats.append({
            "level": LEVEL_LETTERS[level], "num_items": len(values), "codebook_size": k,
            "used_codes": int(counts.numel()), "utilisation": counts.numel() / k,
            "entropy_bits": entropy, "normalized_entropy": entropy / math.log2(k) if k > 1 else 1.0,
            "max_items_per_code": int(counts.max()), "min_items_per_used_code": int(counts.min()),
        })
    return stats


def sid_statistics(base_codes: list[tuple[int, ...]], final_codes: list[tuple[int, ...]], codebook_size: int) -> dict:
    """Summary of a SID assignment: collisions before/after, per-level usage, first-level spread.

    Args:
        base_codes: the quantiser's codes per item (before resolution).
        final_codes: the codes written (after resolution; may equal ``base_codes``).
        codebook_size: K of the quantiser's levels.
    """
    groups = collision_groups(base_codes)
    sizes = [len(g) for g in groups]
    first = torch.bincount(torch.tensor([c[0] for c in final_codes]), minlength=codebook_size)
    used_first = first[first > 0].double()
    num_base_levels = min(len(c) for c in base_codes)
    return {
        "num_items": len(final_codes),
        "collision_rate_before": collision_rate(base_codes),
        "collision_rate_after": collision_rate(final_codes),
        "num_colliding_groups_before": len(groups),
        "num_colliding_items_before": sum(sizes),
        "max_group_size_before": max(sizes, default=1),
        "mean_colliding_group_size_before": sum(sizes) / len(sizes) if sizes else 0.0,
        "num_distinct_sids": len(set(final_codes)),
        "sid_lengths": sorted({len(c) for c in final_codes}),
        "level_stats": level_statistics(final_codes, codebook_size, num_base_levels),
        "items_per_first_level_code": first.tolist(),
        "items_per_used_first_level_code": {"min": int(used_first.min()), "max": int(used_first.max()),
                                            "mean": float(used_first.mean())},
    }

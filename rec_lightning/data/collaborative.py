"""Collaborative item vectors from the training windows only: PPMI of item co-occurrence, then a truncated SVD.

Two items co-occur when they are at most ``window`` positions apart in a train row's item sequence
(history + target); counts are symmetric and an item never pairs with itself. ``count="occurrences"``
(the default) counts every occurrence; ``count="per_user"`` counts each unordered pair at most once per
``user_id`` (sliding-window train splits repeat a user's pairs in many rows). ``PPMI_ij = max(0,
log(C_ij * T / (r_i * r_j)))`` with row sums ``r`` and total ``T``; the vectors are ``U_k * sqrt(S_k)`` of
its top-``k`` SVD, each column's largest-magnitude entry made positive, L2-normalised (items without a
positive PPMI keep a zero vector). Only the train split is read, so validation and test targets never
leak into the SIDs. Concatenated with text vectors in ``embed-items --collaborative_dim``.

Cost: everything is sparse. Counting builds the pair arrays for all rows at once with vectorised torch
ops (one pass over the records to collect their ids), so it takes O(rows * window) time (plus a sort of
the pairs) and the ``[N, N]`` count and PPMI matrices are ``torch.sparse_coo_tensor`` holding only
their nonzeros: O(nnz) memory, nnz <= 2 * rows * window, never N * N. The SVD is
``torch.svd_lowrank`` (randomized, Halko et al.) with ``q = dim + oversampling`` and ``niter`` power
iterations: O(nnz * q * niter) time and O(N * q) memory. It is seeded inside ``torch.random.fork_rng``,
so results are deterministic and the caller's random state is untouched. The vectors equal those of
the dense full SVD up to the randomized SVD's approximation error (small when the top-``dim`` singular
values are well separated from the rest; up to sign and rotation inside repeated singular values, like
any SVD). Only when ``dim + oversampling`` exceeds N and N <= :data:`DENSE_SVD_MAX_ITEMS` does it use
the exact dense ``torch.linalg.svd`` (an N x N float64 matrix, at most 32 MB there).
"""

from __future__ import annotations

from typing import Sequence

import torch

from rec_lightning.data.records import SequenceRecord

#: ``count`` values of :func:`cooccurrence_counts` and :func:`ppmi_svd_vectors`.
COUNT_MODES = ("occurrences", "per_user")
#: Largest catalog for which the dense exact SVD is used (only when ``dim + oversampling`` > N).
DENSE_SVD_MAX_ITEMS = 2000


def _flat_sequences(records: Sequence[SequenceRecord]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every row's ``(*history, target)`` concatenated ``[L]``, its row index per position ``[L]``, users."""
    items: list[int] = []
    lengths: list[int] = []
    users: list[str] = []
    for record in records:
        items.extend(record.history_item_ids)
        items.append(record.item_id)
        lengths.append(len(record.history_item_ids) + 1)
        users.append(record.user_id)
    rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long))
    return torch.tensor(items, dtype=torch.long), rows, users


def _pair_keys(items: torch.Tensor, rows: torch.Tensor, num_items: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unordered pair keys ``min * N + max`` of distinct items at most ``window`` apart in a row, and their rows."""
    keys, pair_rows = [], []
    for distance in range(1, window + 1):
        a, b = items[:-distance], items[distance:]
        keep = (rows[:-distance] == rows[distance:]) & (a != b)  # same row, no self pair
        a, b = a[keep], b[keep]
        keys.append(torch.minimum(a, b) * num_items + torch.maximum(a, b))
        pair_rows.append(rows[:-distance][keep])
    if not keys:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(keys), torch.cat(pair_rows)


def cooccurrence_counts(records: Sequence[SequenceRecord], num_items: int, window: int = 1,
                        count: str = "occurrences") -> torch.Tensor:
    """Sparse coalesced float64 ``[N, N]`` symmetric counts of item pairs at most ``window`` apart in a row.

    No self pairs. ``count="occurrences"``: every occurrence counts (a pair twice in a row counts twice);
    ``"per_user"``: each unordered pair counts at most once per ``record.user_id``.

    Raises:
        ValueError: ``window`` < 1, an unknown ``count``, or an item id outside ``[0, num_items)``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if count not in COUNT_MODES:
        raise ValueError(f"count must be one of {COUNT_MODES}, got {count!r}")
    items, rows, users = _flat_sequences(records)
    if items.numel() and (int(items.min()) < 0 or int(items.max()) >= num_items):
        raise ValueError(f"item ids must lie in [0, {num_items}), got {int(items.min())}..{int(items.max())}")
    keys, pair_rows = _pair_keys(items, rows, num_items, window)
    pairs, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)  # sorted
    if count == "per_user" and keys.numel():
        codes: dict[str, int] = {}
        row_users = torch.tensor([codes.setdefault(user, len(codes)) for user in users], dtype=torch.long)
        # one entry per (user, pair): key user * P + pair index (< (rows * window) ** 2, no overflow)
        user_pairs = torch.unique(row_users[pair_rows] * len(pairs) + inverse)
        counts = torch.bincount(user_pairs % len(pairs), minlength=len(pairs))
    first, second = pairs // num_items, pairs % num_items
    indices = torch.stack([torch.cat([first, second]), torch.cat([second, first])])  # both orientations
    values = torch.cat([counts, counts]).to(torch.float64)
    return torch.sparse_coo_tensor(indices, values, (num_items, num_items), check_invariants=False).coalesce()  # ids checked


def ppmi(counts: torch.Tensor) -> torch.Tensor:
    """Positive PMI of a sparse symmetric count matrix: sparse coalesced, only the positive entries stored."""
    counts = counts.coalesce()
    indices, values = counts.indices(), counts.values()
    rows = torch.zeros(counts.shape[0], dtype=values.dtype).index_add_(0, indices[0], values)  # [N]
    total = values.sum()
    pmi = torch.log(values * total / (rows[indices[0]] * rows[indices[1]]).clamp_min(1e-12))
    keep = pmi > 0  # PPMI = max(0, PMI): drop the zeros
    return torch.sparse_coo_tensor(indices[:, keep], pmi[keep], counts.shape, check_invariants=False, is_coalesced=True)


def _top_singular(matrix: torch.Tensor, k: int, oversampling: int, niter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``<= k`` left singular vectors ``[N, k']`` and values ``[k']`` of a sparse ``[N, N]`` float64 matrix."""
    num_items = matrix.shape[0]
    q = min(k + oversampling, num_items)
    if k + oversampling > num_items and num_items <= DENSE_SVD_MAX_ITEMS:  # too small to sample: exact
        u, s, _ = torch.linalg.svd(matrix.to_dense())
    else:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(0)  # the CPU generator only: CUDA states untouched
            u, s, _ = torch.svd_lowrank(matrix, q=q, niter=niter)
    return u[:, :k], s[:k]


def ppmi_svd_vectors(records: Sequence[SequenceRecord], num_items: int, dim: int = 64, window: int = 1,
                     count: str = "occurrences", oversampling: int = 10, niter: int = 6) -> torch.Tensor:
    """``[N, dim]`` float32 L2-normalised collaborative vectors (see the module docstring).

    ``count``: ``"occurrences"`` or ``"per_user"`` (:func:`cooccurrence_counts`). ``oversampling`` and
    ``niter``: extra random directions and power iterations of ``torch.svd_lowrank`` (more: closer to
    the exact SVD, slower). When ``dim + oversampling`` > N and N <= :data:`DENSE_SVD_MAX_ITEMS` the exact
    dense SVD is used instead; components beyond N (``dim`` >= N) are zero columns.
    """
    matrix = ppmi(cooccurrence_counts(records, num_items, window, count))
    vectors = torch.zeros(num_items, dim, dtype=torch.float64)
    if matrix.values().numel() == 0 or dim <= 0:  # nothing co-occurs (or no items): all zero vectors
        return vectors.float()
    u, s = _top_singular(matrix, min(dim, num_items), oversampling, niter)
    k = s.numel()
    vectors[:, :k] = u * s.clamp_min(0.0).sqrt()[None, :]
    active = torch.zeros(num_items, dtype=torch.bool)
    active[matrix.indices()[0]] = True
    vectors[~active] = 0.0  # no positive PPMI: exactly zero, not SVD round-off
    signs = torch.sign(vectors[vectors.abs().argmax(dim=0), torch.arange(dim)])  # fix SVD sign ambiguity
    vectors = vectors * torch.where(signs == 0, torch.ones_like(signs), signs)[None, :]
    norms = vectors.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, vectors / norms.clamp_min(1e-12), vectors).float()

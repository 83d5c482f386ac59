"""Collaborative item vectors from the training windows only: PPMI of item co-occurrence, then a truncated SVD.

Two items co-occur when they are at most ``window`` positions apart in a train row's item sequence
(history + target); counts are symmetric. ``PPMI_ij = max(0, log(C_ij * T / (r_i * r_j)))`` with row
sums ``r`` and total ``T``; the vectors are ``U_k * sqrt(S_k)`` of its top-``k`` SVD, L2-normalised
(items that never co-occur keep a zero vector). Only the train split is read, so validation and test
targets never leak into the SIDs. Concatenated with text vectors in ``embed-items --collaborative_dim``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rec_lightning.data.records import SequenceRecord


def cooccurrence_counts(records: Sequence[SequenceRecord], num_items: int, window: int = 1) -> torch.Tensor:
    """``[N, N]`` symmetric counts of item pairs at most ``window`` apart in each row (no self pairs)."""
    counts = torch.zeros(num_items, num_items, dtype=torch.float64)
    for record in records:
        sequence = (*record.history_item_ids, record.item_id)
        for distance in range(1, window + 1):
            for a, b in zip(sequence[:-distance], sequence[distance:]):
                if a != b:
                    counts[a, b] += 1
                    counts[b, a] += 1
    return counts


def ppmi(counts: torch.Tensor) -> torch.Tensor:
    """Positive pointwise mutual information of a symmetric count matrix (zero where the count is zero)."""
    total = counts.sum()
    rows = counts.sum(dim=1)  # [N]
    expected = rows[:, None] * rows[None, :] / total.clamp_min(1e-12)  # [N, N]
    pmi = torch.log(counts / expected.clamp_min(1e-12))
    return torch.where(counts > 0, pmi.clamp_min(0.0), torch.zeros_like(pmi))


def ppmi_svd_vectors(records: Sequence[SequenceRecord], num_items: int, dim: int = 64, window: int = 1) -> torch.Tensor:
    """``[N, dim]`` float32 L2-normalised collaborative vectors (see the module docstring)."""
    matrix = ppmi(cooccurrence_counts(records, num_items, window))
    u, s, _ = torch.linalg.svd(matrix)
    k = min(dim, num_items)
    vectors = u[:, :k] * s[:k].sqrt()[None, :]  # [N, k]
    vectors = torch.nn.functional.pad(vectors, (0, dim - k))
    signs = torch.sign(vectors[vectors.abs().argmax(dim=0), torch.arange(dim)])  # fix SVD sign ambiguity
    vectors = vectors * torch.where(signs == 0, torch.ones_like(signs), signs)[None, :]
    norms = vectors.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, vectors / norms.clamp_min(1e-12), vectors).float()

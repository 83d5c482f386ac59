"""PPMI-SVD collaborative vectors: hand-checked examples, and the sparse path against a dense reference."""

import math
import random

import pytest
import torch

from rec_lightning.data.collaborative import COUNT_MODES, cooccurrence_counts, ppmi, ppmi_svd_vectors
from rec_lightning.data.item_embeddings import COLLABORATIVE_COUNTS
from rec_lightning.data.records import SequenceRecord


def record(history, target, row=0, user="u"):
    return SequenceRecord("train", row, user, tuple(history), ("t",) * len(history), ("<a_0>",) * len(history),
                          target, "t", "<a_0>")


ROWS = [record([0], 1), record([0], 1, 1), record([1], 2, 2)]


# --- dense reference: the former implementation (N x N float64, a Python loop over pairs) ---

def dense_cooccurrence_counts(records, num_items, window=1):
    counts = torch.zeros(num_items, num_items, dtype=torch.float64)
    for r in records:
        sequence = (*r.history_item_ids, r.item_id)
        for distance in range(1, window + 1):
            for a, b in zip(sequence[:-distance], sequence[distance:]):
                if a != b:
                    counts[a, b] += 1
                    counts[b, a] += 1
    return counts


def dense_ppmi(counts):
    total = counts.sum()
    rows = counts.sum(dim=1)
    expected = rows[:, None] * rows[None, :] / total.clamp_min(1e-12)
    pmi = torch.log(counts / expected.clamp_min(1e-12))
    return torch.where(counts > 0, pmi.clamp_min(0.0), torch.zeros_like(pmi))


def dense_svd_vectors(records, num_items, dim, window=1):
    u, s, _ = torch.linalg.svd(dense_ppmi(dense_cooccurrence_counts(records, num_items, window)))
    k = min(dim, num_items)
    vectors = torch.nn.functional.pad(u[:, :k] * s[:k].sqrt()[None, :], (0, dim - k))
    norms = vectors.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, vectors / norms.clamp_min(1e-12), vectors).float(), s


def random_records(num_items, num_rows, seed):
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(num_items)]  # Zipf-ish popularity
    out = []
    for row in range(num_rows):
        history = rng.choices(range(num_items), weights, k=rng.randint(1, 10))
        if rng.random() < 0.2:
            history.append(history[-1])  # some repeated neighbours (self pairs must be dropped)
        out.append(record(history, rng.choices(range(num_items), weights)[0], row, f"u{row % 500}"))
    return out


# --- hand-checked ---

def test_counts_and_ppmi_by_hand():
    counts = cooccurrence_counts(ROWS, 3)
    assert counts.is_sparse and counts.dtype == torch.float64
    assert counts.to_dense().tolist() == [[0, 2, 0], [2, 0, 1], [0, 1, 0]]
    # T = 6, r = (2, 3, 1): PMI_01 = log(2*6/(2*3)) = log 2, PMI_12 = log(1*6/(3*1)) = log 2, PMI_02: no count -> 0
    expected = math.log(2) * torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.float64)
    assert torch.allclose(ppmi(counts).to_dense(), expected)


def test_vectors_put_items_with_the_same_neighbours_together():
    vectors = ppmi_svd_vectors(ROWS, 3, dim=2)
    assert vectors.shape == (3, 2) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3))
    # items 0 and 2 both co-occur only with item 1: identical vectors
    assert torch.allclose(vectors[0], vectors[2], atol=1e-6)
    assert torch.equal(ppmi_svd_vectors(ROWS, 3, dim=2), vectors)  # deterministic


def test_window_and_isolated_items():
    counts = cooccurrence_counts([record([0, 1], 2)], 4, window=2).to_dense()
    assert counts[0, 2] == 1 and counts[0, 1] == 1 and counts[3].sum() == 0
    vectors = ppmi_svd_vectors([record([0, 1], 2)], 4, dim=3, window=2)
    assert torch.equal(vectors[3], torch.zeros(3))  # never co-occurs: zero vector, no NaN


def test_per_user_counts_a_users_pair_once():
    rows = [record([0, 1], 2, 0, "a"), record([0, 1, 2], 3, 1, "a"),  # user a: (0,1) twice, (1,2) twice, (2,3) once
            record([1, 0], 1, 2, "a"),  # user a again: (0,1) twice more in one row
            record([1], 0, 3, "b")]  # user b: (0,1) once
    occurrences = cooccurrence_counts(rows, 4).to_dense()
    assert occurrences[0, 1] == 5 and occurrences[1, 2] == 2 and occurrences[2, 3] == 1
    per_user = cooccurrence_counts(rows, 4, count="per_user").to_dense()
    # (0,1): once for a, once for b -> 2; (1,2) and (2,3): user a only -> 1; symmetric, no diagonal
    assert per_user.tolist() == [[0, 2, 0, 0], [2, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    assert cooccurrence_counts(rows, 4, window=2, count="per_user").to_dense()[1, 3] == 1  # (1, 3) in row 1 only
    assert ppmi_svd_vectors(rows, 4, dim=2, count="per_user").shape == (4, 2)
    assert COLLABORATIVE_COUNTS == COUNT_MODES  # embed-items' torch-free copy


def test_empty_and_invalid_inputs():
    assert torch.equal(ppmi_svd_vectors([], 5, dim=3), torch.zeros(5, 3))
    assert torch.equal(ppmi_svd_vectors([record([1], 1)], 5, dim=3), torch.zeros(5, 3))  # only a self pair
    assert cooccurrence_counts([], 5)._nnz() == 0
    with pytest.raises(ValueError, match="item ids"):
        cooccurrence_counts([record([0], 5)], 5)
    with pytest.raises(ValueError, match="count"):
        cooccurrence_counts(ROWS, 3, count="per_row")
    with pytest.raises(ValueError, match="window"):
        cooccurrence_counts(ROWS, 3, window=0)


def test_dim_at_least_the_catalog_uses_the_exact_svd_and_pads():
    vectors = ppmi_svd_vectors(ROWS, 3, dim=5)
    assert vectors.shape == (3, 5) and torch.equal(vectors[:, 3:], torch.zeros(3, 2))
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3))


# --- sparse against the dense reference ---

@pytest.mark.parametrize("window", [1, 2])
def test_sparse_counts_and_ppmi_equal_the_dense_reference(window):
    records = random_records(300, 3000, seed=window)
    sparse = cooccurrence_counts(records, 300, window)
    dense = dense_cooccurrence_counts(records, 300, window)
    assert torch.equal(sparse.to_dense(), dense)  # exact: integer counts
    sparse_ppmi, reference = ppmi(sparse), dense_ppmi(dense)
    indices = sparse_ppmi.indices()
    assert torch.equal(indices, reference.nonzero().T)  # same nonzero pattern (zeros dropped)
    assert torch.allclose(sparse_ppmi.values(), reference[indices[0], indices[1]], rtol=1e-12, atol=1e-12)


def test_randomized_svd_reproduces_the_dense_svd_on_clustered_items():
    # 240 items in 8 clusters of 30; rows mostly stay inside one cluster, 5 % of items are noise
    rng = random.Random(0)
    records = []
    for row in range(3000):
        cluster = rng.randrange(8)
        history = [30 * cluster + rng.randrange(30) if rng.random() > 0.05 else rng.randrange(240)
                   for _ in range(rng.randint(1, 8))]
        records.append(record(history, 30 * cluster + rng.randrange(30), row, f"u{row}"))
    dim = 8
    reference, singular = dense_svd_vectors(records, 240, dim)
    assert singular[dim - 1] > 2 * singular[dim]  # top-8 subspace well separated: comparable across methods
    vectors = ppmi_svd_vectors(records, 240, dim)
    assert vectors.shape == (240, dim) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(240), atol=1e-5)
    # V V^T is free of the sign and of rotations inside repeated singular values; tolerance 1e-3
    difference = (vectors @ vectors.T - reference @ reference.T).abs().max()
    assert difference <= 1e-3, difference
    state = torch.random.get_rng_state()
    assert torch.equal(ppmi_svd_vectors(records, 240, dim), vectors)  # deterministic
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched

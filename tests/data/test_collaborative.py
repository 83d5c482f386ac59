"""PPMI-SVD collaborative vectors on a hand-checked 3-item example."""

import math

import torch

from rec_lightning.data.collaborative import cooccurrence_counts, ppmi, ppmi_svd_vectors
from rec_lightning.data.records import SequenceRecord


def record(history, target, row=0):
    return SequenceRecord("train", row, "u", tuple(history), ("t",) * len(history), ("<a_0>",) * len(history),
                          target, "t", "<a_0>")


ROWS = [record([0], 1), record([0], 1, 1), record([1], 2, 2)]


def test_counts_and_ppmi_by_hand():
    counts = cooccurrence_counts(ROWS, 3)
    assert counts.tolist() == [[0, 2, 0], [2, 0, 1], [0, 1, 0]]
    # T = 6, r = (2, 3, 1): PMI_01 = log(2*6/(2*3)) = log 2, PMI_12 = log(1*6/(3*1)) = log 2, PMI_02: no count -> 0
    expected = math.log(2) * torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.float64)
    assert torch.allclose(ppmi(counts), expected)


def test_vectors_put_items_with_the_same_neighbours_together():
    vectors = ppmi_svd_vectors(ROWS, 3, dim=2)
    assert vectors.shape == (3, 2) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3))
    # items 0 and 2 both co-occur only with item 1: identical vectors
    assert torch.allclose(vectors[0], vectors[2], atol=1e-6)
    assert torch.equal(ppmi_svd_vectors(ROWS, 3, dim=2), vectors)  # deterministic


def test_window_and_isolated_items():
    counts = cooccurrence_counts([record([0, 1], 2)], 4, window=2)
    assert counts[0, 2] == 1 and counts[0, 1] == 1 and counts[3].sum() == 0
    vectors = ppmi_svd_vectors([record([0, 1], 2)], 4, dim=3, window=2)
    assert torch.equal(vectors[3], torch.zeros(3))  # never co-occurs: zero vector, no NaN

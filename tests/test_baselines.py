"""Popularity and transition baselines, and SID-level ranking, on hand-built sequences.

Catalog: items 0..4, item 4 sharing item 1's SID. Train rows (user: history -> target):
    u1: [0] -> 1, [0, 1] -> 2          u2: [1] -> 2, [1, 2] -> 3          u3: [3] -> 1
Popularity (train targets): item 1: 2, item 2: 2, item 3: 1, items 0 and 4: 0 -> order 1, 2, 3, 0, 4.
Adjacent pairs per window: 0->1 x2, 1->2 x3, 2->3 x1, 3->1 x1; once per user: 0->1 1, 1->2 2, 2->3 1, 3->1 1.
"""

import math

import pytest
import torch

from rec_lightning.modules.baselines import PopularityModel, TransitionModel
from rec_lightning.data.records import SequenceRecord
from rec_lightning.evaluation.item_ranking import RankingResults, SIDRanker
from rec_lightning.sids.codec import ItemCatalog

SIDS = {0: "<a_0><b_0><c_0>", 1: "<a_1><b_1><c_1>", 2: "<a_2><b_2><c_2>", 3: "<a_3><b_3><c_3>", 4: "<a_1><b_1><c_1>"}


def tokens(sid: str) -> list[str]:
    return [part + ">" for part in sid.split(">") if part]


CATALOG = ItemCatalog({i: tokens(s) for i, s in SIDS.items()}, {i: f"item {i}" for i in SIDS})


def record(user: str, history: list[int], target: int, row: int = 0, split: str = "train") -> SequenceRecord:
    return SequenceRecord(split, row, user, tuple(history), tuple(f"item {i}" for i in history),
                          tuple(SIDS[i] for i in history), target, f"item {target}", SIDS[target])


TRAIN = [record("u1", [0], 1, 0), record("u1", [0, 1], 2, 1), record("u2", [1], 2, 2), record("u2", [1, 2], 3, 3),
         record("u3", [3], 1, 4)]


def order_of(scores: torch.Tensor) -> list[list[int]]:
    return torch.sort(scores, dim=1, descending=True, stable=True).indices.tolist()


def test_popularity_counts_train_targets_and_breaks_ties_by_item_index():
    model = PopularityModel(5).fit(TRAIN)
    assert model.counts.tolist() == [0, 2, 2, 1, 0]
    assert order_of(model.scores([[0], [3, 2]])) == [[1, 2, 3, 0, 4]] * 2


@pytest.mark.parametrize("counting, expected", [("per_user", {(0, 1): 1, (1, 2): 2, (2, 3): 1, (3, 1): 1}),
                                                ("per_window", {(0, 1): 2, (1, 2): 3, (2, 3): 1, (3, 1): 1})])
def test_transition_counts_pairs_once_per_user_or_per_window(counting, expected):
    model = TransitionModel(5, counting=counting).fit(TRAIN)
    assert model.pair_counts() == expected
    assert model.counts.is_sparse and model.counts.values().numel() == len(expected)  # O(pairs), never V x V


def test_transition_ranking_with_decay_and_popularity_fallback():
    model = TransitionModel(5, decay=0.5).fit(TRAIN)
    # [2, 1]: last item 1 -> 2 (count 2), then 2 -> 3 (count 1) at weight 0.5: item 2: 2, item 3: 0.5
    assert model.transition_scores([[2, 1]])[0].tolist() == [0, 0, 2.0, 0.5, 0]
    assert model.order([[2, 1]]).tolist() == [[2, 3, 1, 0, 4]]
    # [3, 0] with decay 0.5: 0 -> 1 (1) and 3 -> 1 at 0.5: item 1 = 1.5; the rest by popularity (2, 3, 0, 4)
    assert model.order([[3, 0]]).tolist() == [[1, 2, 3, 0, 4]]
    # an item with no outgoing transition: popularity alone
    assert model.order([[4]]).tolist() == [[1, 2, 3, 0, 4]]
    # decay 0: only the last item counts: [1, 3] -> 3 -> 1 only, ties by popularity
    last_only = TransitionModel(5, decay=0.0).fit(TRAIN)
    assert last_only.transition_scores([[1, 3]])[0].tolist() == [0, 1, 0, 0, 0]
    assert order_of(last_only.scores([[1, 3]])) == [[1, 2, 3, 0, 4]]
    assert order_of(last_only.scores([[2, 1]])) == [[2, 1, 3, 0, 4]]  # 1 -> 2 first; then popularity


def dense_transition_scores(model: TransitionModel, histories) -> torch.Tensor:
    """The former implementation, as the reference: a dense [V, V] count matrix and a [B, L, V] gather."""
    dense = model.counts.to_dense()
    items, weights = model.history_weights(histories)
    return torch.einsum("bl,blv->bv", weights, dense[items.clamp(min=0)])


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.3])
def test_sparse_transition_scores_equal_the_dense_reference(decay):
    import random

    rng = random.Random(decay)
    num_items = 60
    train = []
    for r in range(300):
        history = tuple(rng.randrange(num_items) for _ in range(rng.randint(1, 9)))
        train.append(SequenceRecord("train", r, f"u{r % 40}", history, ("t",) * len(history), ("s",) * len(history),
                                    rng.randrange(num_items), "t", "s"))
    model = TransitionModel(num_items + 2, decay=decay, max_history=6).fit(train)  # 2 columns no item reaches
    histories = [[rng.randrange(num_items) for _ in range(rng.randint(0, 12))] for _ in range(50)] + [[5, 5, 5], []]
    sparse, dense = model.transition_scores(histories), dense_transition_scores(model, histories)
    assert sparse.shape == (52, num_items + 2) and sparse.dtype == torch.float64
    if decay in (0.0, 0.5):  # dyadic weights and integer counts: every sum is exact, in any order
        assert torch.equal(sparse, dense)
        popular_first = torch.sort(model.popularity.counts, descending=True, stable=True).indices
        within = torch.sort(dense[:, popular_first], dim=1, descending=True, stable=True).indices
        assert torch.equal(model.order(histories), popular_first[within])  # the same ranked lists
    else:
        assert torch.allclose(sparse, dense, rtol=1e-12, atol=1e-12)
    assert sparse[-2].tolist() == dense[-2].tolist() and not sparse[-1].any()  # a repeated item; no history


def test_sid_ranker_merges_items_sharing_a_sid_and_breaks_ties_by_item_index():
    ranker = SIDRanker(CATALOG)
    assert ranker.keys == [SIDS[0], SIDS[1], SIDS[2], SIDS[3]]  # item 4 shares key 1
    scores = torch.tensor([[0.5, 0.1, 0.5, 0.9, 0.7]])  # items by score: 3, 4, 0, 2 (tie 0 < 2), 1
    keys, items = ranker.rank(scores, 4)
    assert keys.tolist() == [[3, 1, 0, 2]] and items.tolist() == [[3, 4, 0, 2]]
    assert ranker.rank(scores, 2)[0].tolist() == [[3, 1]]
    assert ranker.target_keys([4, 1, 7]).tolist() == [1, 1, -1]


def test_ranking_results_metrics_and_records_by_hand():
    model = TransitionModel(5, decay=0.5).fit(TRAIN)
    test = [record("t1", [2, 1], 3, 0, "test"), record("t2", [3, 0], 4, 1, "test")]
    results = RankingResults(SIDRanker(CATALOG), num_items=3, ks=(1, 3))
    histories = [list(r.history_item_ids) for r in test]
    results.update(model.scores(histories), [r.item_id for r in test], [r.row for r in test], ["h1", "h2"],
                   model.transition_scores(histories))
    metrics = results.compute()
    # t1: items 2, 3, 1 -> target 3 at rank 1; t2: items 1, 2, 3 -> target 4 shares item 1's SID: rank 0
    assert metrics["hr@1"] == pytest.approx(0.5) and metrics["hr@3"] == pytest.approx(1.0)
    assert metrics["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert metrics["mrr"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["count"] == 2 and metrics["invalid"] == 0 and metrics["ambiguous_targets"] == 1
    assert metrics["num_beams"] == 3
    first = results.records[0]
    assert first["predict"] == [SIDS[2], SIDS[3], SIDS[1]] and first["output"] == SIDS[3]
    assert first["predict_item_ids"] == [[2], [3], [1, 4]] and first["scores"] == [2.0, 0.5, 0.0]
    assert first["row"] == 0 and first["input"] == "h1" and first["target_title"] == "item 3"
    assert results.records[1]["target_sid_items"] == 2

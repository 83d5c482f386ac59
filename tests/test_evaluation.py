"""RankingEvaluator on the hand-worked bigram: ranks, ambiguous targets, records, invalid counts, files."""

import json

import pytest
import torch
from ranking_fixtures import EOS, bigram_model

from rec_lightning.generation.decoding import DecodingOutput
from rec_lightning.evaluation.ranking import RankingEvaluator, invalid_predictions, write_results
from rec_lightning.sids.codec import ItemCatalog

# token ids: <a_0> = 2, <a_1> = 3, <b_0> = 4, <b_1> = 5, so the bigram's items are
# A = <a_0><b_0> (P = 0.075), B = <a_0><b_1> (0.06), C = <a_1><b_0> (0.1125); item 3 shares A's SID
CATALOG = ItemCatalog({0: ["<a_0>", "<b_0>"], 1: ["<a_0>", "<b_1>"], 2: ["<a_1>", "<b_0>"], 3: ["<a_0>", "<b_0>"]},
                      titles={0: "drill", 1: "gloves", 2: "tape", 3: "drill bis"})
VOCAB = {"<a_0>": 2, "<a_1>": 3, "<b_0>": 4, "<b_1>": 5}


def batch(targets):
    rows = len(targets)
    return {"input_ids": torch.tensor([[7, 0]] * rows), "attention_mask": torch.ones(rows, 2, dtype=torch.long),
            "target_item_id": torch.tensor(targets), "index": torch.arange(rows)}


def test_metrics_and_records_by_hand(tmp_path):
    evaluator = RankingEvaluator(CATALOG, VOCAB, EOS, num_beams=3, ks=(1, 3), keep_predictions=True)
    # ranked list for every row: C, A, B. Targets: item 3 (SID A: rank 1, ambiguous), item 2 (C: rank 0),
    # item 99 (not in the catalog: a miss)
    evaluator.update(bigram_model(), batch([3, 2]))
    evaluator.update(bigram_model(), {**batch([99]), "index": torch.tensor([2])})
    metrics = evaluator.compute()
    assert metrics["hr@1"] == pytest.approx(1 / 3) and metrics["hr@3"] == pytest.approx(2 / 3)
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1) / 3)  # 0.5
    assert metrics["ambiguous_targets"] == 1 and metrics["invalid"] == 0 and metrics["count"] == 3
    records = evaluator.records(prompts=["p0", "p1", "p2"])
    assert [r["row"] for r in records] == [0, 1, 2]
    assert records[0]["predict"] == ["<a_1><b_0>", "<a_0><b_0>", "<a_0><b_1>"]
    assert records[0]["predict_item_ids"] == [[2], [0, 3], [1]]
    assert records[0]["predict_titles"] == ["tape", "drill", "gloves"]
    assert records[0]["output"] == "<a_0><b_0>" and records[0]["target_sid_items"] == 2
    assert records[2]["output"] == "" and records[2]["input"] == "p2"
    results, metrics_path = write_results(tmp_path / "out", records, metrics)
    assert json.loads(results.read_text()) == records and json.loads(metrics_path.read_text()) == metrics
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["eval_results.json", "metrics.json"]


def test_invalid_predictions_counts_out_of_range_and_repeats():
    items = torch.tensor([[0, 1, 2], [1, 1, 7], [0, -1, -1]])
    scores = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0], [-1.0, float("-inf"), float("-inf")]])
    # row 0 fine; row 1 repeats item 1 and has item 7 of a 3-item catalog; row 2 has empty slots (not invalid)
    assert invalid_predictions(DecodingOutput(items, scores), num_items=3).tolist() == [0, 2, 0]


def test_padding_rows_are_decoded_but_not_counted():
    """Rows with index -1 (equal batches per rank under sharding) change neither metrics nor records."""
    padded = RankingEvaluator(CATALOG, VOCAB, EOS, num_beams=3, ks=(1, 3), keep_predictions=True)
    # rows: item 3 (rank 1), padding copy of row 0 with target -1, item 2 (rank 0), padding with a real target
    output = padded.update(bigram_model(), {**batch([3, -1, 2, 2]), "index": torch.tensor([0, -1, 1, -1])})
    assert output.items.shape == (4, 3)  # every row decoded: the same forwards on every rank
    plain = RankingEvaluator(CATALOG, VOCAB, EOS, num_beams=3, ks=(1, 3), keep_predictions=True)
    plain.update(bigram_model(), batch([3, 2]))
    metrics = padded.compute()
    assert metrics["count"] == 2 and metrics["hr@1"] == pytest.approx(1 / 2) and metrics["mrr"] == pytest.approx(3 / 4)
    assert metrics == plain.compute()
    assert [r["row"] for r in padded.records()] == [0, 1] and padded.records() == plain.records()

"""Ranking metrics: values worked out by hand, and exact counting under 2-process CPU DDP."""

import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rec_lightning.evaluation.metrics import RankingMetrics, metric_ks, target_ranks

KS = (1, 3, 5, 10)
# five rows: target at rank 0, rank 2, missing, rank 9, rank 4
RANKS = [0, 2, -1, 9, 4]
# HR@K = share of ranks < K: @1 {0} 1/5, @3 {0,2} 2/5, @5 {0,2,4} 3/5, @10 {0,2,9,4} 4/5
HAND_HR = {1: 0.2, 3: 0.4, 5: 0.6, 10: 0.8}
# NDCG gains 1/log2(rank+2): rank 0 -> 1, rank 2 -> 1/2, rank 4 -> 1/log2(6) = 0.386853, rank 9 -> 1/log2(11) = 0.289065
HAND_NDCG = {1: 1 / 5, 3: 1.5 / 5, 5: (1.5 + 0.386853) / 5, 10: (1.5 + 0.386853 + 0.289065) / 5}
# MRR: (1 + 1/3 + 0 + 1/10 + 1/5) / 5 = 1.633333 / 5
HAND_MRR = 1.633333 / 5


def test_hand_computed_values():
    metric = RankingMetrics(KS)
    metric.update(torch.tensor(RANKS[:2]))
    metric.update(torch.tensor(RANKS[2:]), invalid=torch.tensor([0, 2, 1]))
    result = metric.compute()
    for k in KS:
        assert result[f"hr@{k}"].item() == pytest.approx(HAND_HR[k])
        assert result[f"ndcg@{k}"].item() == pytest.approx(HAND_NDCG[k], abs=1e-6)
    assert result["mrr"].item() == pytest.approx(HAND_MRR, abs=1e-6)
    assert result["invalid"].item() == 3 and result["count"].item() == 5
    assert list(result) == ["hr@1", "hr@3", "hr@5", "hr@10", "ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "mrr",
                            "invalid", "count"]


def test_ndcg_uses_log2():
    metric = RankingMetrics((5,))
    metric.update(torch.tensor([1]))  # rank 1: 1/log2(3)
    assert metric.compute()["ndcg@5"].item() == pytest.approx(1 / math.log2(3))


def test_empty_metric_is_zero_not_nan():
    with pytest.warns(UserWarning, match="before the ``update``"):  # e.g. a DDP rank that got no rows
        result = RankingMetrics(KS).compute()
    assert result["hr@1"].item() == 0.0 and result["count"].item() == 0


def test_target_ranks():
    items = torch.tensor([[5, 3, 7], [1, 2, 3], [4, 4, -1], [-1, -1, -1]])
    targets = torch.tensor([3, 9, 4, -1])
    # rank of 3 in row 0 is 1; 9 is absent; the first 4 counts; an unknown target (-1) never hits
    assert target_ranks(items, targets).tolist() == [1, -1, 0, -1]


def test_metric_ks_clips_to_the_beam_width():
    assert metric_ks(50) == (1, 3, 5, 10, 20, 50)
    assert metric_ks(20) == (1, 3, 5, 10, 20)
    assert metric_ks(8) == (1, 3, 5)
    with pytest.raises(ValueError, match="no cut-off"):
        metric_ks(0)


# ------------------------------------------------------------------------------------ DDP
ODD_RANKS = [0, 2, -1, 9, 4, 1, 17]  # 7 rows: rank 0 of the group gets 4 rows, rank 1 gets 3


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        metric = RankingMetrics((1, 3, 5, 10, 20))
        for row in ODD_RANKS[rank::world_size]:  # one update per row: the ranks call update() 4 and 3 times
            metric.update(torch.tensor([row]), invalid=torch.tensor([row % 2]))
        result = {name: value.item() for name, value in metric.compute().items()}
        with open(f"{out_dir}/rank{rank}.json", "w") as handle:
            json.dump(result, handle)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_counts_every_row_once(tmp_path):
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    single = RankingMetrics((1, 3, 5, 10, 20))
    single.update(torch.tensor(ODD_RANKS), invalid=torch.tensor([r % 2 for r in ODD_RANKS]))
    expected = {name: value.item() for name, value in single.compute().items()}
    assert expected["count"] == 7
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["count"] == 7  # every row exactly once, none repeated
        assert result == pytest.approx(expected, abs=1e-12)

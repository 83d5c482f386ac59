"""The transition prior at decoding (``evaluate --prior transition``): the fused score by hand, weight 0 is the
model alone, and through the command: the same beams per row, re-ordered by the fused score, which the offline
analysis (benchmarks/rerank_offline.py) reproduces from the plain run's saved lists."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from rec_lightning.data.collate import pad_histories
from rec_lightning.data.records import SequenceRecord
from rec_lightning.modules.transition_prior import TransitionPrior, choose_prior_weight, prior_weight_ndcg
from rec_lightning.sids.codec import ItemCatalog

REPO = Path(__file__).resolve().parents[2]
# items 1 and 3 share a SID (key B)
CATALOG = ItemCatalog({0: ["<a_1>", "<b_2>", "<c_3>"], 1: ["<a_4>", "<b_2>", "<c_3>"], 2: ["<a_5>", "<b_0>", "<c_0>"],
                       3: ["<a_4>", "<b_2>", "<c_3>"], 4: ["<a_6>", "<b_0>", "<c_0>"]})


def record(user, history, target, row):
    return SequenceRecord("train", row, user, tuple(history), ("t",) * len(history), ("s",) * len(history),
                          target, "t", "s")


# each pair once per user: 0->1 x2, 1->2 x2, 2->0, 0->2; train targets 1, 2, 1, 0, 2
TRAIN = [record("u1", [0], 1, 0), record("u1", [0, 1], 2, 1), record("u2", [0], 1, 2), record("u2", [0, 1, 2], 0, 3),
         record("u3", [0], 2, 4)]
ITEM_TO_KEY = torch.tensor([0, 1, 2, 1, 3])  # keys A, B, C, D


def test_fused_scores_by_hand():
    prior = TransitionPrior(TRAIN, CATALOG, ITEM_TO_KEY, 4, weight=1.0, decay=0.5, mix=0.1)
    # history (0,): p_T = [0, 2/3, 1/3, 0, 0]; add-one popularity (targets 1, 2, 1, 0, 2) = [.2, .3, .3, .1, .1]
    # prior per item = .9 p_T + .1 pop = [.02, .63, .33, .01, .01] -> keys A .02, B .64, C .33, D .01
    assert prior.key_log_probs([(0,)]).exp()[0].tolist() == pytest.approx([0.02, 0.64, 0.33, 0.01])
    items = torch.tensor([[0, 2, 1, -1]])  # beams A, C, B and one empty slot
    scores = torch.tensor([[-1.0, -1.5, -2.0, float("-inf")]])
    new_items, new_scores = prior(items, scores, pad_histories([(0,)]))
    # A -1 + ln .02 = -4.912, C -1.5 + ln .33 = -2.609, B -2 + ln .64 = -2.446: B, C, A; the empty slot stays last
    assert new_items.tolist() == [[1, 2, 0, -1]]
    assert new_scores[0, :3].tolist() == pytest.approx([-2 + math.log(0.64), -1.5 + math.log(0.33), -1 + math.log(0.02)],
                                                       abs=1e-6)
    assert new_scores[0, 3] == float("-inf")
    same_items, same_scores = TransitionPrior(TRAIN, CATALOG, ITEM_TO_KEY, 4, weight=0.0)(items, scores,
                                                                                         pad_histories([(0,)]))
    assert torch.equal(same_items, items) and torch.equal(same_scores, scores)


def test_the_prior_weight_is_chosen_by_ndcg_by_hand():
    """``--prior_weight auto``'s choice: NDCG@k of the re-ranked lists per weight, the smallest best weight."""
    prior = TransitionPrior(TRAIN, CATALOG, ITEM_TO_KEY, 4, weight=0.0, decay=0.5, mix=0.1)
    # every row: history (0,), beams A -1, C -1.5, B -2 (keys 0, 2, 1); prior A .02, B .64, C .33 (as above)
    # weight 0: A, C, B; weight 0.25: C -1.777, A -1.978, B -2.112; weight 1: B, C, A
    items = torch.tensor([[0, 2, 1]] * 4)
    scores = torch.tensor([[-1.0, -1.5, -2.0]] * 4)
    targets = torch.tensor([1, 1, 0, -1])  # B, B, A, and a target outside the catalog (never a hit)
    ndcg = prior_weight_ndcg(prior, items, scores, [(0,)] * 4, targets, weights=(0.0, 0.25, 1.0), chunk=3)
    third, half = 1 / math.log2(3), 0.5
    assert ndcg == pytest.approx([(half + half + 1) / 4, (half + half + third) / 4, (1 + 1 + half) / 4])
    assert choose_prior_weight(ndcg, (0.0, 0.25, 1.0)) == 1.0
    assert prior_weight_ndcg(prior, items, scores, [(0,)] * 4, targets, weights=(0.0,), k=2) == [0.25]  # B at 3: 0
    level = prior_weight_ndcg(prior, items[1:3], scores[1:3], [(0,)] * 2, targets[1:3], weights=(0.0, 0.25, 1.0))
    assert level[0] == level[2] == pytest.approx(0.75) and choose_prior_weight(level, (0.0, 0.25, 1.0)) == 0.0


def offline_rerank(records, data_dir, weight, decay=0.3):
    """benchmarks/rerank_offline.py's independent re-rank of a plain run's saved test lists: row -> SIDs."""
    spec = importlib.util.spec_from_file_location("rerank_offline", REPO / "benchmarks" / "rerank_offline.py")
    offline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(offline)
    ordered = sorted(records, key=lambda r: int(r["row"]))
    log_prior = offline.priors(str(data_dir), "Demo_Shop", ordered, decay, split="test")["transition"]
    return {record["row"]: [record["predict"][j] for j in np.argsort(-(np.asarray(record["scores"]) + weight * prior),
                                                                      kind="stable")]
            for record, prior in zip(ordered, log_prior)}


def test_evaluate_with_the_prior_reorders_the_same_beams(quickstart_trained, quickstart_evaluated, tmp_path):
    checkpoint, data_dir, _ = quickstart_trained
    _, plain, plain_metrics, _ = quickstart_evaluated
    output = tmp_path / "prior"
    run_cli("evaluate", "--checkpoint", str(checkpoint), "--data_dir", str(data_dir), "--category", "Demo_Shop",
            "--split", "test", "--num_beams", "10", "--output", str(output), "--accelerator", "cpu", "--batch_size", "8",
            "--prior", "transition", "--prior_weight", "2.0", "--prior_decay", "0.3", cwd=REPO, timeout=300, check=True)
    records = json.loads((output / "eval_results.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["prior"] == {"kind": "transition", "weight": 2.0, "decay": 0.3, "mix": 0.1}
    assert plain_metrics["prior"] is None and metrics["hr@10"] == plain_metrics["hr@10"]  # the same beams
    by_row = {r["row"]: r for r in plain}
    moved = 0
    for record in records:
        before = by_row[record["row"]]
        assert sorted(record["predict"]) == sorted(before["predict"])
        assert record["scores"] == sorted(record["scores"], reverse=True)
        moved += record["predict"] != before["predict"]
    assert moved > 0  # the prior changed some lists

    # the offline analysis re-ranks the plain run's saved lists the same way (its scores are rounded to 1e-6,
    # so a near-tie may differ: allow none here, where the demo's fused scores are far apart)
    expected = offline_rerank(plain, data_dir, 2.0)
    assert {r["row"]: r["predict"] for r in records} == expected


@pytest.mark.slow  # ~15 s (two more decodes); the default tier is at its 8-minute limit on this machine
def test_evaluate_chooses_the_prior_weight_on_valid(quickstart_trained, quickstart_evaluated, tmp_path):
    """``--prior_weight auto``: the weight with the best NDCG@10 on the (seeded) valid rows, recorded, then used on
    test; its weight-0 NDCG is the plain model's on the same valid rows, its test lists the offline re-rank's."""
    checkpoint, data_dir, _ = quickstart_trained
    _, plain, _, _ = quickstart_evaluated
    common = ("--checkpoint", str(checkpoint), "--data_dir", str(data_dir), "--category", "Demo_Shop", "--num_beams",
              "10", "--accelerator", "cpu", "--batch_size", "8")
    run_cli("evaluate", *common, "--split", "test", "--output", str(tmp_path / "auto"), "--prior", "transition",
            "--prior_weight", "auto", "--prior_tune_limit", "40", cwd=REPO, timeout=300, check=True)
    run_cli("evaluate", *common, "--split", "valid", "--limit", "40", "--output", str(tmp_path / "valid"),
            cwd=REPO, timeout=300, check=True)
    prior = json.loads((tmp_path / "auto" / "metrics.json").read_text())["prior"]
    chosen = prior["chosen"]
    assert chosen["split"] == "valid" and chosen["rows"] == 40 and list(chosen["by_weight"]) == [
        "0", "0.25", "0.5", "1", "2", "3", "5", "8"]
    best = max(chosen["by_weight"].values())
    assert prior["weight"] == min(float(w) for w, v in chosen["by_weight"].items() if v == best)
    valid_ndcg = json.loads((tmp_path / "valid" / "metrics.json").read_text())["ndcg@10"]
    assert chosen["by_weight"]["0"] == pytest.approx(valid_ndcg, abs=1e-5)
    records = json.loads((tmp_path / "auto" / "eval_results.json").read_text())
    assert {r["row"]: r["predict"] for r in records} == offline_rerank(plain, data_dir, prior["weight"])
    refused = run_cli("evaluate", "--checkpoint", "x", "--output", "y", "--prior", "transition", "--prior_weight",
                      "heavy", cwd=REPO, timeout=120, check=False)
    assert refused.returncode != 0 and "--prior_weight must be a number >= 0 or 'auto'" in refused.stderr


@pytest.mark.slow  # ~17 s (the default tier's 8-minute limit); evaluate with the prior stays in the default tier
def test_recommend_with_the_prior_ranks_like_evaluate_with_it(quickstart_trained, tmp_path):
    """Recommender.use_transition_prior and ``recommend --prior`` give ``evaluate --prior``'s lists for the same rows."""
    from rec_lightning.data.records import load_rec_data
    from rec_lightning.recommend import Recommender

    checkpoint, data_dir, examples = quickstart_trained
    output = tmp_path / "prior"
    run_cli("evaluate", "--checkpoint", str(checkpoint), "--data_dir", str(data_dir), "--category", "Demo_Shop",
            "--split", "test", "--num_beams", "10", "--output", str(output), "--accelerator", "cpu", "--batch_size", "8",
            "--prior", "transition", "--prior_weight", "0.7", cwd=REPO, timeout=300, check=True)
    records = {r["row"]: r for r in json.loads((output / "eval_results.json").read_text())}
    recommender = Recommender.from_checkpoint(checkpoint, data_dir=str(data_dir), batch_size=8)
    recommender.use_transition_prior(load_rec_data(data_dir, "Demo_Shop", splits=("train",)).splits["train"], 0.7)
    histories = [list(e.history_item_ids) for e in examples]
    results = recommender.recommend(histories, k=10, num_beams=10)
    for example, result in zip(examples, results):
        assert result.sids == records[example.row]["predict"]
        assert [round(s, 6) for s in result.scores] == pytest.approx(records[example.row]["scores"], abs=1e-5)
    first = examples[0]
    shell = run_cli("recommend", "--checkpoint", str(checkpoint), "--data_dir", str(data_dir),
                    "--history", ",".join(map(str, first.history_item_ids)), "--k", "5", "--num_beams", "10",
                    "--prior", "transition", "--prior_weight", "0.7", "--json", str(tmp_path / "top.json"),
                    cwd=REPO, timeout=300, check=True)
    top = json.loads((tmp_path / "top.json").read_text())[0]["recommendations"]
    assert [row["sid"] for row in top] == records[first.row]["predict"][:5], shell.stdout
    refused = run_cli("recommend", "--checkpoint", str(checkpoint), "--history", "1,2", "--prior", "transition",
                      cwd=REPO, timeout=300, check=False)
    assert refused.returncode != 0 and "counts the train split of --data_dir" in refused.stderr


def test_bad_prior_options_are_refused():
    result = run_cli("evaluate", "--checkpoint", "x", "--output", "y", "--prior", "transition", "--prior_weight", "-1",
                     cwd=REPO, timeout=120, check=False)
    assert result.returncode != 0 and "--prior_weight must be >= 0" in result.stderr
    for extra, message in ((("--prior", "transition", "--prior_tune_limit", "10"), "needs --prior_weight auto"),
                           (("--prior_weight", "auto"), "add --prior transition")):
        result = run_cli("evaluate", "--checkpoint", "x", "--output", "y", *extra, cwd=REPO, timeout=120, check=False)
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr

import numpy as np
import pytest

from rec_lightning.rl.rewards import (SemanticReward, combine_rewards, prefix_reward, rank_penalties, ranking_only_reward,
                                   ranking_reward, rule_reward)
from rec_lightning.sids.codec import ItemCatalog

T = "<a_1><b_2><c_3>"
X, Y, Z, W = "<a_1><b_2><c_9>", "<a_1><b_5><c_3>", "<a_4><b_2><c_3>", "<a_7><b_7><c_7>"
# Two groups of G = 4: the first contains the target at beam rank 1, the second does not.
COMPLETIONS = [X, T, Y, Z, X, Y, Z, W]
TARGETS = [T] * 8


def test_rank_penalties_hand_worked():
    # discounts 1/log2(i+2) = 1, 0.63093, 0.5, 0.43068; sum 2.56161
    assert rank_penalties(4) == pytest.approx([-0.39038, -0.24630, -0.19519, -0.16813], abs=1e-5)
    weights = rank_penalties(16)  # the values listed in minionerec-reference.md 4.6
    assert weights[:3] == pytest.approx([-0.16377, -0.10333, -0.08189], abs=1e-5)
    assert weights[-1] == pytest.approx(-0.04007, abs=1e-5)
    assert sum(weights) == pytest.approx(-1.0)


def test_rule_ranking_and_ranking_only():
    assert rule_reward(COMPLETIONS, TARGETS, 4) == [0, 1, 0, 0, 0, 0, 0, 0]
    assert ranking_only_reward(COMPLETIONS, TARGETS, 4) == pytest.approx(
        [-0.39038, 0.0, -0.19519, -0.16813, 0, 0, 0, 0], abs=1e-5)
    assert ranking_reward(COMPLETIONS, TARGETS, 4) == pytest.approx(
        [-0.39038, 1.0, -0.19519, -0.16813, 0, 0, 0, 0], abs=1e-5)


def test_prefix_reward_counts_leading_levels():
    assert prefix_reward([T, X, Y, Z], [T] * 4, 4) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


def test_semantic_reward_cosine_and_shared_sid():
    catalog = ItemCatalog({0: ["<a_1>", "<b_2>", "<c_3>"], 1: ["<a_4>", "<b_2>", "<c_3>"], 2: ["<a_5>", "<b_0>", "<c_0>"],
                           3: ["<a_4>", "<b_2>", "<c_3>"]})
    embeddings = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-3.0, 0.0]])
    reward = SemanticReward(embeddings, catalog)
    # item 2 vs item 0: cos 45 deg = 0.70711; the SID of items 1 and 3 vs item 0: mean(0, -1) = -0.5
    assert reward(["<a_5><b_0><c_0>", Z, T], [T] * 3, 1) == pytest.approx([0.70711, -0.5, 1.0], abs=1e-5)
    with pytest.raises(ValueError, match="not an item of the catalog"):
        reward([W], [T], 1)
    with pytest.raises(ValueError, match="a row per item id"):
        SemanticReward(embeddings[:2], catalog)


def test_combine_rewards_weights():
    result = combine_rewards({"rule": rule_reward, "prefix": prefix_reward}, {"rule": 1.0, "prefix": 0.5},
                             [T, X], [T, T], 2)
    assert result.total == pytest.approx([1.5, 1 / 3])
    assert result.per_function["prefix"] == pytest.approx([1.0, 2 / 3])


def test_group_shape_errors():
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        rule_reward([T] * 4, [T] * 4, 3)
    with pytest.raises(ValueError, match="4 completions but 3 targets"):
        rule_reward([T] * 4, [T] * 3, 2)

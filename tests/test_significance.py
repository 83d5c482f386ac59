"""Paired bootstrap intervals and the sign-flip test on examples small enough to work out by hand."""

import math

import numpy as np
import pytest

from rec_lightning.evaluation.significance import compare_ranks, paired_bootstrap, per_row_values


def test_per_row_values_from_ranks():
    ranks = [0, 2, 9, 10, -1]
    assert per_row_values(ranks, "hr@10").tolist() == [1, 1, 1, 0, 0]
    assert per_row_values(ranks, "hr@3").tolist() == [1, 1, 0, 0, 0]
    # NDCG@10: 1/log2(2) = 1, 1/log2(4) = 0.5, 1/log2(11) = 0.28906, then 0 (rank 10 is the 11th item)
    assert per_row_values(ranks, "ndcg@10") == pytest.approx([1.0, 0.5, 1 / math.log2(11), 0.0, 0.0])
    assert per_row_values(ranks, "mrr") == pytest.approx([1.0, 1 / 3, 0.1, 1 / 11, 0.0])
    assert per_row_values(ranks, "mrr@10") == pytest.approx([1.0, 1 / 3, 0.1, 0.0, 0.0])
    with pytest.raises(ValueError, match="unknown metric"):
        per_row_values(ranks, "recall@10")


def test_every_row_better_by_one():
    # B beats A by exactly 1 on all 4 rows: every resample's mean difference is 1, so the interval is [1, 1];
    # a sign flip reaches |mean| >= 1 only when all 4 signs agree: 2 of 16 patterns, p ~ 0.125
    result = paired_bootstrap([0, 0, 0, 0], [1, 1, 1, 1], "hr@10", num_samples=20_000, seed=1)
    assert (result.difference, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)
    assert result.p_value == pytest.approx(0.125, abs=0.01)
    assert result.excludes_zero() and math.isnan(result.relative)


def test_identical_runs_have_a_zero_interval_and_p_one():
    values = np.array([1.0, 0.0, 0.5, 0.0])
    result = paired_bootstrap(values, values, num_samples=2000)
    assert (result.difference, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not result.excludes_zero()


def test_interval_matches_the_normal_approximation_on_many_rows():
    # 2,000 rows, B hits on 10% more of them: diff = 0.1, sd of the per-row difference = 0.3, so the 95%
    # interval is about 0.1 +- 1.96 * 0.3 / sqrt(2000) = 0.1 +- 0.0131
    delta = np.zeros(2000)
    delta[:200] = 1.0
    result = paired_bootstrap(np.zeros(2000), delta, num_samples=4000, seed=3)
    assert result.difference == pytest.approx(0.1)
    assert result.ci_low == pytest.approx(0.1 - 0.0131, abs=0.003)
    assert result.ci_high == pytest.approx(0.1 + 0.0131, abs=0.003)
    assert result.p_value < 0.001


def test_compare_ranks_is_deterministic_and_checks_lengths():
    a, b = [0, -1, 3, -1, 1], [0, 0, 3, -1, -1]
    first = compare_ranks(a, b, ["hr@10", "ndcg@10"], num_samples=500, seed=7)
    assert first == compare_ranks(a, b, ["hr@10", "ndcg@10"], num_samples=500, seed=7)
    assert first[0].mean_a == pytest.approx(0.6) and first[0].mean_b == pytest.approx(0.6)
    with pytest.raises(ValueError, match="same non-zero number of rows"):
        paired_bootstrap([1, 0], [1])

"""Paired comparisons of two runs on the same rows: bootstrap confidence intervals and a paired test.

Per-row metric values come from each row's target rank (-1 = not in the list): HR@K is 1 when
``0 <= rank < K``, NDCG@K is ``1 / log2(rank + 2)`` then, MRR is ``1 / (rank + 1)`` over the whole list.
The intervals of each run's mean and of the difference ``B - A`` resample rows with replacement (the same rows for both runs,
which is what makes it paired) and takes percentiles; the p-value is a paired sign-flip permutation
test of the mean difference (two-sided, with the +1 correction so it is never exactly 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rec_lightning.errors import ConfigurationError


def per_row_values(ranks: Sequence[int], metric: str) -> np.ndarray:
    """Each row's value of ``metric`` (``hr@K``, ``ndcg@K`` or ``mrr``) from its 0-based target rank.

    Raises:
        ValueError: an unknown metric name.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    hit = ranks >= 0
    name, _, cutoff = metric.partition("@")
    if name == "mrr":
        limit = int(cutoff) if cutoff else np.iinfo(np.int64).max
        return np.where(hit & (ranks < limit), 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0)  # no 1/0 for misses
    if name in ("hr", "ndcg") and cutoff.isdigit():
        inside = hit & (ranks < int(cutoff))
        if name == "hr":
            return inside.astype(np.float64)
        return np.where(inside, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    raise ConfigurationError(f"unknown metric {metric!r}: use hr@K, ndcg@K, mrr or mrr@K")


@dataclass
class PairedComparison:
    """Run A and run B on the same N rows, for one metric."""

    metric: str
    count: int
    mean_a: float
    mean_b: float
    difference: float  # mean_b - mean_a
    ci_low: float  # bootstrap percentile interval of the difference
    ci_high: float
    relative: float  # difference / mean_a (nan when mean_a is 0)
    p_value: float  # paired sign-flip test, two-sided
    confidence: float
    ci_a_low: float = math.nan  # bootstrap percentile interval of mean_a (same resampled rows)
    ci_a_high: float = math.nan
    ci_b_low: float = math.nan  # ... and of mean_b
    ci_b_high: float = math.nan

    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def paired_bootstrap(values_a: Sequence[float], values_b: Sequence[float], metric: str = "metric",
                     num_samples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Bootstrap interval of ``mean(B) - mean(A)`` over paired rows, and a paired permutation p-value.

    Args:
        values_a, values_b: per-row values of the two runs, row i of both being the same user.
        num_samples: bootstrap resamples (and sign-flip permutations).
        confidence: e.g. 0.95 for a 95% interval.
        seed: the resampling seed (results are deterministic for a seed).

    Raises:
        ValueError: different lengths, no rows, or a confidence outside (0, 1).
    """
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired values need the same non-zero number of rows, got {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ConfigurationError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    delta = b - a  # [N]
    n = delta.size
    means = np.empty(num_samples)
    means_a = np.empty(num_samples)
    means_b = np.empty(num_samples)
    for start in range(0, num_samples, 1000):  # chunks keep memory at 1000 x N
        rows = rng.integers(0, n, size=(min(1000, num_samples - start), n))
        means[start:start + rows.shape[0]] = delta[rows].mean(axis=1)
        means_a[start:start + rows.shape[0]] = a[rows].mean(axis=1)
        means_b[start:start + rows.shape[0]] = b[rows].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    a_low, a_high = np.quantile(means_a, [tail, 1 - tail])
    b_low, b_high = np.quantile(means_b, [tail, 1 - tail])
    observed = delta.mean()
    extreme = 0
    for start in range(0, num_samples, 1000):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(1000, num_samples - start), n))
        extreme += int((np.abs((signs * delta).mean(axis=1)) >= abs(observed) - 1e-15).sum())
    mean_a = float(a.mean())
    return PairedComparison(metric=metric, count=n, mean_a=mean_a, mean_b=float(b.mean()), difference=float(observed),
                            ci_low=float(low), ci_high=float(high),
                            relative=float(observed / mean_a) if mean_a else math.nan,
                            p_value=(extreme + 1) / (num_samples + 1), confidence=confidence,
                            ci_a_low=float(a_low), ci_a_high=float(a_high), ci_b_low=float(b_low),
                            ci_b_high=float(b_high))


def compare_ranks(ranks_a: Sequence[int], ranks_b: Sequence[int], metrics: Sequence[str] = ("hr@10", "ndcg@10"),
                  num_samples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> list[PairedComparison]:
    """:func:`paired_bootstrap` of each metric, from the two runs' per-row target ranks."""
    return [paired_bootstrap(per_row_values(ranks_a, m), per_row_values(ranks_b, m), m, num_samples, confidence, seed)
            for m in metrics]

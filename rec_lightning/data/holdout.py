"""A seeded slice of the train rows kept out of a training run (e.g. out of SFT, for GRPO later).

Issue 29's question: does GRPO help more on prompts SFT has not fitted? The SFT run holds the slice out; the
GRPO run, on the same data folder, trains on all rows (or on the held-out slice alone: ``train_on: heldout``).
Measured (benchmarks/README.md): SFT on 90% of the rows scores as SFT on all of them; GRPO from such a start
gained +3% test NDCG@10 from one SFT start and -0.9% from another, so no recipe holds rows out by default.

The slice is a function of the row count, the fraction and the seed only (``numpy.random.default_rng(seed)``
draws the kept rows without replacement), so it is recorded by those three numbers (the data module's
hyperparameters, in every checkpoint) and the SFT and GRPO runs agree on it without a file. It is the same
draw as ``benchmarks/subsample_train.py --fraction (1 - holdout_fraction) --seed S``, whose folders
list the row numbers.

Rows, not users: MiniOneRec's train rows are each user's growing prefixes, so with ``history_loss`` a
held-out row contained in a kept row of the same user is still trained through that row's history
(:mod:`rec_lightning.data.windows`); what the model never sees are the held-out rows' targets that no
kept row continues to. Time and memory: O(rows).
"""

from __future__ import annotations

import numpy as np

from rec_lightning.errors import ConfigurationError


def kept_rows(num_rows: int, keep_fraction: float, seed: int) -> np.ndarray:
    """Sorted row numbers of a seeded draw of ``max(1, round(keep_fraction * num_rows))`` of ``num_rows`` rows."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ConfigurationError(f"the kept fraction must be in (0, 1], got {keep_fraction}")
    size = max(1, round(keep_fraction * num_rows))
    return np.sort(np.random.default_rng(seed).choice(num_rows, size=size, replace=False))


def split_rows(num_rows: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sorted row numbers: the complement of :func:`kept_rows` at ``1 - holdout_fraction``.

    Raises:
        ConfigurationError: a fraction outside ``(0, 1)``, or one that holds out no row of ``num_rows``.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ConfigurationError(f"holdout_fraction must be in (0, 1) to split the rows, got {holdout_fraction}")
    kept = kept_rows(num_rows, 1.0 - holdout_fraction, seed)
    held_out = np.setdiff1d(np.arange(num_rows), kept)
    if held_out.size == 0:
        raise ConfigurationError(f"holdout_fraction {holdout_fraction} of {num_rows} train rows holds out no row: "
                                 "raise it, or set it to 0 to train on every row")
    return kept, held_out

"""Training-loss options of SFT: label smoothing and per-SID-level token weights (issue 29's top-of-list knobs).

Both change only the *training* loss; validation loss stays the plain token-mean cross-entropy, so runs with
different settings stay comparable on ``val/loss``. With neither set, the training loss is exactly the plain one.

- ``label_smoothing`` (``F.cross_entropy``'s): the target keeps ``1 - s`` of the probability, the rest is spread
  uniformly over the whole vocabulary.
- ``level_weights``: the loss of a response token whose target is a SID token of level ``l`` (``<a_*>`` is level
  0, ``<b_*>`` level 1, ...) is multiplied by ``level_weights[l]``; every other response token (``\\n``, EOS, the
  text of non-SID tasks, SID levels beyond the list) weighs 1. The batch loss is the weighted mean (sum of weighted
  token losses over the sum of the weights), so ``[1, 1, 1]`` is the plain loss and ``[2, 1, 1]`` doubles the
  first level's share of the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rec_lightning.errors import ConfigurationError


@dataclass
class LossOptions:
    """SFT training-loss settings (validation loss is always the plain cross-entropy)."""

    label_smoothing: float = 0.0
    """Label smoothing of the training cross-entropy, in [0, 1)."""
    level_weights: tuple[float, ...] | None = None
    """Weight per SID level of a target token, e.g. [2.0, 1.0, 1.0]; other tokens weigh 1 (None: all 1)."""

    def check(self) -> None:
        """Raises ConfigurationError naming the option when a value is out of range."""
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigurationError(f"--model.init_args.loss.label_smoothing must be in [0, 1) (e.g. 0.1), got "
                                     f"{self.label_smoothing}")
        if self.level_weights is not None and (not self.level_weights or any(w < 0 for w in self.level_weights)
                                               or not any(w > 0 for w in self.level_weights)):
            raise ConfigurationError(f"--model.init_args.loss.level_weights must be non-negative weights per SID level "
                                     f"with at least one > 0 (e.g. [2.0, 1.0, 1.0]), got {list(self.level_weights)}")

    @property
    def is_plain(self) -> bool:
        return self.label_smoothing == 0.0 and self.level_weights is None


def sid_level_token_weights(level_weights: Sequence[float] | None, num_rows: int, sid_tokens: Sequence[str],
                            sid_token_ids: Sequence[int]) -> torch.Tensor | None:
    """``[num_rows]`` float32 weight per vocabulary id: ``level_weights[level]`` for SID tokens, 1 elsewhere.

    ``sid_tokens[i]`` (e.g. ``"<b_17>"``) has id ``sid_token_ids[i]``; None when ``level_weights`` is None.
    """
    if level_weights is None:
        return None
    from rec_lightning.sids.codec import parse_sid_token

    weights = torch.ones(num_rows, dtype=torch.float32)
    for token, token_id in zip(sid_tokens, sid_token_ids):
        level, _ = parse_sid_token(token)
        if level < len(level_weights):
            weights[token_id] = float(level_weights[level])
    return weights

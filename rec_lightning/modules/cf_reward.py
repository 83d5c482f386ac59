"""The ``cf`` GRPO reward: how likely a collaborative-filtering model (our SASRec) finds each completion.

For a prompt whose user history is ``h`` and a completion whose SID is ``s``, the reward is the SASRec
probability of ``s`` as the next item: ``sum_{j in items(s)} softmax(SASRec(h))_j`` (a SID shared by
several items gets the mass of all of them). It is dense (every completion gets a graded value, not only
the target) and independent of the target, so it pulls the policy towards what the user's behaviour
suggests even in groups without the target.

Deviation from MiniOneRec (minionerec-reference.md 4.6 and defect 19): the original uses the raw SASRec
logit, whose scale depends on the model and makes a fixed weight against the other rewards meaningless;
a probability lies in [0, 1] like them. Histories come from the data (``history_item_ids`` of the batch,
item ids), never from prompt text, so it works with every prompt template; they are truncated to the
SASRec's ``max_history``; an item not in the catalog is an error, never a random item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from rec_lightning.modules.sasrec import check_sasrec_catalog, load_sasrec
from rec_lightning.rl.rewards import SIDProbabilityReward
from rec_lightning.sids.codec import ItemCatalog


class CollaborativeReward(SIDProbabilityReward):
    """``cf`` reward: the SASRec probability of each completion's SID given the prompt's item history.

    Args:
        checkpoint: a SASRec ``final_checkpoint/`` (``fit --config configs/sasrec.yaml``).
        catalog: the data's catalog (SID -> item ids); checked against the checkpoint's.

    Called as ``reward(completions, targets, group_size, histories=...)`` with ``histories`` one tuple of
    item ids per prompt (B of them for B x G completions).
    """

    __name__ = "cf"

    def __init__(self, checkpoint: str | Path, catalog: ItemCatalog) -> None:
        super().__init__(catalog)
        self.network, config = load_sasrec(checkpoint)
        check_sasrec_catalog(config, catalog, checkpoint)
        self.max_history = config["max_history"]

    @torch.no_grad()
    def probabilities(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[B, num_items]`` next-item probabilities of SASRec for each history."""
        tokens = []
        for history in histories:
            kept = [int(i) + 1 for i in history][-self.max_history:]  # token = item id + 1, 0 = padding
            tokens.append([0] * (self.max_history - len(kept)) + kept)
        logits = self.network.score_histories(torch.tensor(tokens, dtype=torch.long))
        return logits.float().softmax(dim=-1)

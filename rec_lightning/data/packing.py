"""Packed training batches: a micro-batch's examples laid end to end in as few rows as fit, no padding between.

A random micro-batch of the SFT mix is more than half padding (``benchmarks/README.md``: 58% on
Industrial). :class:`PackingCollator` takes the *same* micro-batch the sampler drew (so the number of
examples per step, the epoch's order, resumption, the DDP shards, ``estimated_stepping_batches`` and
the LR schedule do not change) and places its examples first-fit decreasing (longest first) into rows of
``capacity`` tokens (chosen per batch for the fewest positions, or ``pack_length``). Each example keeps
its own position ids (0, 1, ... from its first token) and attends only to itself: the batch carries
``position_ids`` and no attention mask for the model, and ``transformers`` builds the block-diagonal
causal mask from the position-id resets (``masking_utils.find_packed_sequence_indices``; sdpa, eager
and flex attention). The first token of every example is unlabelled, so the last token of the example
before it in the row predicts nothing (unpacked, no position predicts an example's first token either):
the summed loss and its gradients are those of the unpacked batch (``tests/data/test_packing.py``).

Keys of a packed batch: ``input_ids``, ``labels``, ``position_ids`` ``[R, C]`` (R rows <= B);
``attention_mask`` ``[R, C]`` marks real tokens, for counting only (the model gets ``position_ids``
instead: :func:`rec_lightning.modules.sft.response_loss_sum`); ``example_index`` ``[R, C]``: which example of the batch each
token belongs to (-1 on padding); ``index``, ``target_item_id`` ``[B]`` and ``history_item_ids``
``[B, H]`` per example, as unpacked.

Cost: at most 13 first-fit passes per batch, each O(B x R) on lengths alone; the tensors are R x C instead of B x longest.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rec_lightning.data.collate import pad_histories
from rec_lightning.data.dataset import IGNORE_INDEX


def first_fit(lengths: Sequence[int], capacity: int, decreasing: bool = True) -> list[list[int]]:
    """Bins of positions into ``lengths``: each length goes into the first bin with room, longest first
    (first-fit decreasing, ties in batch order; ``decreasing=False`` keeps batch order). Each bin lists its
    positions in the order placed.

    Raises:
        ValueError: a length larger than ``capacity``.
    """
    bins: list[list[int]] = []
    room: list[int] = []
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if decreasing else range(len(lengths))
    for position in order:
        length = lengths[position]
        if length > capacity:
            raise ValueError(f"example {position} has {length} tokens, more than the pack capacity {capacity}")
        for b, free in enumerate(room):
            if free >= length:
                bins[b].append(position)
                room[b] -= length
                break
        else:
            bins.append([position])
            room.append(capacity - length)
    return bins


class PackingCollator:
    """Pack a micro-batch of labelled items (see the module docstring).

    Args:
        pad_token_id: id written into the unused tail of a row.
        pack_length: the row length. None chooses per batch the length with the fewest positions
            (rows x length) among the batch's longest example times 1, 1.25, 1.5, ... 4, up to
            ``max_pack_length``; ties go to the shorter rows (less attention work). A number fixes the row
            length (the longest example if that is longer), one tensor shape for every step.
        max_pack_length: the longest row ``pack_length=None`` may choose (the data's ``max_length``).
    """

    def __init__(self, pad_token_id: int, pack_length: int | None = None, max_pack_length: int | None = None) -> None:
        if pack_length is not None and pack_length < 1:
            raise ValueError(f"pack_length must be a positive number of tokens or None, got {pack_length}")
        self.pad_token_id = pad_token_id
        self.pack_length = pack_length
        self.max_pack_length = max_pack_length

    def layout(self, lengths: Sequence[int]) -> tuple[int, list[list[int]]]:
        """``(row length, rows of batch positions)`` for items of these lengths."""
        longest = max(lengths)
        if self.pack_length is not None:
            capacity = max(longest, self.pack_length)
            return capacity, first_fit(lengths, capacity)
        limit = max(longest, self.max_pack_length or 4 * longest)
        best: tuple[int, list[list[int]]] | None = None
        for quarter in range(4, 17):
            capacity = min(limit, -(-longest * quarter // 4))
            bins = first_fit(lengths, capacity)
            if best is None or len(bins) * capacity < len(best[1]) * best[0]:
                best = (capacity, bins)
            if capacity == limit or len(bins) == 1:
                break
        return best

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        if "labels" not in items[0]:
            raise ValueError("packing needs labelled items (train_format 'sft'); generation batches are left-padded")
        lengths = [len(item["input_ids"]) for item in items]
        capacity, bins = self.layout(lengths)
        shape = (len(bins), capacity)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        example_index = torch.full(shape, -1, dtype=torch.long)
        for row, members in enumerate(bins):
            start = 0
            for k in members:
                n = lengths[k]
                span = slice(start, start + n)
                input_ids[row, span] = torch.tensor(items[k]["input_ids"], dtype=torch.long)
                labels[row, span] = torch.tensor(items[k]["labels"], dtype=torch.long)
                labels[row, start] = IGNORE_INDEX  # predicted by nothing unpacked; packed, the previous example's end would
                position_ids[row, span] = torch.arange(n)
                attention_mask[row, span] = 1
                example_index[row, span] = k
                start += n
            # the tail: its own run of positions 0, 1, ... (a separate "sequence" for the mask), unlabelled
            position_ids[row, start:] = torch.arange(capacity - start)
        batch = {
            "input_ids": input_ids, "labels": labels, "position_ids": position_ids,
            "attention_mask": attention_mask, "example_index": example_index,
            "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
            "target_item_id": torch.tensor([item["target_item_id"] for item in items], dtype=torch.long),
        }
        if "history_item_ids" in items[0]:
            batch["history_item_ids"] = pad_histories([item["history_item_ids"] for item in items])
        return batch

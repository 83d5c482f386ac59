"""Pad tokenized items into tensors: right padding for training, left padding for generation."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from rec_lightning.data.dataset import IGNORE_INDEX


class Collator:
    """Batch items of :class:`~rec_lightning.data.dataset.RecDataset`.

    Args:
        pad_token_id: id written into padding positions (masked by ``attention_mask``).
        padding_side: ``"right"`` for teacher-forced training, ``"left"`` for generation, so every
            prompt ends at the last column.

    Returns (when called):
        ``input_ids`` and ``attention_mask`` [B, L]; ``labels`` [B, L] (-100 on padding) when the items
        have labels; ``index`` and ``target_item_id`` [B]; ``history_item_ids`` [B, H] (the item ids of each
        example's history, oldest first, left-padded with -1; H = the longest history in the batch).
    """

    def __init__(self, pad_token_id: int, padding_side: Literal["right", "left"] = "right") -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        batch_size = len(items)
        input_ids = torch.full((batch_size, length), self.pad_token_id, dtype=torch.long)  # [B, L]
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)  # [B, L]
        has_labels = "labels" in items[0]
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long) if has_labels else None
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            span = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            input_ids[row, span] = torch.tensor(item["input_ids"], dtype=torch.long)
            attention_mask[row, span] = 1
            if labels is not None:
                labels[row, span] = torch.tensor(item["labels"], dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
            "target_item_id": torch.tensor([item["target_item_id"] for item in items], dtype=torch.long),
        }
        if labels is not None:
            batch["labels"] = labels
        if "history_item_ids" in items[0]:
            batch["history_item_ids"] = pad_histories([item["history_item_ids"] for item in items])
        return batch


def pad_histories(histories: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[B, H]`` item ids, each history right-aligned (oldest first) and left-padded with -1."""
    width = max((len(h) for h in histories), default=0)
    padded = torch.full((len(histories), width), -1, dtype=torch.long)
    for row, history in enumerate(histories):
        if history:
            padded[row, width - len(history):] = torch.tensor(history, dtype=torch.long)
    return padded


def unpad_histories(padded: torch.Tensor) -> list[tuple[int, ...]]:
    """The inverse of :func:`pad_histories`: one tuple of item ids per row."""
    return [tuple(i for i in row if i >= 0) for row in padded.tolist()]


def padding_fraction(attention_mask: torch.Tensor) -> float:
    """Share of padded positions in a batch: ``1 - real tokens / (B * L)``."""
    return 1.0 - attention_mask.sum().item() / attention_mask.numel()

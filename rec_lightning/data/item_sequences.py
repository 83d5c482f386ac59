"""``ItemSequenceDataModule``: the same split CSVs as item-id sequences, for SASRec and the count baselines.

Item id ``j`` is token ``j + 1``; 0 is padding. Sequences are left-padded to ``max_history`` so the
most recent item always sits at the last position.

- train: each row's sequence (history + target, its last ``max_history + 1`` items) gives inputs
  ``seq[:-1]`` and labels ``seq[1:]``: a next-item target at every position (SASRec's objective).
  With ``drop_contained_windows`` (default) only each user's maximal rows are kept
  (:mod:`rec_lightning.data.windows`): a contained row repeats targets a longer row already trains.
- valid/test: each row's history, its target item id and its row number, in file order.

It subclasses :class:`~rec_lightning.data.RecDataModule` for the data location, the category and
the demo data set, but tokenizes nothing.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.data.demo import make_demo_data
from rec_lightning.data.records import SequenceRecord, load_rec_data
from rec_lightning.data.windows import maximal_windows
from rec_lightning.errors import ConfigurationError

log = logging.getLogger(__name__)
PAD = 0


def encode_history(item_ids: Sequence[int], max_history: int) -> list[int]:
    """The last ``max_history`` items as tokens (id + 1), left-padded with 0 to ``max_history``."""
    tokens = [i + 1 for i in item_ids][-max_history:]
    return [PAD] * (max_history - len(tokens)) + tokens


class _TensorDictDataset(Dataset):
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def training_tensors(records: Sequence[SequenceRecord], max_history: int) -> dict[str, torch.Tensor]:
    """``input_ids [N, L]`` and ``labels [N, L]`` (next token at each position, 0 = no label)."""
    inputs, labels = [], []
    for record in records:
        sequence = [*record.history_item_ids, record.item_id][-(max_history + 1):]
        inputs.append(encode_history(sequence[:-1], max_history))
        labels.append(encode_history(sequence[1:], max_history))
    return {"input_ids": torch.tensor(inputs, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}


def evaluation_tensors(records: Sequence[SequenceRecord], max_history: int) -> dict[str, torch.Tensor]:
    """``input_ids [N, L]`` (histories), ``target_item_id [N]`` and ``row [N]``."""
    return {"input_ids": torch.tensor([encode_history(r.history_item_ids, max_history) for r in records],
                                      dtype=torch.long),
            "target_item_id": torch.tensor([r.item_id for r in records], dtype=torch.long),
            "row": torch.tensor([r.row for r in records], dtype=torch.long)}


class ItemSequenceDataModule(RecDataModule):
    """Item-id sequences of one category in the MiniOneRec layout.

    Args:
        data_dir: folder with ``train/ valid/ test/ info/ index/``; None generates the demo data set.
        category: file-name category; None picks the only one present.
        max_history: sequence length (the most recent items kept).
        batch_size: training batch.
        eval_batch_size: validation/test batch (default: batch_size).
        num_workers: DataLoader workers.
        seed: shuffling seed.
        drop_contained_windows: train only on each user's maximal rows.
        cache_dir: where the demo data goes (default ``~/.cache/rec_lightning``).
        demo_seed: seed of the generated demo data set.
        demo_num_users: users in the generated demo data set.
    """

    def __init__(self, data_dir: str | None = None, category: str | None = None, max_history: int = 10,
                 batch_size: int = 128, eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 42,
                 drop_contained_windows: bool = True, cache_dir: str | None = None, demo_seed: int = 0,
                 demo_num_users: int = 500) -> None:
        super().__init__(data_dir=data_dir, category=category, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         num_workers=num_workers, seed=seed, cache_dir=cache_dir, demo_seed=demo_seed,
                         demo_num_users=demo_num_users)
        if max_history < 1:
            raise ConfigurationError(f"max_history must be at least 1, got {max_history}")
        self.max_history = max_history
        self.drop_contained = drop_contained_windows
        self.item_datasets: dict[str, _TensorDictDataset] = {}

    @property
    def num_columns(self) -> int:
        """Item-score columns: max item id + 1 (the model's vocabulary is this + 1 for padding)."""
        return max(self.catalog.item_ids) + 1

    def prepare_data(self) -> None:
        """Generate the demo data set when it is used and missing (no tokenizer to train)."""
        if self.hparams.data_dir is None and not (self.data_dir / "index").is_dir():
            log.info("generating the demo data set in %s", self.data_dir)
            make_demo_data(self.data_dir, seed=self.hparams.demo_seed, num_users=self.hparams.demo_num_users)

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}.get(stage or "fit",
                                                                                          ("train", "valid", "test"))
        for split in splits:
            self.records(split)

    def records(self, split: str) -> list[SequenceRecord]:
        """The validated rows of a split, in file order (loaded on first use)."""
        if self.data is None or split not in self.data.splits:
            self.prepare_data()
            loaded = load_rec_data(self.data_dir, self.category, [split])
            if self.data is None:
                self.data = loaded
            else:
                self.data.splits.update(loaded.splits)
        return self.data.splits[split]

    def item_dataset(self, split: str) -> _TensorDictDataset:
        if split not in self.item_datasets:
            records = self.records(split)
            if split == "train":
                if self.drop_contained:
                    kept = maximal_windows(records)
                    log.info("drop_contained_windows: %d of %d training rows are maximal windows", len(kept),
                             len(records))
                    records = kept
                self.item_datasets[split] = _TensorDictDataset(training_tensors(records, self.max_history))
            else:
                self.item_datasets[split] = _TensorDictDataset(evaluation_tensors(records, self.max_history))
        return self.item_datasets[split]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.item_dataset("train"), batch_size=self.batch_size, shuffle=True, generator=generator,
                          num_workers=self.num_workers)

    def evaluation_dataloader(self, split: str) -> DataLoader:
        """Rows of ``split`` in file order."""
        return DataLoader(self.item_dataset(split), batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_dataloader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.evaluation_dataloader("test")

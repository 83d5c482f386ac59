"""The DataLoaders of :class:`~rec_lightning.data.datamodule.RecDataModule`: DDP shards, resumable training order.

Training batches are sharded by rank in an order that depends only on ``(seed, epoch)``, so a run restored
from a mid-epoch checkpoint goes on with the batches it had not trained on. Every validation, test and
generation row is seen exactly once across ranks (no repeated padding rows); under sharding
(``ModelParallelStrategy``) each rank gets as many rows, padded with masked ones.
"""

from __future__ import annotations

import random

import torch
from torch.utils.data import DataLoader

from rec_lightning.data.collate import Collator
from rec_lightning.data.dataset import RecDataset
from rec_lightning.data.packing import PackingCollator
from rec_lightning.data.sampling import (
    EpochShuffleSampler,
    EqualShardSampler,
    LengthGroupedSampler,
    PaddedRows,
    ShardSampler,
)


class _ResumableLoader(DataLoader):
    """Tells Lightning the training loader resumes mid-epoch by itself.

    Its position needs no state of its own: the sampler's order depends only on ``(seed, epoch)`` and
    :meth:`DataLoadersMixin.train_dataloader` skips the batches Lightning's restored progress counts.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


class DataLoadersMixin:
    """The ``*_dataloader`` hooks of :class:`~rec_lightning.data.datamodule.RecDataModule`, and its
    :meth:`generation_dataloader`.

    Reads the module's options (``batch_size``, ``eval_batch_size``, ``num_workers``, ``seed``, ``max_length``,
    ``train_format``, ``group_by_length``, ``packing``, ``pack_length``), its ``tokenizer``, tokenized
    ``datasets``, ``generation_examples`` and ``setup``; ``trainer`` gives the world size, the rank and the
    restored progress. Generation datasets are kept in ``_generation_datasets``.
    """

    def _world(self) -> tuple[int | None, int | None]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None, None
        return trainer.world_size, trainer.global_rank

    def _eval_shards(self, dataset) -> tuple:
        """``(dataset, sampler)`` of an evaluation split: each row on one rank; under sharding
        (``ModelParallelStrategy``: every forward is a collective) equal counts per rank, padded with
        masked rows (:class:`~rec_lightning.data.sampling.EqualShardSampler`)."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        trainer = getattr(self, "trainer", None)
        if trainer is not None and isinstance(trainer.strategy, ModelParallelStrategy) and trainer.world_size > 1:
            return PaddedRows(dataset), EqualShardSampler(len(dataset), *self._world())
        return dataset, ShardSampler(len(dataset), *self._world())

    def _loader(self, dataset, batch_size: int, sampler, padding_side: str, shuffle: bool = False,
                packed: bool = False) -> DataLoader:
        if packed:
            collate = PackingCollator(self.tokenizer.pad_token_id, self.pack_length, self.max_length)
        else:
            collate = Collator(self.tokenizer.pad_token_id, padding_side)
        # its own generator: creating an iterator must not draw from the global RNG, or a resumed run's
        # dropout masks would shift by one draw
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, generator=generator)

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets.get("train") or self._dataset_for("fit", "train")
        num_replicas, rank = self._world()
        side = "right" if self.train_format == "sft" else "left"
        if self.group_by_length:
            sampler = LengthGroupedSampler(dataset.lengths, self.batch_size, self.seed, num_replicas=num_replicas, rank=rank)
        else:
            sampler = EpochShuffleSampler(len(dataset), self.seed, num_replicas=num_replicas, rank=rank)
        sampler.resume_from(self._restored_position, self.batch_size)
        loader = self._loader(dataset, self.batch_size, sampler, side, packed=self.packing)
        loader.__class__ = _ResumableLoader
        return loader

    def _restored_position(self) -> tuple[int, int]:
        """``(epoch, batches already trained in it)`` when fit resumes from a mid-epoch checkpoint, else (0, 0).

        Asked by the sampler when an epoch's iteration starts (Lightning has restored its progress by
        then); without it the resumed epoch would replay batches from its start instead of the unseen ones.
        """
        trainer = getattr(self, "trainer", None)
        loop = getattr(trainer, "fit_loop", None) if trainer is not None else None
        if loop is None or not loop.restarting:
            return 0, 0
        return trainer.current_epoch, int(loop.epoch_loop.batch_progress.current.completed)

    def val_dataloader(self) -> DataLoader:
        dataset, sampler = self._eval_shards(self.datasets.get("valid") or self._dataset_for("validate", "valid"))
        return self._loader(dataset, self.eval_batch_size, sampler, "right", packed=self.packing)

    def test_dataloader(self) -> DataLoader:
        return self.generation_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.generation_dataloader("test")

    def _dataset_for(self, stage: str, split: str) -> RecDataset:
        self.setup(stage)
        return self.datasets[split]

    def generation_dataloader(self, split: str, limit: int | None = None, seed: int = 0,
                              batch_size: int | None = None) -> DataLoader:
        """Left-padded next-item prompts of ``split`` (no labels); each row once across DDP ranks (under
        sharding, plus masked padding rows with ``index`` -1 so that every rank runs as many batches).

        Args:
            limit: a seeded random subset of this many rows (kept in file order); None = all.
        """
        key = (split, limit, seed)
        if key not in self._generation_datasets:
            examples = self.generation_examples(split)
            if limit is not None and limit < len(examples):
                chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
                examples = [examples[i] for i in chosen]
            self._generation_datasets[key] = RecDataset(examples, self.tokenizer, self.max_length, with_response=False)
        dataset, sampler = self._eval_shards(self._generation_datasets[key])
        return self._loader(dataset, batch_size or self.eval_batch_size, sampler, "left")

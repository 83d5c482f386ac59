"""Samplers: per-task example sampling, shuffled or length-grouped training order, exact DDP sharding,
equal-count evaluation shards with masked padding rows for sharded (FSDP2) runs.

Every sampler subclasses :class:`~torch.utils.data.DistributedSampler`, so Lightning keeps it as it
is under DDP instead of swapping in its own (which pads evaluation with repeated rows). Training
orders depend only on ``(seed, epoch)`` and can resume in the middle of an epoch
(:class:`_Resumable`), so a run restored from a mid-epoch checkpoint sees exactly the
batches the interrupted run had not yet seen.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

import torch
from torch.utils.data import DistributedSampler

from rec_lightning.data.dataset import IGNORE_INDEX
from rec_lightning.errors import ConfigurationError

T = TypeVar("T")

#: ``index`` of a padding row (:class:`PaddedRows`): losses and ranking metrics skip it
PADDING_INDEX = -1


def sample_task_mix(examples_by_task: Mapping[str, Sequence[T]], weights: Mapping[str, float], seed: int) -> list[T]:
    """Draw ``round(weight * n)`` examples of each task (seeded); weight 1 keeps all, 0.5 half, 2 doubles.

    Whole copies come first, the fractional remainder is sampled without replacement.
    """
    rng = random.Random(seed)
    chosen: list[T] = []
    for task, examples in examples_by_task.items():
        weight = weights[task]
        if weight < 0:
            raise ConfigurationError(f"task weight for {task!r} must be >= 0, got {weight}")
        whole, fraction = divmod(weight, 1.0)
        chosen.extend(list(examples) * int(whole))
        chosen.extend(rng.sample(list(examples), round(fraction * len(examples))))
    return chosen


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0
    return num_replicas, rank


class _Resumable:
    """Skips the batches a restored run already trained, at the start of the epoch it resumes in.

    ``position`` (set by the data module) answers ``(epoch, batches already trained in it)`` when fit
    resumes from a mid-epoch checkpoint, else ``(epoch, 0)``; it is asked when iteration starts, after
    Lightning has restored its loop progress. The sampler's length stays whole.
    """

    _position: Callable[[], tuple[int, int]] | None = None
    _batch_size = 1

    def resume_from(self, position: Callable[[], tuple[int, int]], batch_size: int) -> None:
        self._position, self._batch_size = position, batch_size

    def _skipped(self, indices: list[int]) -> list[int]:
        if self._position is None:
            return indices
        epoch, done = self._position()
        return indices[done * self._batch_size:] if done and epoch == self.epoch else indices


class EpochShuffleSampler(_Resumable, DistributedSampler):
    """A permutation seeded by ``seed + epoch``, sharded by rank (padded to equal shards, as
    ``DistributedSampler`` does for training)."""

    def __init__(self, dataset_size: int, seed: int = 0, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.dataset_size = dataset_size
        self.seed = seed
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.epoch = 0
        self.num_samples = math.ceil(dataset_size / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.dataset_size, generator=generator).tolist()
        total = self.num_samples * self.num_replicas
        order += order[: total - len(order)]
        return iter(self._skipped(order[self.rank:total:self.num_replicas]))

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(DistributedSampler):
    """Every index exactly once across ranks (rank r takes r, r+W, r+2W, ...), never padded.

    Ranks may get one item more or less than others; sum-state metrics stay exact.
    """

    def __init__(self, dataset_size: int, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.dataset_size = dataset_size
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_size, self.num_replicas))


class EqualShardSampler(ShardSampler):
    """:class:`ShardSampler` padded so that every rank gets ``ceil(N / W)`` entries (equal batch counts).

    Under sharding (FSDP2) every forward is a collective, so every rank must run the same number of
    evaluation batches. Rank r takes rows r, r+W, ... as :class:`ShardSampler` does, then padding
    entries ``N, N+1, ...`` up to ``ceil(N / W)``; wrap the dataset in :class:`PaddedRows`, which turns
    them into masked copies of real rows (``index`` -1, no labels) that no metric or loss counts.
    """

    def __iter__(self) -> Iterator[int]:
        mine = list(range(self.rank, self.dataset_size, self.num_replicas))
        return iter(mine + [self.dataset_size + k for k in range(len(self) - len(mine))])

    def __len__(self) -> int:
        return math.ceil(self.dataset_size / self.num_replicas)


class PaddedRows(torch.utils.data.Dataset):
    """A dataset whose indices ``>= len(dataset)`` are padding rows for :class:`EqualShardSampler`.

    Padding index ``N + k`` is row ``k % N`` with ``index`` and ``target_item_id`` set to -1 and every
    label ignored, so the batch keeps its shapes while losses and ranking metrics skip the row.
    ``examples`` and ``len()`` are the wrapped dataset's.
    """

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    @property
    def examples(self):
        return self.dataset.examples

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        size = len(self.dataset)
        if index < size:
            return self.dataset[index]
        item = dict(self.dataset[(index - size) % size])
        item["index"] = item["target_item_id"] = PADDING_INDEX
        if "labels" in item:
            item["labels"] = [IGNORE_INDEX] * len(item["labels"])
        return item


class LengthGroupedSampler(_Resumable, DistributedSampler):
    """Shuffled indices ordered so that each run of ``batch_size`` holds similar lengths.

    Indices are shuffled, cut into mega-batches of ``batch_size * mega_batch_factor``, sorted by
    length inside each, cut into batches, and the batches shuffled; rank r takes batches r, r+W, ...
    (the last incomplete round is dropped so ranks stay in step). Use with a plain ``BatchSampler``
    of the same ``batch_size`` (the DataLoader's ``batch_size`` argument), ``shuffle=False``.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_factor: int = 50,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        self.lengths = lengths.tolist() if hasattr(lengths, "tolist") else list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_factor = mega_batch_factor
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.epoch = 0
        num_batches = math.ceil(len(self.lengths) / batch_size)
        self._batches_per_rank = num_batches // self.num_replicas if self.num_replicas > 1 else num_batches

    def _batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        mega = self.batch_size * self.mega_batch_factor
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start:start + mega], key=lambda i: self.lengths[i], reverse=True)
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in permutation]

    def __iter__(self) -> Iterator[int]:
        batches = self._batches()
        full = [b for b in batches if len(b) == self.batch_size] + [b for b in batches if len(b) < self.batch_size]
        mine = full[self.rank::self.num_replicas][: self._batches_per_rank]
        return iter(self._skipped([index for batch in mine for index in batch]))

    def __len__(self) -> int:
        if self.num_replicas == 1:
            return len(self.lengths)
        return self._batches_per_rank * self.batch_size

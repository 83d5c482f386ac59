import pytest

from rec_lightning.data.dataset import IGNORE_INDEX
from rec_lightning.data.sampling import (
    EqualShardSampler,
    LengthGroupedSampler,
    PaddedRows,
    ShardSampler,
    sample_task_mix,
)


def test_sample_task_mix_weights():
    mix = sample_task_mix({"a": list(range(10)), "b": list(range(100, 110))}, {"a": 2.0, "b": 0.5}, seed=1)
    a = [x for x in mix if x < 100]
    b = [x for x in mix if x >= 100]
    assert sorted(a) == sorted(list(range(10)) * 2)
    assert len(b) == 5 and len(set(b)) == 5
    assert mix == sample_task_mix({"a": list(range(10)), "b": list(range(100, 110))}, {"a": 2.0, "b": 0.5}, seed=1)


def test_shard_sampler_counts_every_row_once():
    shards = [list(ShardSampler(7, num_replicas=2, rank=r)) for r in range(2)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5]]
    assert sorted(shards[0] + shards[1]) == list(range(7))


def test_length_grouped_batches_have_similar_lengths():
    lengths = [(i * 37) % 100 for i in range(200)]
    sampler = LengthGroupedSampler(lengths, batch_size=10, seed=0, mega_batch_factor=20, num_replicas=1, rank=0)
    order = list(sampler)
    assert sorted(order) == list(range(200))
    batches = [order[i:i + 10] for i in range(0, 200, 10)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of this data spread about 85
    sampler.set_epoch(1)
    assert list(sampler) != order  # reshuffled each epoch


def test_length_grouped_sharding_is_disjoint():
    lengths = list(range(95))
    parts = [list(LengthGroupedSampler(lengths, 10, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    # 10 batches (the last holds 5): each rank gets 5 batches, so DDP ranks step in lockstep.
    assert [len(p) for p in parts] == [50, 45]
    assert not set(parts[0]) & set(parts[1])


@pytest.mark.parametrize("size, world, expected", [
    # 7 rows, 2 ranks: rank 0 has rows 0 2 4 6, rank 1 rows 1 3 5 and padding entry 7 (= row 0 masked)
    (7, 2, [[0, 2, 4, 6], [1, 3, 5, 7]]),
    # 7 rows, 3 ranks: ceil(7/3) = 3 each; ranks 1 and 2 hold 2 rows and pad with entry 7 (row 0, masked)
    (7, 3, [[0, 3, 6], [1, 4, 7], [2, 5, 7]]),
    (6, 3, [[0, 3], [1, 4], [2, 5]]),  # divisible: no padding
    (2, 3, [[0], [1], [2]]),  # fewer rows than ranks: rank 2 decodes a masked copy of row 0
    (0, 2, [[], []]),
])
def test_equal_shard_sampler_by_hand(size, world, expected):
    shards = [list(EqualShardSampler(size, num_replicas=world, rank=rank)) for rank in range(world)]
    assert shards == expected
    assert [len(EqualShardSampler(size, num_replicas=world, rank=rank)) for rank in range(world)] == [len(s) for s in shards]
    real = sorted(i for shard in shards for i in shard if i < size)
    assert real == list(range(size))  # every row exactly once; entries >= size are padding


def test_padded_rows_mask_padding_entries():
    items = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "index": i, "target_item_id": 10 + i} for i in range(3)]

    class Rows(list):
        examples = ["e0", "e1", "e2"]

    dataset = PaddedRows(Rows(items))
    assert len(dataset) == 3 and dataset.examples == ["e0", "e1", "e2"]
    assert dataset[1] == items[1]
    padding = dataset[4]  # padding entry k = 1: a copy of row 1, masked
    assert padding == {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX] * 3, "index": -1, "target_item_id": -1}
    assert items[1]["index"] == 1  # the wrapped row is untouched

from rec_lightning.data.sampling import LengthGroupedSampler, ShardSampler, sample_task_mix


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

import collections

from rec_lightning.data.demo import make_demo_data
from rec_lightning.data.records import load_rec_data


def test_demo_is_deterministic_and_complete(tmp_path):
    a = make_demo_data(tmp_path / "a", seed=3, num_users=60)
    b = make_demo_data(tmp_path / "b", seed=3, num_users=60)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["index/Demo_Shop.index.json", "index/Demo_Shop.item.json", "info/Demo_Shop.txt",
                                       "rec_lightning_demo.json", "test/Demo_Shop.csv", "train/Demo_Shop.csv",
                                       "valid/Demo_Shop.csv"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    c = make_demo_data(tmp_path / "c", seed=4, num_users=60)
    assert (c / "train/Demo_Shop.csv").read_bytes() != (a / "train/Demo_Shop.csv").read_bytes()


def test_demo_has_sequential_structure(demo_dir):
    data = load_rec_data(demo_dir, "Demo_Shop")
    rows = data.splits["train"]
    assert 4000 < len(rows) < 6000
    assert len(data.catalog.duplicate_sids) >= 1
    # The next item usually continues the product line of the last item: same first two SID levels.
    same_line = sum(r.item_sid[: r.item_sid.index("<c_")] == r.history_sids[-1][: r.history_sids[-1].index("<c_")]
                    for r in rows)
    assert same_line / len(rows) > 0.6
    # ... and the single most frequent transition covers far more than chance.
    transitions = collections.Counter((r.history_item_ids[-1], r.item_id) for r in rows)
    by_last = collections.Counter(r.history_item_ids[-1] for r in rows)
    best = sum(max(c for (last, _), c in transitions.items() if last == item) for item in by_last)
    assert best / len(rows) > 0.5
    # Chronological split: history lengths span 1..10 as upstream.
    assert {len(r.history_item_ids) for r in rows} == set(range(1, 11))

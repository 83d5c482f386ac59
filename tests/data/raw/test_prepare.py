"""prepare_dataset on tiny raw files: k-core, windows, split boundaries, formats, determinism, reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from raw_files import SPLIT_ITEMS, SPLIT_REVIEWS, item, write_raw

from rec_lightning.data.raw.formats import Review
from rec_lightning.data.raw.interactions import collect, k_core
from rec_lightning.data.raw.pipeline import PrepareOptions, month_start, prepare_dataset
from rec_lightning.data.records import load_rec_data

SMALL = PrepareOptions(user_k=2, item_k=2, max_history=3)


def rows(folder: Path, split: str, category: str = "Shop") -> list[dict]:
    return list(csv.DictReader((folder / split / f"{category}.csv").open(encoding="utf-8")))


def test_k_core_by_hand():
    # u1: A B C, u2: A B, u3: B D, u4: E.  2/2-core:
    # round 1 drops C, D, E (1 interaction each) and u4 (1 interaction) -> u1: A B, u2: A B, u3: B
    # round 2 drops u3 (1 interaction left) -> u1: A B, u2: A B; round 3 changes nothing.
    raw = [("u1", "A", 1), ("u1", "B", 2), ("u1", "C", 3), ("u2", "A", 4), ("u2", "B", 5), ("u3", "B", 6),
           ("u3", "D", 7), ("u4", "E", 8)]
    data = collect(Review(u, i, t, None, n) for n, (u, i, t) in enumerate(raw, start=1))
    core = k_core(data, user_k=2, item_k=2)
    assert core.rounds == [{"interactions": 5, "users": 3, "items": 2}, {"interactions": 4, "users": 2, "items": 2}]
    kept = core.interactions
    assert [(kept.user_keys[u], kept.item_keys[i]) for u, i in zip(kept.users, kept.items)] == \
        [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B")]


def test_collect_filters_count_each_reason():
    reviews = [Review("u", "A", 100, 5.0, 1), Review("u", "A", 100, 2.0, 2), Review("u", "A", 50, 5.0, 3),
               Review("u", "Z", 100, 5.0, 4), Review("u", "A", 200, 4.0, 5)]
    data = collect(reviews, start=60, end=200, min_rating=3.0, usable_items={"A"})
    assert len(data) == 1 and data.num_read == 5
    assert data.dropped == {"rating below minimum": 1, "outside the time window": 2, "item without usable metadata": 1}


def test_month_bounds_are_utc_and_end_inclusive():
    assert month_start("2016-10", "start_month") == 1475280000  # 2016-10-01T00:00:00Z
    assert month_start("2018-12", "end_month", offset=1) == 1546300800  # 2019-01-01T00:00:00Z
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_start("2018-13", "end_month")


def test_chronological_split_boundaries_and_windows(tmp_path):
    reviews, meta = write_raw(tmp_path / "raw", "amazon2018", SPLIT_REVIEWS, SPLIT_ITEMS)
    report, _ = prepare_dataset(reviews, meta, "amazon2018", "Shop", tmp_path / "out", SMALL)
    train, valid, test = (rows(tmp_path / "out", s) for s in ("train", "valid", "test"))
    # 10 windows by target time: U1@20, U2@25, ..., U2@55 (train, 8), U1@60 (valid), U2@65 (test).
    assert [r["user_id"] for r in train] == ["U1", "U2"] * 4
    # U2 comes first in the file, so its items I1..I6 get ids 0..5; history is capped at 3 items.
    assert [(r["user_id"], r["history_item_id"], r["item_id"]) for r in valid] == [("U1", "[2, 3, 4]", "5")]
    assert [(r["user_id"], r["history_item_id"], r["item_id"]) for r in test] == [("U2", "[2, 3, 4]", "5")]
    assert train[0]["history_item_id"] == "[0]" and train[0]["item_title"] == "Item 2 Beaker"
    assert test[0]["history_item_title"] == "['Item 3 Beaker', 'Item 4 Beaker', 'Item 5 Beaker']"
    assert test[0]["item_sid"] == "<a_0><b_0><c_5>"  # positional SIDs until build-sids
    assert report["splits"]["train"]["history_length_histogram"] == {"1": 2, "2": 2, "3": 4}
    assert report["final"] == {"users": 2, "items": 6, "interactions": 12, "repeat_interactions": 0, "sparsity": 0.0,
                               "time_range": ["1970-01-01T00:00:10Z", "1970-01-01T00:01:05Z"], "windows": 10}
    data = load_rec_data(tmp_path / "out", "Shop")  # the data layer reads it back (check-data's validation)
    assert [len(data.splits[s]) for s in ("train", "valid", "test")] == [8, 1, 1]


def test_leave_last_out(tmp_path):
    reviews, meta = write_raw(tmp_path / "raw", "amazon2018", SPLIT_REVIEWS, SPLIT_ITEMS)
    options = PrepareOptions(user_k=2, item_k=2, max_history=3, split="leave-last-out")
    report, _ = prepare_dataset(reviews, meta, "amazon2018", "Shop", tmp_path / "out", options)
    assert [report["splits"][s]["rows"] for s in ("train", "valid", "test")] == [6, 2, 2]
    # each user's last window is test, the one before valid; rows ordered by target time
    assert [(r["user_id"], r["item_id"]) for r in rows(tmp_path / "out", "valid")] == [("U1", "4"), ("U2", "4")]
    assert [(r["user_id"], r["item_id"]) for r in rows(tmp_path / "out", "test")] == [("U1", "5"), ("U2", "5")]


@pytest.mark.parametrize("fmt,gz", [("amazon2014", False), ("amazon2014", True), ("amazon2018", True),
                                    ("amazon2023", False), ("amazon2023", True), ("table", False)])
def test_every_format_gives_the_same_folder(tmp_path, fmt, gz):
    reference_raw = write_raw(tmp_path / "ref", "amazon2018", SPLIT_REVIEWS, SPLIT_ITEMS)
    prepare_dataset(*reference_raw, "amazon2018", "Shop", tmp_path / "ref_out", SMALL)
    reviews, meta = write_raw(tmp_path / "raw", fmt, SPLIT_REVIEWS, SPLIT_ITEMS, gz=gz)
    report, _ = prepare_dataset(reviews, meta, fmt, "Shop", tmp_path / "out", SMALL)
    for relative in ("train/Shop.csv", "valid/Shop.csv", "test/Shop.csv", "index/Shop.index.json", "info/Shop.txt"):
        assert (tmp_path / "out" / relative).read_bytes() == (tmp_path / "ref_out" / relative).read_bytes(), relative
    items = json.loads((tmp_path / "out" / "index" / "Shop.item.json").read_text())
    assert items["0"]["title"] == "Item 1 Beaker" and items["0"]["source_id"] == "I1"
    assert items["0"]["description"] == "About Item 1 Beaker. Second paragraph."
    assert items["0"]["brand"] == "Acme" and items["0"]["categories"] == "Industrial & Scientific > Lab"
    assert report["format"] == fmt


def test_same_input_gives_byte_identical_output(tmp_path):
    reviews, meta = write_raw(tmp_path / "raw", "amazon2023", SPLIT_REVIEWS, SPLIT_ITEMS, gz=True)
    prepare_dataset(reviews, meta, "amazon2023", "Shop", tmp_path / "a", SMALL)
    prepare_dataset(reviews, meta, "amazon2023", "Shop", tmp_path / "b", SMALL)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 7
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative


def test_titles_cleaned_and_unusable_items_dropped_and_counted(tmp_path):
    items = dict(SPLIT_ITEMS)
    items["I1"] = ("Ultra &amp; <b>Pro</b> &reg; &quot;Kit&quot;", ["a &lt; b"], "Acme", ["Lab"])
    items["I6"] = (" ".join(["word"] * 21), [], "Acme", ["Lab"])  # 21 words: dropped, as MiniOneRec does
    reviews, meta = write_raw(tmp_path / "raw", "amazon2023", SPLIT_REVIEWS, items)
    report, _ = prepare_dataset(reviews, meta, "amazon2023", "Shop", tmp_path / "out", SMALL)
    catalog = json.loads((tmp_path / "out" / "index" / "Shop.item.json").read_text())
    assert catalog["0"]["title"] == "Ultra & Pro \u00ae Kit" and catalog["0"]["description"] == "a < b"
    assert len(catalog) == 5
    assert report["metadata"]["unusable"] == {"title longer than 20 words": 1}
    assert {"step": "drop item without usable metadata", "interactions": 10, "users": 2, "items": 5} in report["steps"]


def test_time_window_keeps_whole_months(tmp_path):
    day = 86400
    oct_2016, nov_2016, dec_2016 = 1475280000, 1477958400, 1480550400  # 1 Oct, 1 Nov, 1 Dec 2016 UTC
    reviews = [("U1", "I1", oct_2016 - 1, 5.0), ("U1", "I1", oct_2016, 5.0), ("U1", "I2", nov_2016 + day, 5.0),
               ("U1", "I2", dec_2016 - 1, 5.0), ("U1", "I1", dec_2016, 5.0), ("U1", "I2", oct_2016 + day, 5.0),
               ("U1", "I1", nov_2016 + 2 * day, 5.0)]
    reviews_path, meta = write_raw(tmp_path / "raw", "amazon2018", reviews, {"I1": item("One"), "I2": item("Two")})
    options = PrepareOptions(user_k=1, item_k=1, start_month="2016-10", end_month="2016-11", split_ratio=(2, 1, 1))
    report, _ = prepare_dataset(reviews_path, meta, "amazon2018", "Shop", tmp_path / "out", options)
    assert report["time_window_utc"] == ["2016-10-01T00:00:00Z", "2016-12-01T00:00:00Z"]
    assert {"step": "drop outside the time window", "interactions": 5} in report["steps"]
    assert report["final"]["interactions"] == 5 and report["final"]["repeat_interactions"] == 3
    assert [report["splits"][s]["rows"] for s in ("train", "valid", "test")] == [2, 1, 1]

"""Every bad-input case of prepare: an error naming file and line, or a counted drop where documented."""

from __future__ import annotations

import gzip
import json

import pytest
from raw_files import SPLIT_ITEMS, SPLIT_REVIEWS, meta_line, review_line, write_lines, write_raw

from rec_lightning.data.raw.pipeline import PrepareOptions, prepare_dataset
from rec_lightning.errors import DataValidationError

SMALL = PrepareOptions(user_k=2, item_k=2, max_history=3)


def test_truncated_gzip_names_file_and_line(tmp_path):
    reviews, meta = write_raw(tmp_path, "amazon2023", SPLIT_REVIEWS, SPLIT_ITEMS, gz=True)
    data = reviews.read_bytes()
    reviews.write_bytes(data[: len(data) - 40])  # cut inside the deflate stream / trailer
    with pytest.raises(DataValidationError, match=r"gzip stream ends early or is corrupt") as err:
        prepare_dataset(reviews, meta, "amazon2023", "Shop", tmp_path / "out", SMALL)
    assert str(reviews) in str(err.value) and "line " in str(err.value) and "download the file again" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_line_that_is_not_json(tmp_path):
    lines = [review_line("amazon2018", *r) for r in SPLIT_REVIEWS]
    lines[2] = lines[2][:-5]  # a cut line
    reviews = write_lines(tmp_path / "reviews.json", lines)
    _, meta = write_raw(tmp_path / "m", "amazon2018", [], SPLIT_ITEMS)
    with pytest.raises(DataValidationError, match=r"line 3: not a JSON object"):
        prepare_dataset(reviews, meta, "amazon2018", "Shop", tmp_path / "out", SMALL)


def test_review_without_timestamp(tmp_path):
    lines = [review_line("amazon2023", *r) for r in SPLIT_REVIEWS]
    record = json.loads(lines[1])
    del record["timestamp"]
    lines[1] = json.dumps(record)
    reviews = write_lines(tmp_path / "reviews.jsonl", lines)
    _, meta = write_raw(tmp_path / "m", "amazon2023", [], SPLIT_ITEMS)
    with pytest.raises(DataValidationError, match=r"line 2: the review has no usable timestamp 'timestamp'"):
        prepare_dataset(reviews, meta, "amazon2023", "Shop", tmp_path / "out", SMALL)


def test_review_without_user(tmp_path):
    lines = [review_line("amazon2018", *r) for r in SPLIT_REVIEWS]
    lines[4] = lines[4].replace('"reviewerID"', '"reviewer"')
    reviews = write_lines(tmp_path / "reviews.jsonl", lines)
    _, meta = write_raw(tmp_path / "m", "amazon2018", [], SPLIT_ITEMS)
    with pytest.raises(DataValidationError, match=r"line 5: the review has no 'reviewerID'"):
        prepare_dataset(reviews, meta, "amazon2018", "Shop", tmp_path / "out", SMALL)


def test_item_without_metadata_is_a_counted_drop(tmp_path):
    items = {k: v for k, v in SPLIT_ITEMS.items() if k != "I6"}
    reviews, meta = write_raw(tmp_path, "amazon2018", SPLIT_REVIEWS, items)
    report, _ = prepare_dataset(reviews, meta, "amazon2018", "Shop", tmp_path / "out", SMALL)
    assert report["steps"][3] == {"step": "drop item without usable metadata", "interactions": 10, "users": 2, "items": 5}
    assert report["final"]["items"] == 5


def test_window_that_leaves_fewer_than_k(tmp_path):
    reviews, meta = write_raw(tmp_path, "amazon2018", SPLIT_REVIEWS, SPLIT_ITEMS)
    with pytest.raises(DataValidationError, match=r"no interactions are left after the 5/5-core") as err:
        prepare_dataset(reviews, meta, "amazon2018", "Shop", tmp_path / "out", PrepareOptions())  # 2 per item < 5
    assert "read: 12 interactions" in str(err.value) and "lower --user_k/--item_k" in str(err.value)
    options = PrepareOptions(user_k=2, item_k=2, start_month="2020-01", end_month="2020-12")
    with pytest.raises(DataValidationError, match=r"no interactions are left after the filters"):
        prepare_dataset(reviews, meta, "amazon2018", "Shop", tmp_path / "out", options)


def test_2014_meta_is_a_literal_never_evaluated(tmp_path):
    reviews, _ = write_raw(tmp_path, "amazon2014", SPLIT_REVIEWS, SPLIT_ITEMS)
    marker = tmp_path / "pwned"
    lines = [meta_line("amazon2014", k, *v) for k, v in SPLIT_ITEMS.items()]
    lines.insert(1, f"__import__('pathlib').Path({str(marker)!r}).touch()")
    meta = write_lines(tmp_path / "meta.json.gz", lines, gz=True)
    with pytest.raises(DataValidationError, match=r"line 2: not a Python dict literal"):
        prepare_dataset(reviews, meta, "amazon2014", "Shop", tmp_path / "out", SMALL)
    assert not marker.exists()


def test_table_missing_column_and_bad_timestamp(tmp_path):
    (tmp_path / "items.csv").write_text("item,title\nI1,One\n")
    (tmp_path / "a.csv").write_text("user,product,timestamp\nu,I1,5\n")
    with pytest.raises(DataValidationError, match=r"line 1 \(header\): missing column\(s\) \['item'\]"):
        prepare_dataset(tmp_path / "a.csv", tmp_path / "items.csv", "table", "Shop", tmp_path / "out", SMALL)
    (tmp_path / "b.csv").write_text("user,item,timestamp\nu,I1,5\nu,I1,yesterday\n")
    with pytest.raises(DataValidationError, match=r"line 3, field 'timestamp': 'yesterday' is neither"):
        prepare_dataset(tmp_path / "b.csv", tmp_path / "items.csv", "table", "Shop", tmp_path / "out", SMALL)


def test_existing_output_is_never_replaced(tmp_path):
    reviews, meta = write_raw(tmp_path, "amazon2018", SPLIT_REVIEWS, SPLIT_ITEMS)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(DataValidationError, match="already exists and is not empty"):
        prepare_dataset(reviews, meta, "amazon2018", "Shop", tmp_path / "out", SMALL)
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left behind


def test_not_utf8(tmp_path):
    _, meta = write_raw(tmp_path, "amazon2018", [], SPLIT_ITEMS)
    lines = [review_line("amazon2018", *r) for r in SPLIT_REVIEWS]
    data = ("\n".join(lines[:3]) + "\n").encode() + b'{"reviewerID": "\xff"}\n'
    (tmp_path / "r.json.gz").write_bytes(gzip.compress(data))
    with pytest.raises(DataValidationError, match=r"line 4, byte \d+: not valid UTF-8"):
        prepare_dataset(tmp_path / "r.json.gz", meta, "amazon2018", "Shop", tmp_path / "out", SMALL)

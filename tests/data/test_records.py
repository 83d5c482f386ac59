import ast
import csv
import io
import json
import shutil

import pytest

from conftest import REAL_CATEGORY, REAL_DATA, requires_real_data
from rec_lightning.data.records import COLUMNS, _parse_list, _RowError, check_rec_data, load_rec_data, read_split
from rec_lightning.errors import DataValidationError, iter_text_lines, read_text_file
from rec_lightning.sids.codec import ItemCatalog

INDEX = {"0": ["<a_1>", "<b_2>", "<c_3>"], "1": ["<a_1>", "<b_2>", "<c_4>"], "2": ["<a_5>", "<b_0>", "<c_0>"]}
TITLES = {0: "Glue", 1: "Tape", 2: "Drill"}
GOOD_ROW = {
    "user_id": "A1", "history_item_title": "['Glue', 'Tape']", "item_title": "Drill", "history_item_id": "[0, 1]",
    "item_id": "2", "history_item_sid": "['<a_1><b_2><c_3>', '<a_1><b_2><c_4>']", "item_sid": "<a_5><b_0><c_0>",
}


def write_split(path, rows, columns=COLUMNS):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def catalog():
    return ItemCatalog({int(k): v for k, v in INDEX.items()}, TITLES)


def test_good_rows_parse(tmp_path, catalog):
    path = tmp_path / "train.csv"
    write_split(path, [GOOD_ROW, {**GOOD_ROW, "user_id": "A2"}])
    records = read_split(path, catalog, "train")
    assert [r.row for r in records] == [0, 1]
    first = records[0]
    assert first.history_item_ids == (0, 1) and first.history_titles == ("Glue", "Tape")
    assert first.history_sids == ("<a_1><b_2><c_3>", "<a_1><b_2><c_4>")
    assert (first.item_id, first.item_sid, first.item_title) == (2, "<a_5><b_0><c_0>", "Drill")


def test_rows_share_the_catalogs_strings_where_equal(tmp_path, catalog):
    """A row's titles and SIDs equal to the catalog's are the catalog's own string objects (a row holds
    references: 1.9 -> 0.9 GB for 10^6 rows, benchmarks/README.md); a differing title stays the row's."""
    path = tmp_path / "train.csv"
    write_split(path, [GOOD_ROW, {**GOOD_ROW, "history_item_title": "['Glue stick', 'Tape']"}])
    first, second = read_split(path, catalog, "train")
    assert first.history_titles[0] is catalog.title_of(0) and first.history_sids[1] is catalog.sid_of(1)
    assert first.item_title is catalog.title_of(2) and first.item_sid is catalog.sid_of(2)
    assert second.history_titles == ("Glue stick", "Tape") and second.history_titles[0] is not catalog.title_of(0)
    assert not hasattr(first, "__dict__")  # slots


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("history_item_sid", "__import__('os').system('true')", "expected a Python list literal of SID strings"),
        ("history_item_id", "[0, 1 + 1]", "expected a Python list literal of item ids"),
        ("history_item_id", "(0, 1)", "expected a list of item ids (integers), got a tuple"),
        ("history_item_title", "not a list", "expected a Python list literal of titles"),
        ("history_item_title", "['Glue', 3]", "expected titles (strings), found 3"),
        ("history_item_id", "[0]", "history lists differ in length: 2 titles, 1 ids, 2 SIDs"),
        ("history_item_sid", "[]", "empty history"),
        ("history_item_sid", "['<a_1><b_2><c_3>', '<a_9><b_9><c_9>']", "SID '<a_9><b_9><c_9>' is not in the index"),
        ("item_sid", "<a_5><b_0>", "it has 2 levels; index SIDs have 3"),
        ("item_sid", "<a_1><b_2><c_3>", "item 2 has SID '<a_5><b_0><c_0>' in the index, but the row says '<a_1><b_2><c_3>'"),
        ("item_sid", "<a_5> <b_0><c_0>", "is not a SID"),
        ("item_id", "7", "item id 7 is not in the index"),
        ("item_id", "two", "expected a non-negative integer, got 'two'"),
        ("user_id", "", "empty user id"),
    ],
)
def test_bad_cell_names_file_line_and_column(tmp_path, catalog, column, value, expected):
    path = tmp_path / "valid.csv"
    write_split(path, [GOOD_ROW, {**GOOD_ROW, column: value}])
    with pytest.raises(DataValidationError) as err:
        read_split(path, catalog, "valid")
    message = str(err.value)
    assert str(path) in message
    expected_column = {"7": "item_id", "[0]": "history_item_title/history_item_id/history_item_sid"}.get(value, column)
    assert f"line 3, column '{expected_column}'" in message  # header is line 1, the bad row line 3
    assert expected in message
    assert "Fix:" in message


def test_several_bad_rows_reported_together(tmp_path, catalog):
    path = tmp_path / "train.csv"
    bad = {**GOOD_ROW, "item_sid": "<a_9><b_9><c_9>"}
    write_split(path, [bad] * 8)
    with pytest.raises(DataValidationError) as err:
        read_split(path, catalog, "train")
    assert "8 problem(s)" in str(err.value) and "... and 3 more" in str(err.value)


def test_missing_column(tmp_path, catalog):
    path = tmp_path / "train.csv"
    write_split(path, [GOOD_ROW], columns=[c for c in COLUMNS if c != "history_item_sid"])
    with pytest.raises(DataValidationError, match=r"line 1 \(header\): missing column\(s\) \['history_item_sid'\]"):
        read_split(path, catalog)


def test_non_utf8_bytes_report_line(tmp_path, catalog):
    path = tmp_path / "train.csv"
    write_split(path, [GOOD_ROW])
    path.write_bytes(path.read_bytes().replace(b"Drill", b"Dr\xe9ill"))
    with pytest.raises(DataValidationError, match=r"line 2, byte offset \d+: bytes b'\\xe9' are not valid UTF-8"):
        read_split(path, catalog)


def test_missing_file_and_split(tmp_path, catalog):
    with pytest.raises(DataValidationError, match="does not exist"):
        read_split(tmp_path / "nope.csv", catalog)
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "Shop.index.json").write_text(json.dumps(INDEX))
    with pytest.raises(DataValidationError, match="no file matches 'Shop\\*.csv'"):
        load_rec_data(tmp_path, "Shop", splits=("train",))


def test_category_file_matching_is_exact(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / "train").mkdir()
    (tmp_path / "index" / "Toys.index.json").write_text(json.dumps(INDEX))
    write_split(tmp_path / "train" / "Toys_and_Games_5.csv", [GOOD_ROW])  # another category: not ours
    write_split(tmp_path / "train" / "Toys_5_2016-10-2018-11.csv", [GOOD_ROW])
    data = load_rec_data(tmp_path, "Toys", splits=("train",))
    assert len(data.splits["train"]) == 1


def test_non_utf8_bytes_after_a_bad_header_are_reported_first(tmp_path, catalog):
    """The rows are read as a stream, but a file with bad bytes anywhere still gets the UTF-8 error (as when the
    whole file was decoded before parsing), not the header's error."""
    path = tmp_path / "train.csv"
    write_split(path, [GOOD_ROW] * 3, columns=[c for c in COLUMNS if c != "history_item_sid"])
    path.write_bytes(path.read_bytes()[::-1].replace(b"llirD", b"lli\xe9rD", 1)[::-1])  # in the last row
    with pytest.raises(DataValidationError, match=r"line 4, byte offset \d+: bytes b'\\xe9' are not valid UTF-8"):
        read_split(path, catalog)


@pytest.mark.parametrize("data", [b"a\nb\r\nc\rd\r\re\r", b"\xef\xbb\xbfh\xc3\xa9\r\n\r\n", b"", b"x\n\xe2\x82\ny"])
def test_text_lines_are_read_text_file_split_as_csv_wants(tmp_path, data):
    """Line by line, the same text (byte order mark dropped, LF / CR LF / lone CR ends kept) and the same error."""
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    try:
        expected = list(io.StringIO(read_text_file(path), newline=""))
    except DataValidationError as err:
        with pytest.raises(DataValidationError) as streamed:
            list(iter_text_lines(path))
        assert str(streamed.value) == str(err) and "line 2, byte offset 2: bytes b'\\xe2\\x82'" in str(err)
    else:
        assert list(iter_text_lines(path)) == expected


@pytest.mark.parametrize("text, kind", [
    ("[0, 17]", int), ("[ 3,4 ]", int), ("[007]", int), ("[1_000]", int), ("[0,]", int), ("[12345678901234567890]", int),
    ("['Glue', \"Tom's Tape\"]", str), ("['a,b', '[x]']", str), ("['']", str), ("['tab\\there']", str),
    ("['caf\u00e9 \u2122']", str), ("['a'  'b']", str), ("[b'a']", str), ("['a',\t'b']", str), ("[1, 'a']", str),
])
def test_plain_list_cells_parse_as_literal_eval_does(text, kind):
    """Plain lists take a fast path (no literal_eval); the values, and what is rejected, stay literal_eval's."""
    try:
        expected = ast.literal_eval(text)
        assert all(type(e) is kind for e in expected)
    except (ValueError, SyntaxError, AssertionError):
        with pytest.raises(_RowError):
            _parse_list(text, "c", kind, "values")
    else:
        parsed = _parse_list(text, "c", kind, "values")
        assert parsed == expected and [type(e) for e in parsed] == [type(e) for e in expected]


def assert_check_matches_load(data_dir, category):
    """check_rec_data (row by row, keeps counts) reports what load_rec_data (keeps the rows) does."""
    loaded = load_rec_data(data_dir, category)
    checked = check_rec_data(data_dir, category)
    assert checked.num_rows == {split: len(records) for split, records in loaded.splits.items()}
    assert checked.warnings == loaded.warnings
    assert len(checked.catalog) == len(loaded.catalog)
    return checked


def test_check_rec_data_matches_load_rec_data_on_the_demo_data(demo_dir):
    checked = assert_check_matches_load(demo_dir, "Demo_Shop")
    assert set(checked.num_rows) == {"train", "valid", "test"} and checked.warnings == []


def test_check_rec_data_matches_load_rec_data_with_warnings(tmp_path):
    """Duplicates (more than the 3 quoted), titles that disagree, a BOM and CR LF line ends: same counts, same text."""
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "Shop.index.json").write_text(json.dumps(INDEX))
    (tmp_path / "index" / "Shop.item.json").write_text(json.dumps({k: {"title": t} for k, t in TITLES.items()}))
    other_user = {**GOOD_ROW, "user_id": "B7"}
    renamed = {**GOOD_ROW, "user_id": "C2", "item_title": "Power Drill", "history_item_title": "['Glue', 'Tape ']"}
    rows = {"train": [GOOD_ROW, other_user, GOOD_ROW, renamed, other_user, GOOD_ROW, GOOD_ROW, renamed],
            "valid": [GOOD_ROW], "test": [renamed, other_user]}
    for split, split_rows in rows.items():
        (tmp_path / split).mkdir()
        write_split(tmp_path / split / "Shop_5.csv", split_rows)
    test_csv = tmp_path / "test" / "Shop_5.csv"
    test_csv.write_bytes(b"\xef\xbb\xbf" + test_csv.read_bytes())  # csv.DictWriter already ends lines with CR LF
    checked = assert_check_matches_load(tmp_path, "Shop")
    assert checked.num_rows == {"train": 8, "valid": 1, "test": 2}
    train, test = tmp_path / "train" / "Shop_5.csv", test_csv
    assert checked.warnings == [
        f"{train}: 5 fully duplicated row(s) (row 3 repeats row 1; row 5 repeats row 2; row 6 repeats row 1): each copy "
        "counts again in training and evaluation; drop them if they are not real repeats",
        f"{train}: 2 CSV title(s) disagree with item.json (row 4, item 2: 'Power Drill' vs 'Drill'; row 8, item 2: "
        "'Power Drill' vs 'Drill'): title prompts use the CSV's history titles and item.json's titles; regenerate the "
        "split from the same item.json",
        f"{test}: 1 CSV title(s) disagree with item.json (row 1, item 2: 'Power Drill' vs 'Drill'): title prompts use "
        "the CSV's history titles and item.json's titles; regenerate the split from the same item.json",
    ]  # 'Tape ' is 'Tape' once stripped: no warning


def test_check_rec_data_raises_load_rec_data_errors(tmp_path, catalog):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "Shop.index.json").write_text(json.dumps(INDEX))
    (tmp_path / "train").mkdir()
    write_split(tmp_path / "train" / "Shop.csv", [GOOD_ROW, {**GOOD_ROW, "item_sid": "<a_9><b_9><c_9>"}])
    with pytest.raises(DataValidationError) as loaded:
        load_rec_data(tmp_path, "Shop", splits=("train",))
    with pytest.raises(DataValidationError) as checked:
        check_rec_data(tmp_path, "Shop", splits=("train",))
    assert str(checked.value) == str(loaded.value) and "line 3, column 'item_sid'" in str(checked.value)
    shutil.rmtree(tmp_path / "train")
    with pytest.raises(DataValidationError, match="no file matches 'Shop\\*.csv'"):
        check_rec_data(tmp_path, "Shop", splits=("train",))


@requires_real_data
def test_real_industrial_data_loads_with_expected_counts():
    data = load_rec_data(REAL_DATA, REAL_CATEGORY)
    assert {s: len(r) for s, r in data.splits.items()} == {"train": 36259, "valid": 4532, "test": 4533}
    catalog = data.catalog
    assert len(catalog) == 3686
    assert len(catalog.sid_tokens) == 560
    assert len(catalog.duplicate_sids) == 15
    assert sum(len(ids) for ids in catalog.duplicate_sids.values()) == 31
    assert catalog.items_with_sid("<a_210><b_231><c_0>") == (7, 8)
    ambiguous = sum(len(catalog.items_with_sid(r.item_sid)) > 1 for r in data.splits["test"])
    assert ambiguous == 317  # minionerec-reference.md 1.4

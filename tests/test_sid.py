import json

import pytest

from rec_lightning.errors import DataValidationError
from rec_lightning.sids.codec import ItemCatalog, SIDFormatError, parse_sid, parse_sid_token, read_index_json


def test_parse_sid_splits_levels_in_order():
    assert parse_sid("<a_12><b_200><c_7>") == ("<a_12>", "<b_200>", "<c_7>")
    assert parse_sid("<a_0><b_1><c_2><d_0>", num_levels=4) == ("<a_0>", "<b_1>", "<c_2>", "<d_0>")
    assert parse_sid_token("<b_200>") == (1, 200)


@pytest.mark.parametrize("bad", ["<a_1> <b_2>", "<a_1><c_2>", "<b_1><c_2>", "<a_01><b_2>", "a_1", "", "<a_1><b_2>x",
                                 "<A_1><b_2>", "<a_-1>"])
def test_parse_sid_rejects_malformed(bad):
    with pytest.raises(SIDFormatError):
        parse_sid(bad)


def test_parse_sid_wrong_number_of_levels():
    with pytest.raises(SIDFormatError, match="expected a SID of 3 levels, got 2"):
        parse_sid("<a_1><b_2>", num_levels=3)


def test_catalog_lookup_duplicates_and_token_order():
    catalog = ItemCatalog({0: ["<a_2>", "<b_1>", "<c_3>"], 1: ["<a_10>", "<b_0>", "<c_3>"], 2: ["<a_2>", "<b_1>", "<c_3>"],
                           3: ["<a_2>", "<b_5>", "<c_0>", "<d_1>"]}, titles={0: "Glue", 1: "Tape", 2: "Glue 2"})
    assert catalog.sid_of(1) == "<a_10><b_0><c_3>"
    assert catalog.items_with_sid("<a_2><b_1><c_3>") == (0, 2)
    assert catalog.duplicate_sids == {"<a_2><b_1><c_3>": (0, 2)}
    # Ordered by level, then numerically by code (the original sorted as strings: <a_10> before <a_2>).
    assert catalog.sid_tokens == ["<a_2>", "<a_10>", "<b_0>", "<b_1>", "<b_5>", "<c_0>", "<c_3>", "<d_1>"]
    assert catalog.level_counts == (3, 4)
    assert catalog.num_levels == 4
    assert catalog.title_of(2) == "Glue 2"
    assert catalog.sids == ["<a_2><b_1><c_3>", "<a_10><b_0><c_3>", "<a_2><b_5><c_0><d_1>"]
    assert len(catalog.checksum()) == 64


def test_catalog_rejects_sid_that_prefixes_another():
    with pytest.raises(DataValidationError, match="prefix of another"):
        ItemCatalog({0: ["<a_1>", "<b_1>", "<c_1>"], 1: ["<a_1>", "<b_1>", "<c_1>", "<d_0>"]})


def test_index_json_errors_name_file_and_item(tmp_path):
    path = tmp_path / "X.index.json"
    path.write_text(json.dumps({"0": ["<a_1>", "<b_1>"], "1": ["<a_1>", "b_2"], "x": ["<a_1>"], "2": "<a_1>"}))
    with pytest.raises(DataValidationError) as err:
        read_index_json(path)
    message = str(err.value)
    assert str(path) in message and "3 problem(s)" in message
    assert "item 1: 'b_2' is not a SID token" in message
    assert "key 'x': expected a non-negative integer item id" in message
    assert "item 2: expected a list of SID token strings" in message
    assert "Fix:" in message


def test_index_json_invalid_json_reports_line(tmp_path):
    path = tmp_path / "X.index.json"
    path.write_text('{"0": ["<a_1>"],\n "1": [}')
    with pytest.raises(DataValidationError, match=r"line 2, column \d+: invalid JSON"):
        read_index_json(path)


def test_index_with_malformed_tokens_from_files(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "Shop.index.json").write_text(json.dumps({"0": ["<a_1>", "<c_2>"]}))
    with pytest.raises(DataValidationError, match="expected 'b'"):
        ItemCatalog.from_data_dir(tmp_path, "Shop")


def test_info_file_must_agree_with_index(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / "info").mkdir()
    (tmp_path / "index" / "Shop.index.json").write_text(json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_3>"]}))
    (tmp_path / "info" / "Shop.txt").write_text("<a_1><b_2>\tGlue\t0\n<a_1><b_2>\tTape\t1\n")
    with pytest.raises(DataValidationError, match=r"line 2, field SID: item 1 has '<a_1><b_2>' here but '<a_1><b_3>'"):
        ItemCatalog.from_data_dir(tmp_path, "Shop")


def test_unknown_category_lists_present_ones(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "Shop.index.json").write_text(json.dumps({"0": ["<a_1>"]}))
    with pytest.raises(DataValidationError, match=r"no SID index for category 'Toys'; categories present: \['Shop'\]"):
        ItemCatalog.from_data_dir(tmp_path, "Toys")


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataValidationError, match="the data folder does not exist"):
        ItemCatalog.from_data_dir(tmp_path / "nope", "Shop")

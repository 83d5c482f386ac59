"""Read and validate the MiniOneRec sequence CSVs: the only place that knows their column names.

Each row is one (history, next item) window. List columns are Python-list literals parsed with
``ast.literal_eval`` (never ``eval``; plain lists by an equivalent regular expression, 5x faster). Every row is
checked against the item catalog; bad rows are reported together (file, line, column, what was expected), and
nothing is silently dropped.
:func:`load_rec_data` keeps the rows; :func:`check_rec_data` validates the same way, one row at a time,
and keeps only counts and warnings (``check-data`` on millions of rows).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from rec_lightning.errors import DataValidationError, iter_text_lines
from rec_lightning.files.layout import SPLITS, find_category_files, find_split_csv
from rec_lightning.sids.codec import ItemCatalog, SIDFormatError, parse_sid

COLUMNS = (
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
)
log = logging.getLogger(__name__)
_FIX = "regenerate the split with the same index.json, or correct the row"


@dataclass(frozen=True, slots=True)  # no per-row __dict__: splits hold 10^6-10^7 of them
class SequenceRecord:
    """One validated CSV row: a user's history (oldest first) and the next item."""

    split: str
    row: int  # 0-based data row in the split file (the header is not a row)
    user_id: str
    history_item_ids: tuple[int, ...]
    history_titles: tuple[str, ...]
    history_sids: tuple[str, ...]
    item_id: int
    item_title: str
    item_sid: str


@dataclass
class RecData:
    """One category: its catalog and validated splits."""

    data_dir: Path
    category: str
    catalog: ItemCatalog
    splits: dict[str, list[SequenceRecord]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # accepted but suspicious (see split_warnings)


@dataclass
class DataCheck:
    """One category checked row by row: its catalog, rows per split and warnings, not the rows."""

    data_dir: Path
    category: str
    catalog: ItemCatalog
    num_rows: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # as RecData.warnings


def load_rec_data(
    data_dir: str | Path, category: str, splits: Sequence[str] = SPLITS, catalog: ItemCatalog | None = None
) -> RecData:
    """Load and validate a category's catalog and the requested splits.

    Args:
        catalog: the category's catalog if already loaded (it is read from the index files otherwise).

    Raises:
        DataValidationError: any missing file or invalid row, naming file, line and column.
    """
    data = RecData(Path(data_dir), category, _read_catalog(data_dir, category) if catalog is None else catalog)
    for split in splits:
        path = find_split_csv(data_dir, split, category)
        data.splits[split] = read_split(path, data.catalog, split)
        data.warnings.extend(f"{path}: {warning}" for warning in split_warnings(data.splits[split], data.catalog))
    for warning in data.warnings:
        log.warning(warning)
    return data


def check_rec_data(
    data_dir: str | Path, category: str, splits: Sequence[str] = SPLITS, catalog: ItemCatalog | None = None
) -> DataCheck:
    """Validate like :func:`load_rec_data` (same errors, warnings and logging), reading each split row by row.

    Memory holds the catalog and, per split, one 16-byte digest per distinct row (for the duplicate warning).

    Raises:
        DataValidationError: any missing file or invalid row, naming file, line and column.
    """
    check = DataCheck(Path(data_dir), category, _read_catalog(data_dir, category) if catalog is None else catalog)
    for split in splits:
        path = find_split_csv(data_dir, split, category)
        found = SplitWarnings(check.catalog)
        found.add_all(iter_split(path, check.catalog, split))
        check.num_rows[split] = found.num_rows
        check.warnings.extend(f"{path}: {warning}" for warning in found.warnings())
    for warning in check.warnings:
        log.warning(warning)
    return check


def _read_catalog(data_dir: str | Path, category: str) -> ItemCatalog:
    files = find_category_files(data_dir, category)
    return ItemCatalog.from_files(files.index, files.info, files.item)


def split_warnings(records: Iterable[SequenceRecord], catalog: ItemCatalog, limit: int = 3) -> list[str]:
    """What is valid but probably a mistake in a split (see :class:`SplitWarnings`).

    Returns:
        One sentence per kind found, with the count and the first ``limit`` examples (1-based data rows).
    """
    found = SplitWarnings(catalog, limit)
    found.add_all(records)
    return found.warnings()


class SplitWarnings:
    """What is valid but probably a mistake, found row by row: fully duplicated rows, titles unlike item.json's.

    Keeps counts, the first ``limit`` examples of each kind and a 16-byte BLAKE2b digest of each distinct row
    (two different rows share one with probability about rows^2 / 2^129).

    Args:
        catalog: the titles to compare with.
        limit: examples quoted per kind.
    """

    def __init__(self, catalog: ItemCatalog, limit: int = 3) -> None:
        self.catalog, self.limit = catalog, limit
        self.num_rows = 0
        self.num_duplicates, self.num_title_mismatches = 0, 0
        self._first_row: dict[bytes, int] = {}  # row digest -> its first data row (0-based)
        self._duplicates: list[str] = []
        self._mismatches: list[str] = []

    def add_all(self, records: Iterable[SequenceRecord]) -> None:
        for record in records:
            self.add(record)

    def add(self, record: SequenceRecord) -> None:
        self.num_rows += 1
        key = (record.user_id, record.history_item_ids, record.history_titles, record.history_sids, record.item_id,
               record.item_title, record.item_sid)
        digest = hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first = self._first_row.get(digest)
        if first is None:
            self._first_row[digest] = record.row
        else:
            self.num_duplicates += 1
            if len(self._duplicates) < self.limit:
                self._duplicates.append(f"row {record.row + 1} repeats row {first + 1}")
        pairs = list(zip(record.history_item_ids, record.history_titles)) + [(record.item_id, record.item_title)]
        for item_id, title in pairs:
            expected = self.catalog.title_of(item_id)
            if expected and title.strip() != expected.strip():
                self.num_title_mismatches += 1
                if len(self._mismatches) < self.limit:
                    self._mismatches.append(
                        f"row {record.row + 1}, item {item_id}: {title[:40]!r} vs {expected[:40]!r}")

    def warnings(self) -> list[str]:
        """One sentence per kind found so far, with the count and the first examples (1-based data rows)."""
        warnings = []
        if self.num_duplicates:
            warnings.append(f"{self.num_duplicates} fully duplicated row(s) ({'; '.join(self._duplicates)}): each "
                            "copy counts again in training and evaluation; drop them if they are not real repeats")
        if self.num_title_mismatches:
            warnings.append(f"{self.num_title_mismatches} CSV title(s) disagree with item.json "
                            f"({'; '.join(self._mismatches)}): title prompts use the CSV's history titles and "
                            "item.json's titles; regenerate the split from the same item.json")
        return warnings


def read_split(path: str | Path, catalog: ItemCatalog, split: str = "") -> list[SequenceRecord]:
    """Read one split CSV and validate every row against ``catalog``.

    Raises:
        DataValidationError: missing columns, or the first few invalid rows (with a total count).
    """
    return list(iter_split(path, catalog, split))


def iter_split(path: str | Path, catalog: ItemCatalog, split: str = "") -> Iterator[SequenceRecord]:
    """:func:`read_split` one row at a time: the valid rows, then the errors of the whole file at its end.

    Raises:
        DataValidationError: as :func:`read_split`, once the file is read (a bad header or CSV syntax: at once).
    """
    lines = iter_text_lines(path, what=f"{split or 'sequence'} CSV")
    # a long history of long titles is a valid field; csv's default limit (131,072 characters) would reject it
    csv.field_size_limit(max(csv.field_size_limit(), Path(path).stat().st_size + 1))
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DataValidationError(path, ["the file is empty (no header)"], fix=f"write a header: {','.join(COLUMNS)}") from None
    except csv.Error as err:
        _finish_reading(lines)
        raise DataValidationError(path, [f"line 1 (header): {err}"], fix=_FIX) from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        _finish_reading(lines)
        raise DataValidationError(path, [f"line 1 (header): missing column(s) {missing}; found {header}"],
                                  fix=f"the header must hold {', '.join(COLUMNS)}")
    position = {name: header.index(name) for name in COLUMNS}
    num_records = 0
    problems: list[str] = []
    line = reader.line_num
    for row_index, cells in enumerate(_rows(reader, lines, path)):
        where = f"line {line + 1}"
        line = reader.line_num
        if len(cells) != len(header):
            problems.append(f"{where}: {len(cells)} fields, expected {len(header)}")
            continue
        try:
            record = _parse_row(cells, position, catalog, split, row_index)
        except _RowError as err:
            problems.append(f"{where}, column '{err.column}': {err.message}")
            continue
        num_records += 1
        yield record
    if problems:
        raise DataValidationError(path, problems, fix=_FIX)
    if not num_records:
        raise DataValidationError(path, ["the file has a header but no rows"], fix="write at least one row")


def _finish_reading(lines: Iterator[str]) -> None:
    """Read the rest of the file, so that bytes that are not UTF-8 anywhere in it are reported first (as before)."""
    for _ in lines:
        pass


def _rows(reader, lines: Iterator[str], path: Path):
    """The reader's rows; a CSV syntax error becomes a DataValidationError with its line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            _finish_reading(lines)
            raise DataValidationError(path, [f"line {reader.line_num}: {err}"],
                                      fix="write the file with a CSV writer (quote fields that hold commas, quotes "
                                          "or line breaks)") from None


class _RowError(Exception):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column, self.message = column, message


def _parse_row(cells: list[str], position: dict[str, int], catalog: ItemCatalog, split: str, row: int) -> SequenceRecord:
    def cell(name: str) -> str:
        return cells[position[name]]

    user_id = cell("user_id").strip()
    if not user_id:
        raise _RowError("user_id", "empty user id")
    titles = _parse_list(cell("history_item_title"), "history_item_title", str, "titles (strings)")
    item_ids = _parse_list(cell("history_item_id"), "history_item_id", int, "item ids (integers)")
    sids = _parse_list(cell("history_item_sid"), "history_item_sid", str, "SID strings")
    if not (len(titles) == len(item_ids) == len(sids)):
        raise _RowError("history_item_title/history_item_id/history_item_sid", f"history lists differ in length: {len(titles)} titles, "
                        f"{len(item_ids)} ids, {len(sids)} SIDs (they must describe the same items)")
    # a row keeps the catalog's own string objects wherever its strings equal them: references, not copies
    # (~0.5 KB a row)
    sids = [_check_item_sid(i, sid, catalog, "history_item_sid") for i, sid in zip(item_ids, sids)]
    raw_id = cell("item_id").strip()
    if not raw_id.isdigit():
        raise _RowError("item_id", f"expected a non-negative integer, got {raw_id!r}")
    item_id = int(raw_id)
    item_sid = _check_item_sid(item_id, cell("item_sid").strip(), catalog, "item_sid")
    return SequenceRecord(split, row, user_id, tuple(item_ids),
                          tuple(_catalog_title(catalog, i, title) for i, title in zip(item_ids, titles)),
                          tuple(sids), item_id, _catalog_title(catalog, item_id, cell("item_title")), item_sid)


def _catalog_title(catalog: ItemCatalog, item_id: int, title: str) -> str:
    """The catalog's own string for ``item_id``'s title if ``title`` equals it, else ``title``."""
    expected = catalog.title_of(item_id)
    return expected if title == expected else title


# The plain lists that writers of these files produce, e.g. "[3, 17]" and "['Glue', \"Tom's Tape\"]": these
# patterns read them 5x faster than ast.literal_eval, to the same values; anything else (escapes, control
# characters, tabs, trailing commas, long integers, empty lists) goes to literal_eval and its checks.
_INT = r"(?:0|[1-9][0-9]{0,17})"
_NOT_PLAIN = r"\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"  # backslash, control characters, line ends, surrogates
_STR = rf"""(?:'([^'{_NOT_PLAIN}]*)'|"([^"{_NOT_PLAIN}]*)")"""
_PLAIN_LISTS = {int: (re.compile(rf"\[ *{_INT}(?: *, *{_INT})* *\]"), re.compile(_INT)),
                str: (re.compile(rf"\[ *{_STR}(?: *, *{_STR})* *\]"), re.compile(_STR))}


def _parse_list(text: str, column: str, kind: type, what: str) -> list:
    """Parse a Python-list literal of ``kind`` values; at least one element."""
    stripped = text.strip()
    plain_list, list_element = _PLAIN_LISTS[kind]
    if plain_list.fullmatch(stripped):
        if kind is int:
            return [int(match) for match in list_element.findall(stripped)]
        return [single or double for single, double in list_element.findall(stripped)]  # one of the two is ''
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise _RowError(column, f"expected a Python list literal of {what}, got {text[:80]!r}") from None
    if not isinstance(value, list):
        raise _RowError(column, f"expected a list of {what}, got a {type(value).__name__}: {text[:80]!r}")
    if not value:
        raise _RowError(column, "empty history: every row needs at least one history item")
    for element in value:
        if type(element) is not kind:  # bool is not an int here
            raise _RowError(column, f"expected {what}, found {element!r} ({type(element).__name__})")
    return value


def _check_item_sid(item_id: int, sid: str, catalog: ItemCatalog, column: str) -> str:
    """The catalog's own string of ``item_id``'s SID, if the row's ``sid`` equals it; else a :class:`_RowError`."""
    if item_id in catalog:
        expected = catalog.sid_of(item_id)
        if sid == expected:
            return expected  # the index's own SID: well-formed (the catalog checked it), nothing below can fail
    try:
        tokens = parse_sid(sid)
    except SIDFormatError as err:
        raise _RowError(column, str(err)) from None
    if item_id not in catalog:
        raise _RowError(column.replace("sid", "id"), f"item id {item_id} is not in the index ({catalog.source})")
    expected = catalog.sid_of(item_id)  # not the row's SID (that case returned above)
    if not catalog.has_sid(sid):
        levels = catalog.level_counts
        extra = (f" it has {len(tokens)} levels; index SIDs have {'/'.join(map(str, levels))}"
                 if len(tokens) not in levels else "")
        raise _RowError(column, f"SID {sid!r} is not in the index;{extra} item {item_id}'s SID is {expected!r}")
    raise _RowError(column, f"item {item_id} has SID {expected!r} in the index, but the row says {sid!r}")

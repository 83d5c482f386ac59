"""Stream the published raw files: one :class:`Review` or one raw metadata dict at a time, with its line.

Formats (``--format``):

- ``amazon2023`` (McAuley lab, 2023): reviews ``user_id, parent_asin, rating, timestamp`` (ms); meta
  keyed by ``parent_asin`` with ``title, description`` (list), ``store, categories`` (list).
- ``amazon2018``: reviews ``reviewerID, asin, overall, unixReviewTime`` (s); meta ``asin, title,
  description`` (list), ``brand, category`` (list).
- ``amazon2014``: the same review fields; its meta lines are Python literals (single quotes), parsed
  with ``ast.literal_eval``, never ``eval``; ``categories`` is a list of lists.
- ``table``: a CSV (or ``.parquet``) of ``user, item, timestamp`` (integer seconds or ISO 8601; optional
  ``rating``) and an item table ``item, title`` (optional ``description, brand, categories``).

JSON-lines files may be gzipped (detected by their magic bytes, not the name). A truncated gzip, a line
that is not a JSON object, a review without a user, item or timestamp, or bytes that are not UTF-8 stop
the run with the file and line named. Nothing here is skipped silently.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from rec_lightning.errors import DataValidationError

FORMATS = ("amazon2014", "amazon2018", "amazon2023", "table")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FormatSpec:
    """Field names of one format; ``timestamp_scale`` turns the raw timestamp into seconds."""

    user: str
    item: str
    rating: str
    timestamp: str
    timestamp_scale: float
    meta_item: str
    brand: str
    categories: str
    meta_literal: bool  # meta lines are Python literals (2014), not JSON


SPECS = {
    "amazon2023": FormatSpec("user_id", "parent_asin", "rating", "timestamp", 1e-3, "parent_asin", "store",
                             "categories", False),
    "amazon2018": FormatSpec("reviewerID", "asin", "overall", "unixReviewTime", 1.0, "asin", "brand", "category", False),
    "amazon2014": FormatSpec("reviewerID", "asin", "overall", "unixReviewTime", 1.0, "asin", "brand", "categories", True),
    "table": FormatSpec("user", "item", "rating", "timestamp", 1.0, "item", "brand", "categories", False),
}


@dataclass(frozen=True)
class Review:
    """One interaction as read: raw user and item keys, time in whole seconds, rating (None if absent)."""

    user: str
    item: str
    timestamp: int
    rating: float | None
    line: int


class ByteProgress:
    """Bytes read so far from the underlying (possibly compressed) file, for a progress bar."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw

    @property
    def position(self) -> int:
        return self._raw.tell()


def iter_lines(path: str | Path, on_open: Callable[[int, ByteProgress], None] | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a plain or gzipped UTF-8 text file, streaming; blank lines skipped.

    Args:
        on_open: called once with the file size and a :class:`ByteProgress` (e.g. to start a progress bar).

    Raises:
        DataValidationError: missing file, truncated or corrupt gzip, bytes that are not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, ["the file does not exist" if not path.exists() else "expected a file, found a folder"],
                                  fix="check the path")
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if on_open is not None:
            on_open(path.stat().st_size, ByteProgress(raw))
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        number = 0
        try:
            for number, data in enumerate(stream, start=1):
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataValidationError(path, [f"line {number}, byte {err.start}: not valid UTF-8"],
                                              fix="re-encode the file as UTF-8") from None
                if text.strip():
                    yield number, text
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise DataValidationError(path, [f"line {number + 1}: the gzip stream ends early or is corrupt ({err}); "
                                             f"{number} complete lines were read before it"],
                                      fix="download the file again (compare its size or checksum with the source)") from None


def parse_object(path: Path, number: int, text: str, literal: bool) -> dict:
    """One line as a dict: JSON, or a Python literal for 2014 meta (``ast.literal_eval``)."""
    try:
        value = ast.literal_eval(text.strip()) if literal else json.loads(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        kind = "a Python dict literal" if literal else "a JSON object"
        raise DataValidationError(path, [f"line {number}: not {kind} ({type(err).__name__}: {str(err)[:80]}): "
                                         f"{text.strip()[:80]!r}"],
                                  fix="the file must hold one record per line, as published; re-download it, or pick "
                                      "the matching --format (2014 meta lines are Python literals)") from None
    if not isinstance(value, dict):
        raise DataValidationError(path, [f"line {number}: expected an object, got a {type(value).__name__}"],
                                  fix="one record (object) per line")
    return value


def _key(path: Path, number: int, record: dict, field: str, what: str) -> str:
    value = record.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataValidationError(path, [f"line {number}: the {what} has no {field!r} (got {value!r})"],
                                  fix=f"every line needs a non-empty {field!r}; check --format")
    return value.strip()


def _timestamp(path: Path, number: int, value: object, field: str, scale: float) -> int:
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            value = int(text)
        else:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                moment = None
            if moment is None:
                raise DataValidationError(path, [f"line {number}, field {field!r}: {value!r} is neither a number nor "
                                                 f"an ISO 8601 time"], fix="write Unix seconds or e.g. 2018-11-02T10:00:00")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return int(moment.timestamp())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataValidationError(path, [f"line {number}: the review has no usable timestamp {field!r} (got {value!r})"],
                                  fix="every review needs its time; check --format (2023 uses 'timestamp' in ms, "
                                      "2014/2018 'unixReviewTime' in s)")
    return int(value * scale) if scale != 1.0 else int(value)


def _rating(path: Path, number: int, value: object, field: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataValidationError(path, [f"line {number}, field {field!r}: rating {value!r} is not a number"],
                                  fix="write ratings as numbers or leave the field out") from None


def iter_reviews(path: str | Path, fmt: str, on_open: Callable | None = None) -> Iterator[Review]:
    """Every review of a raw reviews file, in file order.

    Raises:
        DataValidationError: on the first bad line (file and line named).
    """
    path = Path(path)
    spec = SPECS[fmt]
    if fmt == "table":
        yield from _iter_table_reviews(path, spec, on_open)
        return
    for number, text in iter_lines(path, on_open):
        # 2014 review files are JSON; a few mirrors re-wrote them as literals, so fall back for 2014 only
        record = _parse_review(path, number, text, fmt)
        yield Review(_key(path, number, record, spec.user, "review"), _key(path, number, record, spec.item, "review"),
                     _timestamp(path, number, record.get(spec.timestamp), spec.timestamp, spec.timestamp_scale),
                     _rating(path, number, record.get(spec.rating), spec.rating), number)


def _parse_review(path: Path, number: int, text: str, fmt: str) -> dict:
    try:
        return parse_object(path, number, text, literal=False)
    except DataValidationError:
        if fmt != "amazon2014":
            raise
        return parse_object(path, number, text, literal=True)


def iter_meta(path: str | Path, fmt: str, on_open: Callable | None = None) -> Iterator[tuple[int, str, dict]]:
    """``(line, item key, raw record)`` of every metadata record, in file order."""
    path = Path(path)
    spec = SPECS[fmt]
    if fmt == "table":
        for number, record in _iter_table_rows(path, ("item", "title"), on_open):
            yield number, _key(path, number, record, "item", "item row"), record
        return
    for number, text in iter_lines(path, on_open):
        record = parse_object(path, number, text, literal=spec.meta_literal)
        yield number, _key(path, number, record, spec.meta_item, "metadata record"), record


def _iter_table_reviews(path: Path, spec: FormatSpec, on_open: Callable | None) -> Iterator[Review]:
    for number, row in _iter_table_rows(path, ("user", "item", "timestamp"), on_open):
        yield Review(_key(path, number, row, "user", "row"), _key(path, number, row, "item", "row"),
                     _timestamp(path, number, row.get("timestamp"), "timestamp", 1.0),
                     _rating(path, number, row.get("rating"), "rating"), number)


def _iter_table_rows(path: Path, required: tuple[str, ...], on_open: Callable | None) -> Iterator[tuple[int, dict]]:
    """Rows of a CSV (line numbers) or Parquet file (row numbers from 2, as if line 1 were a header)."""
    if not path.is_file():
        raise DataValidationError(path, ["the file does not exist"], fix="check the path")
    if path.suffix == ".parquet":
        yield from _iter_parquet_rows(path, required)
        return
    lines = (text for _, text in iter_lines(path, on_open))
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise DataValidationError(path, [f"line 1 (header): missing column(s) {missing}; found {header}"],
                                  fix=f"the header must hold {', '.join(required)}")
    for number, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise DataValidationError(path, [f"line {number}: {len(header)} columns expected"], fix="fix the row")
        yield number, row


def _iter_parquet_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataValidationError(path, ["reading Parquet needs pyarrow, which is not installed"],
                                  fix="pip install pyarrow, or write the table as CSV") from None
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    missing = [c for c in required if c not in names]
    if missing:
        raise DataValidationError(path, [f"schema: missing column(s) {missing}; found {names}"],
                                  fix=f"the table must hold {', '.join(required)}")
    number = 1
    for batch in parquet.iter_batches(batch_size=65536):
        for row in batch.to_pylist():
            number += 1
            yield number, row

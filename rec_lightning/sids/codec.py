"""Semantic IDs and the item catalog: the only place that knows the SID token format.

An item's SID is a short sequence of level tokens, ``<a_12><b_200><c_7>``: level ``i`` uses the
letter ``"abcdefgh"[i]`` and a non-negative integer code written without leading zeros. A SID
string is the plain concatenation of its tokens. Catalogs may mix 3- and 4-level SIDs (the
original's collision repair appends a ``<d_r>`` level to colliding items only).

:class:`ItemCatalog` reads MiniOneRec's ``index.json`` (item id -> tokens), and optionally the
``info`` text file (``SID\\ttitle\\titem_id``) and ``item.json`` (titles, descriptions), validates
that they agree, and answers item id <-> SID <-> title, including which items share one SID.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from rec_lightning.errors import DataValidationError, RecLightningError, read_text_file, reject_duplicate_keys

LEVEL_LETTERS = "abcdefgh"
MAX_LEVELS = len(LEVEL_LETTERS)
_TOKEN_RE = re.compile(r"<([a-h])_(0|[1-9][0-9]*)>")
SID_TOKEN_SPLIT = re.compile(r"(<[a-h]_(?:0|[1-9][0-9]*)>)")  # re.split keeps the tokens at odd positions
_SID_RE = re.compile(r"(?:<[a-h]_(?:0|[1-9][0-9]*)>)+")


class SIDFormatError(RecLightningError, ValueError):
    """A SID string or token list does not follow the ``<a_i><b_j>...`` format."""


def parse_sid_token(token: str) -> tuple[int, int]:
    """Split one SID token into ``(level, code)``: ``"<b_200>" -> (1, 200)``.

    Raises:
        SIDFormatError: if ``token`` is not exactly one well-formed level token.
    """
    match = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise SIDFormatError(
            f"{token!r} is not a SID token; expected '<L_N>' with L a level letter a-h and N a "
            "non-negative integer without leading zeros, e.g. '<a_12>'"
        )
    return LEVEL_LETTERS.index(match.group(1)), int(match.group(2))


def parse_sid(sid: str, num_levels: int | None = None) -> tuple[str, ...]:
    """Split a SID string into its level tokens, strictly.

    Levels must appear in order ``a, b, c, ...`` starting at ``a``; no spaces or separators.

    Args:
        sid: e.g. ``"<a_12><b_200><c_7>"``.
        num_levels: if given, the exact number of levels required.

    Returns:
        The tokens, e.g. ``("<a_12>", "<b_200>", "<c_7>")``.

    Raises:
        SIDFormatError: on any deviation, with the reason.
    """
    if not isinstance(sid, str):
        raise SIDFormatError(f"SID must be a string, got {type(sid).__name__} {sid!r}")
    if not _SID_RE.fullmatch(sid):
        raise SIDFormatError(
            f"{sid!r} is not a SID; expected level tokens like '<a_12><b_200><c_7>' with nothing "
            "between or around them"
        )
    tokens = tuple(m.group(0) for m in _TOKEN_RE.finditer(sid))
    check_sid_tokens(tokens, num_levels)
    return tokens


def check_sid_tokens(tokens: Sequence[str], num_levels: int | None = None) -> None:
    """Check that ``tokens`` are well-formed level tokens in order ``a, b, c, ...``.

    Raises:
        SIDFormatError: naming the first problem.
    """
    if len(tokens) == 0:
        raise SIDFormatError("a SID needs at least one level token, got none")
    if len(tokens) > MAX_LEVELS:
        raise SIDFormatError(f"a SID has at most {MAX_LEVELS} levels, got {len(tokens)}")
    for position, token in enumerate(tokens):
        level, _ = parse_sid_token(token)
        if level != position:
            raise SIDFormatError(
                f"token {token!r} at position {position} has level '{LEVEL_LETTERS[level]}', "
                f"expected '{LEVEL_LETTERS[position]}' (levels must run a, b, c, ... in order)"
            )
    if num_levels is not None and len(tokens) != num_levels:
        raise SIDFormatError(f"expected a SID of {num_levels} levels, got {len(tokens)}: {''.join(tokens)!r}")


def format_sid(tokens: Iterable[str]) -> str:
    """Join level tokens into a SID string (validated)."""
    tokens = tuple(tokens)
    check_sid_tokens(tokens)
    return "".join(tokens)


def sid_token_sort_key(token: str) -> tuple[int, int]:
    """Sort key that orders tokens by level, then numerically by code (``<a_2>`` before ``<a_10>``)."""
    return parse_sid_token(token)


@dataclass(frozen=True, slots=True)  # no per-item __dict__: catalogs hold 10^5-10^6 of them
class Item:
    """One catalog item. ``description`` is plain text (list-repr descriptions are joined)."""

    item_id: int
    sid: str
    tokens: tuple[str, ...]
    title: str = ""
    description: str = ""


class ItemCatalog:
    """Items with their SIDs and titles; the vocabulary of valid recommendations.

    Build it with :meth:`from_files` / :meth:`from_data_dir`, or directly from a mapping
    ``{item_id: tokens}`` in tests and notebooks.

    Args:
        index: ``{item_id: [level tokens]}``.
        titles: optional ``{item_id: title}``.
        descriptions: optional ``{item_id: description}``.
        source: where the index came from, used in error messages.
    """

    def __init__(
        self,
        index: Mapping[int, Sequence[str]],
        titles: Mapping[int, str] | None = None,
        descriptions: Mapping[int, str] | None = None,
        source: str = "<in memory>",
    ) -> None:
        titles = titles or {}
        descriptions = descriptions or {}
        self.source = source
        items: dict[int, Item] = {}
        for item_id in sorted(index):
            tokens = tuple(index[item_id])
            try:
                check_sid_tokens(tokens)
            except SIDFormatError as err:
                raise DataValidationError(source, [f"item {item_id}: {err}"],
                                          fix="rebuild the index with `python -m rec_lightning build-sids`") from None
            items[item_id] = Item(item_id, "".join(tokens), tokens, titles.get(item_id, ""),
                                  descriptions.get(item_id, ""))
        if not items:
            raise DataValidationError(source, ["the index holds no items"], fix="point to a non-empty index.json")
        self._items = items
        self._by_sid: dict[str, tuple[int, ...]] = {}
        for item in items.values():
            self._by_sid[item.sid] = self._by_sid.get(item.sid, ()) + (item.item_id,)
        self._check_prefix_free()

    def _check_prefix_free(self) -> None:
        """A SID that is a strict prefix of another would make "end of SID" ambiguous in decoding."""
        prefixes = {tuple(item.tokens[:k]) for item in self._items.values() for k in range(1, len(item.tokens))}
        clashes = [item for item in self._items.values() if item.tokens in prefixes]
        if clashes:
            lines = [f"item {c.item_id}: SID {c.sid} is a prefix of another item's SID" for c in clashes[:5]]
            raise DataValidationError(self.source, lines,
                                      fix="give every item of a colliding group the extra level, not only some")

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_files(
        cls,
        index_path: str | Path,
        info_path: str | Path | None = None,
        item_path: str | Path | None = None,
    ) -> "ItemCatalog":
        """Read and cross-check ``index.json`` (+ optional ``info`` txt and ``item.json``).

        Raises:
            DataValidationError: a missing or malformed file, or files that disagree.
        """
        index = read_index_json(index_path)
        titles: dict[int, str] = {}
        descriptions: dict[int, str] = {}
        if item_path is not None:
            titles, descriptions = read_item_json(item_path, index)
        if info_path is not None:
            info_titles = read_info_txt(info_path, index)
            for item_id, title in info_titles.items():
                titles.setdefault(item_id, title)
        return cls(index, titles, descriptions, source=str(index_path))

    @classmethod
    def from_data_dir(cls, data_dir: str | Path, category: str) -> "ItemCatalog":
        """Read ``index/<category>.index.json``, ``index/<category>.item.json`` and ``info/<category>*.txt``.

        ``item.json`` and the info file are optional; the index is required.
        """
        from rec_lightning.files.layout import find_category_files

        files = find_category_files(data_dir, category)
        return cls.from_files(files.index, files.info, files.item)

    @classmethod
    def from_index(cls, index: Mapping[int, Sequence[str]], titles: Mapping[int, str] | None = None) -> "ItemCatalog":
        return cls(index, titles)

    # ----------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self):
        return iter(self._items.values())

    @property
    def item_ids(self) -> list[int]:
        return list(self._items)

    def item(self, item_id: int) -> Item:
        try:
            return self._items[item_id]
        except KeyError:
            raise KeyError(f"item id {item_id} is not in the catalog {self.source}") from None

    def sid_of(self, item_id: int) -> str:
        return self.item(item_id).sid

    def title_of(self, item_id: int) -> str:
        return self.item(item_id).title

    def items_with_sid(self, sid: str) -> tuple[int, ...]:
        """All item ids sharing this SID (empty tuple if none)."""
        return self._by_sid.get(sid, ())

    def has_sid(self, sid: str) -> bool:
        return sid in self._by_sid

    @property
    def sids(self) -> list[str]:
        """Distinct SIDs, in order of their first item id."""
        return list(self._by_sid)

    @property
    def duplicate_sids(self) -> dict[str, tuple[int, ...]]:
        """SIDs shared by more than one item -> the item ids sharing them."""
        return {sid: ids for sid, ids in self._by_sid.items() if len(ids) > 1}

    @property
    def num_levels(self) -> int:
        """The longest SID's number of levels."""
        return max(len(item.tokens) for item in self._items.values())

    @property
    def level_counts(self) -> tuple[int, ...]:
        """Set of distinct SID lengths present, e.g. ``(3,)`` or ``(3, 4)``."""
        return tuple(sorted({len(item.tokens) for item in self._items.values()}))

    @property
    def sid_tokens(self) -> list[str]:
        """Every distinct level token used, ordered by level then numerically by code."""
        tokens = {token for item in self._items.values() for token in item.tokens}
        return sorted(tokens, key=sid_token_sort_key)

    def checksum(self) -> str:
        """SHA-256 over the sorted ``item_id -> SID`` pairs; identifies an index across files."""
        digest = hashlib.sha256()
        for item_id, item in self._items.items():
            digest.update(f"{item_id}\t{item.sid}\n".encode())
        return digest.hexdigest()


# --------------------------------------------------------------------------------- file readers
def read_index_json(path: str | Path) -> dict[int, tuple[str, ...]]:
    """Read ``{"item_id": ["<a_1>", "<b_2>", ...]}``, validating keys and tokens.

    Raises:
        DataValidationError: naming the file, the item and what is wrong.
    """
    text = read_text_file(path, what="SID index (index.json)")
    try:
        raw = json.loads(text, object_pairs_hook=reject_duplicate_keys(path))
    except json.JSONDecodeError as err:
        raise DataValidationError(path, [f"line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})"],
                                  fix="regenerate the file; it must be a JSON object item_id -> list of SID tokens") from None
    if not isinstance(raw, dict):
        raise DataValidationError(path, [f"top level is a JSON {type(raw).__name__}, expected an object"],
                                  fix='write {"0": ["<a_1>", "<b_2>", "<c_3>"], ...}')
    problems: list[str] = []
    index: dict[int, tuple[str, ...]] = {}
    for key, tokens in raw.items():
        if not (isinstance(key, str) and key.isdigit() and (key == "0" or not key.startswith("0"))):
            problems.append(f"key {key!r}: expected a non-negative integer item id as a string")
            continue
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            problems.append(f"item {key}: expected a list of SID token strings, got {tokens!r}")
            continue
        try:
            check_sid_tokens(tokens)
        except SIDFormatError as err:
            problems.append(f"item {key}: {err}")
            continue
        index[int(key)] = tuple(map(sys.intern, tokens))  # a few hundred distinct tokens, one string each
    if problems:
        raise DataValidationError(path, problems, fix="rebuild the index (e.g. `python -m rec_lightning build-sids`)")
    if not index:
        raise DataValidationError(path, ["the index holds no items"], fix="point to a non-empty index.json")
    return index


def read_info_txt(path: str | Path, index: Mapping[int, Sequence[str]]) -> dict[int, str]:
    """Read the info file (``SID\\ttitle\\titem_id`` per line) and check each SID against the index.

    Returns:
        ``{item_id: title}``.
    """
    text = read_text_file(path, what="item info file")
    problems: list[str] = []
    titles: dict[int, str] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            problems.append(f"line {line_no}: expected 3 tab-separated fields SID, title, item_id; got {len(fields)}")
            continue
        sid, title, raw_id = (f.strip() for f in fields)
        if not raw_id.isdigit():
            problems.append(f"line {line_no}, field item_id: expected an integer, got {raw_id!r}")
            continue
        item_id = int(raw_id)
        if item_id not in index:
            problems.append(f"line {line_no}: item {item_id} is not in the index")
            continue
        expected = "".join(index[item_id])
        if sid != expected:
            problems.append(f"line {line_no}, field SID: item {item_id} has {sid!r} here but {expected!r} in the index")
            continue
        titles[item_id] = title
    if problems:
        raise DataValidationError(path, problems, fix="regenerate the info file from the same index.json")
    return titles


def read_item_json(path: str | Path, index: Mapping[int, Sequence[str]]) -> tuple[dict[int, str], dict[int, str]]:
    """Read ``item.json`` (``{"item_id": {"title": ..., "description": ...}}``).

    A description stored as a Python-list repr (MiniOneRec's format) is joined into plain text.

    Returns:
        ``(titles, descriptions)`` keyed by item id.
    """
    text = read_text_file(path, what="item metadata (item.json)")
    try:
        raw = json.loads(text, object_pairs_hook=reject_duplicate_keys(path))
    except json.JSONDecodeError as err:
        raise DataValidationError(path, [f"line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})"],
                                  fix="regenerate item.json") from None
    if not isinstance(raw, dict):
        raise DataValidationError(path, [f"top level is a JSON {type(raw).__name__}, expected an object"],
                                  fix='write {"0": {"title": "...", "description": "..."}, ...}')
    problems: list[str] = []
    titles: dict[int, str] = {}
    descriptions: dict[int, str] = {}
    for key, meta in raw.items():
        if not (isinstance(key, str) and key.isdigit()):
            problems.append(f"key {key!r}: expected an integer item id")
            continue
        if not isinstance(meta, dict) or not isinstance(meta.get("title"), str):
            problems.append(f"item {key}, field title: expected an object with a string 'title'")
            continue
        titles[int(key)] = meta["title"]
        descriptions[int(key)] = description_text(meta.get("description", ""))
    missing = sorted(set(index) - set(titles))
    if missing:
        problems.append(f"{len(missing)} indexed items have no entry, e.g. item ids {missing[:5]}")
    if problems:
        raise DataValidationError(path, problems, fix="regenerate item.json for every item of the index")
    return titles, descriptions


def description_text(description: object) -> str:
    """Turn MiniOneRec's description field (often a list repr string) into plain text."""
    if isinstance(description, list):
        return " ".join(str(part) for part in description)
    if not isinstance(description, str):
        return ""
    stripped = description.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            parts = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            return description
        if isinstance(parts, list):
            return " ".join(str(part) for part in parts)
    return description

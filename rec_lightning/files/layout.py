"""Where a category's files live in the MiniOneRec layout, for any category name.

``<data_dir>/{train,valid,test}/<Category>*.csv``, ``<data_dir>/info/<Category>*.txt``,
``<data_dir>/index/<Category>.index.json`` and ``<data_dir>/index/<Category>.item.json``.
The file suffix (MiniOneRec writes ``_5_2016-10-2018-11`` whatever the window) is not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rec_lightning.errors import ConfigurationError, DataValidationError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class CategoryFiles:
    """Paths of one category's files; ``info`` and ``item`` may be absent (None)."""

    data_dir: Path
    category: str
    index: Path
    info: Path | None
    item: Path | None

    def split(self, name: str) -> Path:
        """The CSV of split ``name`` (``train``, ``valid`` or ``test``)."""
        return find_split_csv(self.data_dir, name, self.category)


def check_data_dir(data_dir: str | Path) -> None:
    """Raise unless ``data_dir`` is an existing folder.

    Raises:
        DataValidationError: it is missing or a file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "is a file, not a folder" if data_dir.exists() else "does not exist"
        raise DataValidationError(data_dir, [f"the data folder {what}"],
                                  fix="pass an existing --data.data_dir, or fetch data with `python -m rec_lightning download`")


def available_categories(data_dir: str | Path) -> list[str]:
    """Categories that have an ``index/<Category>.index.json`` in ``data_dir``.

    Raises:
        DataValidationError: ``data_dir`` does not exist (not "no categories": the folder is missing).
    """
    check_data_dir(data_dir)
    index_dir = Path(data_dir) / "index"
    return sorted(p.name[: -len(".index.json")] for p in index_dir.glob("*.index.json"))


def only_category(data_dir: str | Path, fix: str) -> str:
    """The one category of ``data_dir`` (the default when none is named).

    Raises:
        DataValidationError: none or several categories (listing them, with ``fix``: the flag that names one).
    """
    present = available_categories(data_dir)
    if len(present) != 1:
        raise DataValidationError(Path(data_dir) / "index", [f"categories present: {present or 'none'}"], fix=fix)
    return present[0]


def find_category_files(data_dir: str | Path, category: str) -> CategoryFiles:
    """Locate a category's index, info and item files.

    Raises:
        DataValidationError: the folder or the index is missing (listing the categories present).
    """
    data_dir = Path(data_dir)
    check_data_dir(data_dir)
    index = data_dir / "index" / f"{category}.index.json"
    if not index.is_file():
        present = available_categories(data_dir)
        raise DataValidationError(
            index, [f"no SID index for category {category!r}; categories present: {present or 'none'}"],
            fix="set the category to one of those present, or build an index with `python -m rec_lightning build-sids`")
    item = data_dir / "index" / f"{category}.item.json"
    info = _glob_one(data_dir / "info", f"{category}*.txt", required=False, category=category)
    return CategoryFiles(data_dir, category, index, info, item if item.is_file() else None)


def find_split_csv(data_dir: str | Path, split: str, category: str) -> Path:
    """The single ``<data_dir>/<split>/<category>*.csv``.

    Raises:
        DataValidationError: none or several files match.
    """
    if split not in SPLITS:
        raise ConfigurationError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = _glob_one(Path(data_dir) / split, f"{category}*.csv", required=True, category=category)
    assert path is not None
    return path


def _glob_one(folder: Path, pattern: str, required: bool, category: str) -> Path | None:
    matches = sorted(p for p in folder.glob(pattern) if _belongs_to(p.name, category))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        if not required:
            return None
        raise DataValidationError(folder / pattern, [f"no file matches {pattern!r} in {folder}"],
                                  fix="check --data.data_dir and --data.category, or fetch data with `python -m rec_lightning download`")
    raise DataValidationError(folder / pattern, [f"{len(matches)} files match: {[m.name for m in matches]}"],
                              fix="keep one file per category and split")


def _belongs_to(name: str, category: str) -> bool:
    """``Toys.csv`` and ``Toys_5_2016.csv`` belong to ``Toys``; ``Toys_and_Games.csv`` does not."""
    rest = name[len(category):]
    return rest.startswith(".") or (rest.startswith("_") and rest[1:2].isdigit())

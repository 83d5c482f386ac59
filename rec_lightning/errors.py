"""The library's error types, and strict UTF-8 file readers (whole, or line by line) that report where they fail.

Every error the library raises for a user's input or environment derives from
:class:`RecLightningError`; the command line prints its message (which ends with the fix) with exit
code 1 and no traceback. Every message names the file, the place in it (line, row, column or field),
what was expected, and how to fix it. Several problems in one file are reported together (the first
few, plus a count).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

MAX_REPORTED_PROBLEMS = 5


class RecLightningError(Exception):
    """Base of the library's own errors: something the user can fix, described with the fix.

    The command line catches it (also when Lightning or jsonargparse wrap it) and prints the message
    only; ``--traceback`` or ``REC_LIGHTNING_TRACEBACK=1`` shows the traceback too.
    """


class ConfigurationError(RecLightningError, ValueError):
    """An option, a combination of options or the machine does not fit the requested run."""


class OutputExistsError(RecLightningError, FileExistsError):
    """A command would replace or mix with files it did not create (or that another run is writing)."""


class CorruptFileError(RecLightningError, ValueError):
    """A file is unreadable or holds invalid values (e.g. truncated weights, NaN tensors)."""


class EmptyResultsError(RecLightningError, RuntimeError):
    """A run finished but its results are mostly empty (e.g. decoding returned no items for most rows)."""


class DataValidationError(RecLightningError, ValueError):
    """An input file is missing or malformed.

    Args:
        path: the offending file or folder.
        problems: one line per problem, each naming the place (e.g. ``"line 12, column 'item_sid': ..."``).
        fix: what the user should do.
    """

    def __init__(self, path: str | Path, problems: Sequence[str], fix: str = "") -> None:
        self.path = str(path)
        self.problems = list(problems)
        self.fix = fix
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        more = len(self.problems) - len(shown)
        lines = [f"{self.path}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        if fix:
            lines.append(f"  Fix: {fix}")
        super().__init__("\n".join(lines))


def read_text_file(path: str | Path, what: str = "file") -> str:
    """Read a whole file as strict UTF-8 (a leading byte order mark is dropped, as ``utf-8-sig`` does).

    Raises:
        DataValidationError: if it is missing, a folder, or holds bytes that are not UTF-8 (with line).
    """
    path = _existing_file(path, what)
    data = path.read_bytes()
    if data.startswith(_BOM):  # a UTF-8 byte order mark (Excel's "CSV UTF-8"): not part of the text
        data = data[len(_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise _not_utf8(path, line, err.start, data[err.start:err.end]) from None


def iter_text_lines(path: str | Path, what: str = "file") -> Iterator[str]:
    """The lines of a file as strict UTF-8, one at a time, each with its line ending (what a ``csv.reader`` takes).

    Lines end where ``open(path, newline="")`` ends them (LF, CR LF or a lone CR) and the errors are
    :func:`read_text_file`'s, same line and byte offset, but the file is never held whole in memory.

    Raises:
        DataValidationError: if it is missing, a folder, or holds bytes that are not UTF-8 (with line).
    """
    return _utf8_lines(_existing_file(path, what))


def _utf8_lines(path: Path) -> Iterator[str]:
    offset = 0  # bytes before the current line, byte order mark excluded (read_text_file's offsets)
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):  # split on b"\n" only: no UTF-8 sequence holds that byte
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, line_no, offset + err.start, raw[err.start:err.end]) from None
            offset += len(raw)
            if "\r" in line and not (line.endswith("\r\n") and line.count("\r") == 1):
                yield from _LONE_CR.split(line)  # old Mac line ends, as universal newlines split them
            else:
                yield line


_BOM = b"\xef\xbb\xbf"
_LONE_CR = re.compile(r"(?<=\r)(?!\n)(?!$)")  # after each CR that is neither before an LF nor at the end


def _existing_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataValidationError(path, [f"the {what} does not exist"],
                                  fix="check the path, or fetch the data with `python -m rec_lightning download`")
    if path.is_dir():
        raise DataValidationError(path, [f"expected the {what}, found a folder"], fix="point to the file itself")
    return path


def _not_utf8(path: Path, line: int, offset: int, bad: bytes) -> DataValidationError:
    return DataValidationError(path, [f"line {line}, byte offset {offset}: bytes {bad!r} are not valid UTF-8"],
                               fix="re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


def reject_duplicate_keys(path: str | Path):
    """A ``json.loads(object_pairs_hook=...)`` hook that raises on a key given twice in one object.

    Raises:
        DataValidationError: naming the file and the key (JSON itself keeps the last value silently).
    """
    def hook(pairs: list[tuple[str, object]]) -> dict:
        result: dict = {}
        for key, value in pairs:
            if key in result:
                raise DataValidationError(path, [f"key {key!r} appears more than once (JSON keeps only the last)"],
                                          fix="keep one entry per key; if both are meant, one of them has a wrong id")
            result[key] = value
        return result

    return hook

"""Write a prepared data set in the MiniOneRec layout, atomically, row by row.

Everything goes into a hidden staging folder beside ``output``, which is renamed onto ``output`` only
when every file is complete; an existing non-empty ``output`` is refused (nothing is replaced). The
SIDs written here are *positional*: item ``i`` gets the base-``K`` digits of ``i`` (``<a_0><b_1><c_7>``
for item 263 with ``K = 256``), unique by construction and free of meaning, so that the folder passes
``check-data`` and trains at once; ``embed-items`` + ``build-sids --rewrite_data`` replace them with
semantic IDs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from rec_lightning.data.raw.metadata import ItemMeta
from rec_lightning.data.raw.sequences import Sequences, Windows
from rec_lightning.data.records import COLUMNS
from rec_lightning.errors import ConfigurationError, DataValidationError
from rec_lightning.sids.codec import LEVEL_LETTERS


def positional_sids(num_items: int, levels: int = 3, codebook_size: int = 256) -> list[str]:
    """SID string of items ``0..num_items-1``: the ``levels`` base-``codebook_size`` digits, most significant first.

    Raises:
        ValueError: more items than ``codebook_size ** levels``.
    """
    if num_items > codebook_size ** levels:
        raise ConfigurationError(f"{num_items} items do not fit {levels} levels of {codebook_size} codes; raise the levels")
    sids = []
    for item in range(num_items):
        digits = [(item // codebook_size ** (levels - 1 - level)) % codebook_size for level in range(levels)]
        sids.append("".join(f"<{LEVEL_LETTERS[level]}_{d}>" for level, d in enumerate(digits)))
    return sids


def check_output_free(output: Path) -> None:
    """Refuse an output that exists and is not an empty folder (the command never replaces data).

    Raises:
        DataValidationError: naming the folder.
    """
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise DataValidationError(output, ["the output already exists and is not empty"],
                                  fix="choose a new --output folder (prepare never replaces existing data)")


class StagedOutput:
    """A staging folder that becomes ``output`` on :meth:`commit` and is removed if the run fails."""

    def __init__(self, output: Path) -> None:
        check_output_free(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output = output
        self.root = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial.", dir=output.parent))

    def path(self, relative: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, relative: str, text: str) -> None:
        self.path(relative).write_text(text, encoding="utf-8")

    def commit(self) -> Path:
        check_output_free(self.output)  # still free now that the work is done
        if self.output.exists():
            self.output.rmdir()  # empty, checked above
        os.replace(self.root, self.output)
        return self.output

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def write_split_csv(path: Path, seq: Sequences, windows: Windows, rows: np.ndarray, titles: Sequence[str],
                    sids: Sequence[str]) -> None:
    """One split CSV: a row per window index in ``rows``, MiniOneRec's seven columns."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for w in rows.tolist():
            start, target = int(windows.start[w]), int(windows.target[w])
            history = seq.items[start:target].tolist()
            item = int(seq.items[target])
            writer.writerow([seq.user_keys[int(windows.user[w])], repr([titles[h] for h in history]), titles[item],
                             repr(history), item, repr([sids[h] for h in history]), sids[item]])


def write_catalog(staged: StagedOutput, category: str, metas: Sequence[ItemMeta], sids: Sequence[str]) -> None:
    """``index/<C>.index.json``, ``index/<C>.item.json`` (with each item's raw key) and ``info/<C>.txt``."""
    from rec_lightning.sids.codec import parse_sid

    index = {str(i): list(parse_sid(sid)) for i, sid in enumerate(sids)}
    staged.write_text(f"index/{category}.index.json", json.dumps(index) + "\n")
    items = {str(i): {"title": m.title, "description": m.description, "brand": m.brand, "categories": m.categories,
                      "source_id": m.source_id} for i, m in enumerate(metas)}
    staged.write_text(f"index/{category}.item.json", json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    staged.write_text(f"info/{category}.txt", "".join(f"{sid}\t{m.title}\t{i}\n" for i, (sid, m) in enumerate(zip(sids, metas))))

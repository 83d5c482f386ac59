"""The one atomic file writer: write a temporary file in the target's folder, then ``os.replace`` it into place.

A reader sees either the old file or the complete new one, never a partial write; the temporary file is
removed if writing fails. Folders are created as needed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["write_atomic", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "write_npy_atomic",
           "write_folder_atomic"]


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(staging)`` on a temporary path beside ``path`` (same suffix), then rename it into place.

    For writers that take a file name (``safetensors.torch.save_file``, ``matplotlib``'s ``savefig``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    try:
        write(Path(staging))
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda staging: staging.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any, indent: int = 1) -> Path:
    """Write ``payload`` as JSON (non-ASCII kept, trailing newline) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=indent, ensure_ascii=False) + "\n")


def write_npy_atomic(path: str | Path, array: Any) -> Path:
    """Write a numpy ``array`` as ``.npy`` (no pickle) to ``path`` atomically."""
    import numpy as np

    def save(staging: Path) -> None:
        with open(staging, "wb") as stream:
            np.save(stream, array, allow_pickle=False)

    return write_atomic(path, save)


def write_folder_atomic(path: str | Path, write: Callable[[Path], Any]) -> bool:
    """Call ``write(staging)`` on a new temporary folder beside ``path``, then rename it to ``path``.

    A reader sees no folder or the complete one. If ``path`` appeared meanwhile (another process wrote
    the same content first), the staging folder is removed and the existing one is kept.

    Returns:
        True if this call's folder was put in place, False if one was already there.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(staging)
        try:
            os.rename(staging, path)
            return True
        except OSError:
            if path.is_dir():  # another process finished first
                return False
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

"""Fetch a category's published MiniOneRec files, verified by size and git blob id, resumable.

Files come from the public repository AkaliKong/MiniOneRec at a pinned commit (or a mirror: a URL
or a local folder laid out like its ``data/Amazon`` folder). Each file is downloaded to a
``.part`` file (resumed with an HTTP Range request after an interruption), checked, and only then
renamed into place; a file already present and correct is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rec_lightning.errors import RecLightningError

log = logging.getLogger(__name__)

UPSTREAM_COMMIT = "81b4ba9"
DEFAULT_SOURCE = f"https://raw.githubusercontent.com/AkaliKong/MiniOneRec/{UPSTREAM_COMMIT}/data/Amazon"
_SUFFIX = "_5_2016-10-2018-11"


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the data folder
    size: int
    blob: str  # git blob id: sha1(b"blob <size>\0" + content)


MANIFEST: dict[str, tuple[RemoteFile, ...]] = {
    "Industrial_and_Scientific": (
        RemoteFile(f"train/Industrial_and_Scientific{_SUFFIX}.csv", 19277597, "c35e3af957d20844b5475973db71c24f769c54ef"),
        RemoteFile(f"valid/Industrial_and_Scientific{_SUFFIX}.csv", 2915875, "bfb8211bd85d1c0f20f7e6764bd114ca27e75053"),
        RemoteFile(f"test/Industrial_and_Scientific{_SUFFIX}.csv", 3105687, "ed3707f99446c2d09216431c209e123f929966af"),
        RemoteFile(f"info/Industrial_and_Scientific{_SUFFIX}.txt", 374118, "1e26e1339c89c4cafe40e85443627f7cdeb4d2d5"),
        RemoteFile("index/Industrial_and_Scientific.index.json", 152189, "58d4cfc25fec4b8d362600675b576927ed982747"),
        RemoteFile("index/Industrial_and_Scientific.item.json", 3008778, "f93d3f2746c1be07086770a00f5e8cfc1d03d1fb"),
    ),
}


class DownloadError(RecLightningError, RuntimeError):
    """A file could not be fetched or failed verification."""


def git_blob_id(path: Path) -> str:
    """The id git gives the file's content (``git hash-object``)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_valid(path: Path, remote: RemoteFile) -> bool:
    return path.is_file() and path.stat().st_size == remote.size and git_blob_id(path) == remote.blob


def download_category(category: str, output: str | Path, source: str = DEFAULT_SOURCE, timeout: float = 60.0) -> list[str]:
    """Download and verify every file of ``category`` into ``output``.

    Args:
        category: a category in :data:`MANIFEST`.
        output: destination data folder (MiniOneRec layout).
        source: base URL or local folder holding ``train/ valid/ test/ info/ index/``.

    Returns:
        One status line per file ("downloaded", "resumed", "up to date").

    Raises:
        DownloadError: unknown category, unreachable source, or a file failing its size/blob check.
    """
    if category not in MANIFEST:
        raise DownloadError(f"no published files are known for category {category!r}; known: {sorted(MANIFEST)}. "
                            "Fix: build your own data in the MiniOneRec layout (see README) or add the category's "
                            "file list to rec_lightning/data/download.py")
    output = Path(output)
    staging = output / ".download"
    statuses = []
    for remote in MANIFEST[category]:
        final = output / remote.path
        if _is_valid(final, remote):
            statuses.append(f"{remote.path}: up to date")
            continue
        part = staging / (remote.path + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        resumed = _fetch(_join(source, remote.path), part, remote.size, timeout)
        if not _is_valid(part, remote):
            got = part.stat().st_size
            part.unlink()
            raise DownloadError(f"{remote.path}: downloaded {got} bytes that do not match the published file "
                                f"({remote.size} bytes, git blob {remote.blob}). Fix: retry, or check the --source mirror")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        statuses.append(f"{remote.path}: {'resumed' if resumed else 'downloaded'} and verified")
    shutil.rmtree(staging, ignore_errors=True)
    return statuses


def _join(source: str, relative: str) -> str:
    return f"{source.rstrip('/')}/{relative}" if "://" in source else str(Path(source) / relative)


def _fetch(location: str, part: Path, size: int, timeout: float) -> bool:
    """Append the missing bytes of ``location`` to ``part``; returns True if it resumed a partial file."""
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if "://" not in location:
        source = Path(location)
        if not source.is_file():
            raise DownloadError(f"{source}: not found in the local mirror. Fix: point --source to a folder with "
                                "train/ valid/ test/ info/ index/")
        with source.open("rb") as src, part.open("ab") as dst:
            src.seek(have)
            shutil.copyfileobj(src, dst)
        return have > 0
    request = urllib.request.Request(location, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            with part.open("ab" if resumed else "wb") as dst:
                shutil.copyfileobj(response, dst)
            return resumed
    except urllib.error.HTTPError as err:
        if err.code == 416 and have == size:  # already complete
            return True
        raise DownloadError(f"{location}: HTTP {err.code} {err.reason}. Fix: check --source") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{location}: {err}. The partial file {part} is kept; run the command again to resume, "
                            "or pass --source with a reachable mirror or local folder") from err

"""Tokenized datasets cached on disk: parse, validate and tokenize a split once, map it on every later run and rank.

A cached dataset is a folder ``<cache_dir>/datasets/<key>/`` of ``.npy`` arrays (read memory-mapped, so
every process on a node shares one copy in the page cache) and a ``meta.json`` written last; the folder
is written under a temporary name and renamed into place, so a reader never sees half of one. The key
is a hash of everything that changes an example's tokens: the data files' bytes (the split's CSV and
the category's index, item and info files), the tokenizer (its full serialisation), the options that
shape the examples (tasks and weights, their templates, category name, ``max_length``, ``train_format``,
``drop_contained_windows``, the seed of the sampled task mix and order), the source of the code that
renders and tokenizes examples, and :data:`FORMAT_VERSION`. ``history_loss`` is not part of it: it changes labels, which are derived from the
stored tokens per batch, not stored. A changed input means a new key (and a new folder); nothing is
ever overwritten. Old folders are not deleted (clear ``<cache_dir>/datasets`` by hand).

One process builds a missing entry while the others wait on a lock file beside it (``fcntl``; without
it each process may build and the first rename wins), so under DDP local rank 0 or whichever rank comes
first tokenizes and the rest map its arrays. Hashing reads the data files once (about 1 s per GB).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from rec_lightning.data.dataset import RecDataset, map_arrays
from rec_lightning.data.download import git_blob_id
from rec_lightning.files.atomic import write_folder_atomic, write_json_atomic

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the stored arrays change (code changes to rendering are in the key already)


def file_fingerprint(paths: list[Path]) -> str:
    """SHA-256 over each file's name and content id (:func:`~rec_lightning.data.download.git_blob_id`)."""
    return hashlib.sha256("".join(f"{Path(path).name}\0{git_blob_id(Path(path))}\0" for path in paths).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of everything that decides a tokenizer's ids: its serialisation, added and special tokens.

    The backend's current truncation and padding settings are left out (a call with ``padding=True``
    changes them without changing any id); a probe's ids cover flags such as ``add_bos_token``.
    """
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        digest.update(json.dumps(state, sort_keys=True).encode())
    else:  # a slow tokenizer: its vocabulary
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    special = {name: str(getattr(tokenizer, name, None)) for name in ("bos_token", "eos_token", "pad_token")}
    probe = tokenizer(["", "probe: a <b> 1"])["input_ids"]
    digest.update(json.dumps([special, sorted(tokenizer.get_added_vocab().items()), probe]).encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the source of the code that renders and tokenizes examples (prompts, tasks, windows, dataset).

    A change to a template, the preamble or the tokenization rules then makes new entries, with no
    version to remember to bump.
    """
    from rec_lightning import prompts
    from rec_lightning.data import dataset, tasks, windows

    return file_fingerprint([Path(module.__file__) for module in (prompts, tasks, windows, dataset)] + [Path(__file__)])


def cache_key(inputs: dict) -> str:
    """The folder name for these key inputs (JSON-serialisable)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def load_or_build(root: Path, inputs: dict, build: Callable[[], RecDataset], *, max_length: int, with_response: bool,
                  prompt_label_ids=None) -> RecDataset:
    """The cached dataset for ``inputs`` under ``root``, built with ``build()`` and stored first if missing.

    If the cache folder cannot be used (read-only, full, no file locking), the dataset is built in
    memory with a warning saying why.
    """
    folder = Path(root) / cache_key({**inputs, "format": FORMAT_VERSION, "code": code_fingerprint()})
    options = dict(max_length=max_length, with_response=with_response, prompt_label_ids=prompt_label_ids)
    dataset = _load(folder, **options)
    if dataset is not None:
        log.info("tokenized %s examples read from the cache %s", f"{len(dataset):,}", folder)
        return dataset
    built = None
    try:
        with _lock(folder.with_name(folder.name + ".lock")):
            dataset = _load(folder, set_aside=True, **options)  # another process may have built it meanwhile
            if dataset is not None:
                return dataset
            built = build()
            write_folder_atomic(folder, lambda staging: _save(built, staging, inputs))
            log.info("tokenized %s examples cached in %s", f"{len(built):,}", folder)
    except OSError as error:
        log.warning("the tokenized-data cache %s cannot be used (%s); tokenizing in memory this run (set "
                    "data.cache_dir to a writable folder, or data.cache_tokenized: false)", folder.parent, error)
        return build() if built is None else built
    dataset = _load(folder, quiet=True, **options)  # build() has logged what it shortened
    return built if dataset is None else dataset


def _save(dataset: RecDataset, folder: Path, inputs: dict) -> None:
    for name, array in dataset.arrays().items():
        with open(folder / f"{name}.npy", "wb") as stream:
            np.save(stream, np.ascontiguousarray(array), allow_pickle=False)
            stream.flush()
            os.fsync(stream.fileno())  # on disk before the folder is renamed into place
    meta = {"format": FORMAT_VERSION, "num_examples": len(dataset), "task_names": dataset.task_names,
            "num_shortened": dataset.num_shortened, "num_truncated": dataset.num_truncated, "inputs": inputs}
    write_json_atomic(folder / "meta.json", meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp makes it 0700: readable by whoever may read the cache


def _load(folder: Path, quiet: bool = False, set_aside: bool = False, **options) -> RecDataset | None:
    """The entry in ``folder``, or None if there is none or it is damaged (moved aside when ``set_aside``:
    only under the lock, so no two processes move it, and never an entry another one just wrote)."""
    if not folder.exists():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        arrays = map_arrays(folder)
        count = meta["num_examples"]
        consistent = (meta["format"] == FORMAT_VERSION and len(arrays["token_offsets"]) == count + 1
                      and int(arrays["token_offsets"][-1]) == len(arrays["token_ids"])
                      and int(arrays["history_offsets"][-1]) == len(arrays["history_ids"])
                      and all(len(arrays[name]) == count for name in ("prompt_lengths", "target_item_ids", "rows",
                                                                       "task_codes")))
        dataset = RecDataset.from_arrays(arrays, meta["task_names"], num_shortened=meta["num_shortened"],
                                         num_truncated=meta["num_truncated"], folder=folder, **options)
        problem = None if consistent else "inconsistent arrays"
    except Exception as error:  # noqa: BLE001 - any unreadable entry is rebuilt, never trusted
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        if set_aside:
            log.warning("ignoring the damaged tokenized-data cache %s (%s); rebuilding it", folder, problem)
            try:
                os.replace(folder, folder.with_name(f"{folder.name}.damaged-{os.getpid()}"))
            except FileNotFoundError:
                pass
        return None
    if (dataset.num_shortened or dataset.num_truncated) and not quiet:
        log.warning("%d of %d cached examples had their oldest history items dropped and %d their prompts cut from "
                    "the left to fit max_length=%d", dataset.num_shortened, len(dataset), dataset.num_truncated,
                    options["max_length"])
    return dataset


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, the atomic rename still keeps entries whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # any user of a shared cache may take it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)

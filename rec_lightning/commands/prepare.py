"""``prepare``: raw reviews + item metadata -> a data folder in the MiniOneRec layout, with a report.

Example: ``python -m rec_lightning prepare --reviews Industrial_and_Scientific.jsonl.gz
--meta meta_Industrial_and_Scientific.jsonl.gz --format amazon2023 --category Industrial_and_Scientific
--output data/industrial23``. The folder passes ``check-data`` and trains at once with positional SIDs;
``embed-items`` then ``build-sids --rewrite_data`` give it semantic IDs.
"""

from __future__ import annotations

import logging
from typing import Literal

from rec_lightning.commands.arguments import run_function


def prepare(reviews: str, meta: str, format: Literal["amazon2014", "amazon2018", "amazon2023", "table"], category: str,
            output: str, user_k: int = 5, item_k: int = 5, start_month: str | None = None, end_month: str | None = None,
            min_rating: float | None = None, max_history: int = 10,
            split: Literal["chronological", "leave-last-out"] = "chronological",
            split_ratio: tuple[int, int, int] = (8, 1, 1), max_title_words: int | None = 20,
            build_sids: Literal["rq-kmeans", "rq-kmeans-balanced", "rq-vae", "rq-kmeans-plus"] | None = None, encoder: str = "minilm",
            levels: int = 3, codebook_size: int = 256, seed: int = 0, progress: bool = True) -> dict:
    """Filter, sequence and split raw interactions into ``output`` (MiniOneRec's procedure by default).

    Args:
        reviews: reviews file, JSON lines (plain or gzipped) or, for ``table``, a CSV/Parquet of user,item,timestamp.
        meta: item metadata file in the same format family (``table``: a CSV/Parquet of item,title,...).
        format: amazon2014, amazon2018, amazon2023 or table.
        category: name used for the output files (e.g. Industrial_and_Scientific).
        output: new folder to write (must not exist, or be empty).
        user_k: users keep at least this many interactions (iterative k-core with item_k).
        item_k: items keep at least this many interactions.
        start_month: first month kept, YYYY-MM, UTC (default: no bound).
        end_month: last month kept, YYYY-MM inclusive, UTC (default: no bound).
        min_rating: drop reviews rated below this (default: keep all).
        max_history: history items per window (10).
        split: chronological (global 8:1:1 by target time, MiniOneRec) or leave-last-out (per user).
        split_ratio: train valid test parts of the chronological split.
        max_title_words: drop items whose title has more words (20, as MiniOneRec); null keeps all.
        build_sids: also run embed-items and build-sids (this method, collision repair ``reassign``) before the
            folder is committed; default: positional SIDs (unique, no meaning) to replace later.
        encoder: embed-items encoder for --build_sids (``minilm`` or an HF folder / hub id).
        levels: SID levels for --build_sids.
        codebook_size: codes per level for --build_sids.
        seed: seed of --build_sids.
        progress: show progress bars.

    Returns:
        The report written to ``output/prepare_report.json``.
    """
    from rec_lightning.data.raw.pipeline import PrepareOptions, format_summary, prepare_dataset
    from rec_lightning.errors import DataValidationError

    options = PrepareOptions(user_k, item_k, start_month, end_month, min_rating, max_history, split,
                             tuple(split_ratio), max_title_words)
    try:
        hook = None
        if build_sids is not None:
            from rec_lightning.data.raw.semantic_ids import semantic_id_builder

            fit_rqvae = fit_rqkmeans_plus = None
            if build_sids == "rq-vae":
                from rec_lightning.modules.rqvae import fit_rqvae
            if build_sids == "rq-kmeans-plus":
                from rec_lightning.modules.rqkmeans_plus import fit_rqkmeans_plus
            hook = semantic_id_builder(category, build_sids, encoder, levels, codebook_size, seed, progress,
                                       fit_rqvae=fit_rqvae, echo=print, fit_rqkmeans_plus=fit_rqkmeans_plus)
        report, seconds = prepare_dataset(reviews, meta, format, category, output, options, progress, hook)
    except (DataValidationError, ValueError) as err:
        raise SystemExit(str(err)) from None
    print(format_summary(report))
    print(f"wrote {output} in {sum(seconds.values()):.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in seconds.items())})")
    print(f"next: python -m rec_lightning check-data --data_dir {output} --category {category}")
    return report


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_function(prepare, "prepare", argv)

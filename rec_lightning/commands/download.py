"""``download``: fetch a category's published MiniOneRec files, verified and resumable."""

from __future__ import annotations

from rec_lightning.commands.arguments import run_function


def download(category: str = "Industrial_and_Scientific", output: str = "data/Amazon", source: str | None = None) -> None:
    """Download a category's files (train/valid/test CSVs, info, index.json, item.json).

    Args:
        category: category name, e.g. Industrial_and_Scientific.
        output: destination folder (MiniOneRec layout).
        source: base URL or local folder mirroring upstream's data/Amazon (default: the pinned upstream commit).
    """
    from rec_lightning.data.download import DEFAULT_SOURCE, DownloadError, download_category

    try:
        for line in download_category(category, output, source or DEFAULT_SOURCE):
            print(line)
    except DownloadError as err:
        raise SystemExit(f"download failed: {err}") from None


def main(argv: list[str]) -> None:
    run_function(download, "download", argv)

"""``check-data``: validate a data folder and print its statistics."""

from __future__ import annotations

from rec_lightning.commands.arguments import run_function


def check_data(data_dir: str, category: str) -> None:
    """Validate every file of a category and print rows, items, SID tokens and shared SIDs.

    Args:
        data_dir: folder in the MiniOneRec layout.
        category: category name, e.g. Industrial_and_Scientific.
    """
    from rec_lightning.data.records import check_rec_data
    from rec_lightning.errors import DataValidationError

    try:
        data = check_rec_data(data_dir, category)  # row by row: the rows are validated, not kept
    except DataValidationError as err:
        raise SystemExit(str(err)) from None
    catalog = data.catalog
    shared = catalog.duplicate_sids
    for split, num_rows in data.num_rows.items():
        print(f"{split:<6} {num_rows:>7} rows")
    print(f"items {len(catalog)}, SID levels {catalog.level_counts}, SID tokens {len(catalog.sid_tokens)}, "
          f"SIDs shared by several items {len(shared)} ({sum(len(v) for v in shared.values())} items)")
    print(f"warnings {len(data.warnings)}")
    for warning in data.warnings:
        print(f"  warning: {warning}")


def main(argv: list[str]) -> None:
    run_function(check_data, "check-data", argv)

"""A data folder with a seeded fraction of the train rows and everything else unchanged (issue 29's little-data regime).

    python benchmarks/subsample_train.py --data_dir ../shared/data/Amazon --fraction 0.2 --seed 0 \\
        --output outputs/industrial_train20

Keeps ``round(fraction * rows)`` train rows, drawn without replacement with ``numpy.random.default_rng(seed)``,
in their original order; ``index/``, ``info/``, ``valid/`` and ``test/`` are copied as they are, so the valid
and test splits (and the SIDs) are the same as the full data's and results compare row by row. The kept
row numbers (0-based, data rows of the train CSV) are written to ``subsample.json`` with the settings. The
folder is written beside ``--output`` and renamed into place when complete; an existing ``--output`` is
never replaced.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np


def subsample(data_dir: Path, output: Path, fraction: float, seed: int) -> dict:
    """Write the folder; returns the summary written to ``subsample.json``.

    Raises:
        SystemExit: a bad fraction, an existing output, or a data folder without exactly one train CSV.
    """
    if not 0.0 < fraction <= 1.0:
        raise SystemExit(f"--fraction must be in (0, 1], got {fraction}")
    if output.exists():
        raise SystemExit(f"{output} exists: choose another --output (nothing is replaced)")
    trains = sorted((data_dir / "train").glob("*.csv"))
    if len(trains) != 1:
        raise SystemExit(f"expected one CSV in {data_dir / 'train'}, found {len(trains)}")
    with trains[0].open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    keep = np.sort(np.random.default_rng(seed).choice(len(body), size=max(1, round(fraction * len(body))), replace=False))
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for part in ("index", "info", "valid", "test"):
        if (data_dir / part).is_dir():
            shutil.copytree(data_dir / part, staging / part)
    (staging / "train").mkdir(parents=True)
    with (staging / "train" / trains[0].name).open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *(body[i] for i in keep)])
    summary = {"source": str(data_dir.resolve()), "fraction": fraction, "seed": seed, "train_rows": len(body),
               "kept_rows": int(keep.size), "kept_row_numbers": keep.tolist()}
    (staging / "subsample.json").write_text(json.dumps(summary) + "\n")
    staging.rename(output)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = subsample(args.data_dir, args.output, args.fraction, args.seed)
    print(f"kept {summary['kept_rows']:,} of {summary['train_rows']:,} train rows (fraction {args.fraction}, seed "
          f"{args.seed}) in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

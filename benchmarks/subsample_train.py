"""A data folder with a seeded fraction of the train rows and everything else unchanged (issue 29's little-data regime).

    python benchmarks/subsample_train.py --data_dir ../shared/data/Amazon --fraction 0.2 --seed 0 \\
        --output outputs/industrial_train20

Keeps ``round(fraction * rows)`` train rows, drawn without replacement with ``numpy.random.default_rng(seed)``,
in their original order; ``index/``, ``info/``, ``valid/`` and ``test/`` are copied as they are, so the valid
and test splits (and the SIDs) are the same as the full data's and results compare row by row. The kept
row numbers (0-based, data rows of the train CSV) are written to ``subsample.json`` with the settings. The
folder is written beside ``--output`` and renamed into place when complete; an existing ``--output`` is
never replaced.

``--heldout_output DIR`` also writes the other train rows (the complement, in their original order) as a
second folder of the same shape, e.g. a slice of train held out from SFT for GRPO (issue 29):

    python benchmarks/subsample_train.py --data_dir SIDS --fraction 0.9 --seed 0 \\
        --output outputs/train90 --heldout_output outputs/heldout10
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from rec_lightning.data.holdout import kept_rows


def subsample(data_dir: Path, output: Path, fraction: float, seed: int, heldout: Path | None = None) -> dict:
    """Write the folder (and the held-out one); returns the summary written to ``subsample.json``.

    Raises:
        SystemExit: a bad fraction, an existing output, or a data folder without exactly one train CSV.
    """
    if not 0.0 < fraction <= 1.0:
        raise SystemExit(f"--fraction must be in (0, 1], got {fraction}")
    for target, flag in ((output, "--output"), (heldout, "--heldout_output")):
        if target is not None and target.exists():
            raise SystemExit(f"{target} exists: choose another {flag} (nothing is replaced)")
    if heldout is not None and heldout.resolve() == output.resolve():
        raise SystemExit("--heldout_output must differ from --output")
    trains = sorted((data_dir / "train").glob("*.csv"))
    if len(trains) != 1:
        raise SystemExit(f"expected one CSV in {data_dir / 'train'}, found {len(trains)}")
    with trains[0].open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    keep = kept_rows(len(body), fraction, seed)  # the draw RecDataModule(holdout_fraction=1 - fraction) holds out
    summary = {"source": str(data_dir.resolve()), "fraction": fraction, "seed": seed, "train_rows": len(body),
               "kept_rows": int(keep.size), "kept_row_numbers": keep.tolist()}
    folders = [(output, keep, summary)]
    if heldout is not None:
        rest = np.setdiff1d(np.arange(len(body)), keep)
        if rest.size == 0:
            raise SystemExit(f"--fraction {fraction} keeps all {len(body)} train rows: nothing would be held out "
                             "(--heldout_output needs a lower --fraction)")
        folders.append((heldout, rest, {**summary, "kept_rows": int(rest.size), "kept_row_numbers": rest.tolist(),
                                        "heldout_of": str(output.resolve())}))
    staged = [_write(data_dir, target.with_name(target.name + ".partial"), trains[0].name, header, body, rows_, meta)
              for target, rows_, meta in folders]
    for staging, (target, _, _) in zip(staged, folders):
        staging.rename(target)
    return summary


def _write(data_dir: Path, staging: Path, train_name: str, header: list, body: list, rows: np.ndarray,
           summary: dict) -> Path:
    """One complete folder at ``staging``: the given train rows, the other parts copied."""
    shutil.rmtree(staging, ignore_errors=True)
    for part in ("index", "info", "valid", "test"):
        if (data_dir / part).is_dir():
            shutil.copytree(data_dir / part, staging / part)
    (staging / "train").mkdir(parents=True)
    with (staging / "train" / train_name).open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *(body[i] for i in rows)])
    (staging / "subsample.json").write_text(json.dumps(summary) + "\n")
    return staging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout_output", type=Path, default=None,
                        help="also write the train rows not kept as this folder (e.g. a slice for GRPO)")
    args = parser.parse_args(argv)
    summary = subsample(args.data_dir, args.output, args.fraction, args.seed, args.heldout_output)
    print(f"kept {summary['kept_rows']:,} of {summary['train_rows']:,} train rows (fraction {args.fraction}, seed "
          f"{args.seed}) in {args.output}"
          + (f"; the other {summary['train_rows'] - summary['kept_rows']:,} in {args.heldout_output}"
             if args.heldout_output else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

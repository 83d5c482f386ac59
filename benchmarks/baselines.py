"""Classic baselines on the real data's whole test split, through the library's own command line.

    python benchmarks/baselines.py --data_dir ../shared/data/Amazon --output outputs/baselines [--skip_sasrec]

1. ``baseline --kind popularity`` on test;
2. ``baseline --kind transition`` on valid for each decay in DECAYS, the best valid NDCG@10 chosen,
   then that decay on test (never chosen on test);
3. ``fit --config configs/sasrec.yaml`` (checkpoint chosen on valid NDCG@10), ``baseline --kind sasrec`` on test.

Prints a table with the hardware, the settings and wall times (numbers move with the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import DECAYS, REPO, metrics_of, run  # noqa: E402  (one command runner for the benchmarks)

COLUMNS = ["hr@3", "hr@5", "hr@10", "ndcg@3", "ndcg@5", "ndcg@10", "mrr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "Amazon"))
    parser.add_argument("--output", default=str(REPO / "outputs" / "baselines"))
    parser.add_argument("--skip_sasrec", action="store_true")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = ["--data_dir", args.data_dir, "--num_items", "50"]
    seconds: dict[str, float] = {}
    rows: list[tuple[str, Path]] = []
    seconds["popularity"] = run("baseline", "--kind", "popularity", *data, "--split", "test",
                                "--output", str(out / "popularity"), log=out / "popularity.log")
    rows.append(("popularity", out / "popularity"))
    valid = {}
    for decay in DECAYS:
        folder = out / "transition_valid" / f"decay{decay}"
        run("baseline", "--kind", "transition", "--decay", str(decay), *data, "--split", "valid", "--output",
            str(folder), log=out / f"transition_valid_{decay}.log")
        valid[decay] = metrics_of(folder)
    best = max(DECAYS, key=lambda d: valid[d]["ndcg@10"])
    seconds["transition"] = run("baseline", "--kind", "transition", "--decay", str(best), *data, "--split", "test",
                                "--output", str(out / "transition"), log=out / "transition.log")
    rows.append((f"transition (decay {best}, chosen on valid)", out / "transition"))
    if not args.skip_sasrec:
        root = out / "sasrec_run"
        seconds["sasrec_fit"] = run("fit", "--config", str(REPO / "configs" / "sasrec.yaml"), "--data.data_dir",
                                    args.data_dir, "--trainer.default_root_dir", str(root), log=out / "sasrec_fit.log")
        seconds["sasrec"] = run("baseline", "--kind", "sasrec", "--checkpoint", str(root / "final_checkpoint"), *data,
                                "--split", "test", "--output", str(out / "sasrec"), log=out / "sasrec.log")
        rows.append(("SASRec (configs/sasrec.yaml)", out / "sasrec"))
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python "
             f"{platform.python_version()}; wall seconds: " + json.dumps({k: round(v) for k, v in seconds.items()}),
             "", "transition on valid: " + ", ".join(f"decay {d}: HR@10 {valid[d]['hr@10']:.4f} / NDCG@10 "
                                                     f"{valid[d]['ndcg@10']:.4f}" for d in DECAYS),
             "", "| model (test split, 50 items) | rows | " + " | ".join(c.upper() for c in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for name, folder in rows:
        metrics = metrics_of(folder)
        lines.append(f"| {name} | {metrics['count']} | " + " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS) + " |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

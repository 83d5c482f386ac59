"""``report``: compare evaluation results (ours or MiniOneRec's eval JSON): table, cases, chart.

    python -m rec_lightning report outputs/sft/eval_results.json outputs/rl/eval_results.json \\
        --names SFT RL --output outputs/report [--data_dir ../shared/data/Amazon --category ...]

Prints HR@K and NDCG@K at every K, MRR, the mean rank of hits, the invalid count and each run's
change against the first; for runs on the same rows, each later run's paired difference from the first
with a bootstrap 95% interval and a paired p-value; then some correct and incorrect cases with titles. Writes ``report.json``
and ``report.png`` (HR@K and NDCG@K per run) into ``--output``, each atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Sequence

from rec_lightning.reporting import (
    RunSummary,
    describe_case,
    format_paired,
    format_table,
    load_records,
    metric_names,
    paired_comparison,
    pick_cases,
    summarize,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rec_lightning report", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="eval_results.json files; the first is the baseline")
    parser.add_argument("--names", nargs="+", default=None, help="one name per file (default: parent folder names)")
    parser.add_argument("--output", required=True, help="folder for report.json and report.png")
    parser.add_argument("--cases", type=int, default=3, help="correct and incorrect cases shown per run")
    parser.add_argument("--seed", type=int, default=0, help="seed for picking the cases")
    parser.add_argument("--data_dir", default=None, help="with --category: check predictions against the catalog "
                        "and show titles for results that lack them")
    parser.add_argument("--category", default=None)
    return parser


def main(argv: Sequence[str]) -> None:
    """Entry point: ``python -m rec_lightning report ...``."""
    args = build_parser().parse_args(list(argv))
    if args.names is not None and len(args.names) != len(args.results):
        raise SystemExit(f"--names has {len(args.names)} names for {len(args.results)} result files")
    names = args.names or _default_names(args.results)
    catalog = None
    if args.data_dir is not None:
        from rec_lightning.layout import available_categories
        from rec_lightning.sid import ItemCatalog

        categories = [args.category] if args.category else available_categories(args.data_dir)
        if len(categories) != 1:
            raise SystemExit(f"--data_dir {args.data_dir} holds categories {categories}; pick one with --category")
        catalog = ItemCatalog.from_data_dir(args.data_dir, categories[0])
    is_valid = catalog.has_sid if catalog is not None else None
    try:
        summaries = [summarize(name, load_records(path), is_valid=is_valid) for name, path in zip(names, args.results)]
    except ValueError as err:
        raise SystemExit(str(err)) from None
    title_of_sid = (lambda sid: catalog.title_of(catalog.items_with_sid(sid)[0]) if catalog.has_sid(sid) else "") \
        if catalog is not None else None

    print(format_table(summaries))
    paired = {}
    for summary in summaries[1:]:
        try:
            comparisons = paired_comparison(summaries[0], summary, seed=args.seed)
        except ValueError as err:
            print(f"\nno paired comparison of {summary.name} with {summaries[0].name}: {err}")
            continue
        paired[summary.name] = [dataclasses.asdict(c) for c in comparisons]
        print("\n" + format_paired(summaries[0], summary, comparisons))
    for summary in summaries:
        hits, misses = pick_cases(summary, args.cases, args.seed)
        for label, rows in (("correct", hits), ("incorrect", misses)):
            print(f"\n{summary.name}: {len(rows)} {label} cases")
            for row in rows:
                print(describe_case(summary, row, title_of_sid))

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    from rec_lightning.evaluation import write_json_atomic

    report = {"runs": [{"name": s.name, "file": str(Path(p).resolve()), "metrics": s.metrics}
                       for s, p in zip(summaries, args.results)],
              "paired_vs_first": paired}
    json_path = write_json_atomic(output / "report.json", report)
    png_path = plot_metrics(summaries, output / "report.png")
    print(f"\nwrote {json_path} and {png_path}")


def _default_names(paths: Sequence[str]) -> list[str]:
    names = [Path(p).resolve().parent.name or Path(p).stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{i + 1}:{name}" for i, name in enumerate(names)]
    return names


def plot_metrics(summaries: Sequence[RunSummary], path: Path) -> Path:
    """HR@K and NDCG@K against K, one line per run, saved as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metric_names(summaries)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, prefix, label in ((axes[0], "hr@", "HR@K"), (axes[1], "ndcg@", "NDCG@K")):
        ks = [int(name[len(prefix):]) for name in names if name.startswith(prefix)]
        for summary in summaries:
            axis.plot(ks, [summary.metrics[f"{prefix}{k}"] for k in ks], marker="o", label=summary.name)
        axis.set_xscale("log")
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.set_xlabel("K")
        axis.set_title(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    handle, staging = tempfile.mkstemp(prefix=".report.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(staging, dpi=120)
        os.replace(staging, path)
    finally:
        plt.close(figure)
        if os.path.exists(staging):
            os.remove(staging)
    return path

"""``report``: compare evaluation results (ours or MiniOneRec's eval JSON): tables, cases, chart.

    python -m rec_lightning report outputs/sft/eval_results.json outputs/rl/eval_results.json \\
        --names SFT RL --output outputs/report [--data_dir ../shared/data/Amazon --category ...]

Prints HR@K and NDCG@K at every K, MRR named by its cut-off (``mrr@10`` and ``mrr@<list length>``), the
mean rank of hits, the invalid count and each run's change against the first. For runs on the same
rows: each later run's paired bootstrap 95% interval of each run's mean and of the difference, a
paired sign-flip p-value, and as the shown cases the rows where it hit in the top ``--case_k`` and the
first run missed (and the reverse), with titles; a single run shows seeded correct and incorrect cases.
Writes into ``--output``, each atomically: ``report.json`` (everything, including every disagreeing
row), ``report.md`` and ``report.csv`` (HR@3/5/10, NDCG@3/5/10 per run, the paper's layout) and
``report.png`` (titled with data set, split, rows and beam width).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from jsonargparse import Namespace

from rec_lightning.commands.arguments import SuggestingParser, command_parser


def build_parser() -> SuggestingParser:
    parser = command_parser("report", __doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="eval_results.json files; the first is the baseline")
    parser.add_argument("--names", nargs="+", default=None, help="one name per file (default: parent folder names)")
    parser.add_argument("--output", required=True, help="folder for report.json, .md, .csv and .png")
    parser.add_argument("--cases", type=int, default=3, help="cases shown per run and per direction (default: 3)")
    parser.add_argument("--case_k", type=int, default=10, help="a hit for the shown cases: target in the top K "
                        "(default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of single-run cases")
    parser.add_argument("--data_dir", default=None, help="with --category: check predictions against the catalog "
                        "and show titles for results that lack them")
    parser.add_argument("--category", default=None)
    parser.add_argument("--dataset", default=None, help="data set named in the chart title (default: the category "
                        "recorded in metrics.json beside the first results file)")
    parser.add_argument("--split", default=None, help="split named in the chart title (default: from that metrics.json)")
    return parser


def _recorded(path: str) -> dict:
    """``metrics.json`` written by ``evaluate`` beside an ``eval_results.json`` ({} when absent or unreadable)."""
    try:
        recorded = json.loads((Path(path).parent / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def main(argv: Sequence[str]) -> None:
    """Entry point: ``python -m rec_lightning report ...``."""
    args = build_parser().parse_args(list(argv))
    from rec_lightning.evaluation.reporting import format_table

    _check_arguments(args)
    catalog = _load_catalog(args)
    summaries = _summarize_runs(args, catalog)
    title_of_sid = (lambda sid: catalog.title_of(catalog.items_with_sid(sid)[0]) if catalog.has_sid(sid) else "") \
        if catalog is not None else None

    print(format_table(summaries))
    paired, comparisons_by_run = _paired_comparisons(summaries, args.seed)
    cases = _print_disagreements(summaries, comparisons_by_run, args, title_of_sid)
    if not comparisons_by_run:  # one run (or nothing paired): seeded correct and incorrect cases
        _print_cases(summaries, args, title_of_sid)
    _write_report(args, catalog, summaries, paired, comparisons_by_run, cases)


def _check_arguments(args: Namespace) -> None:
    if args.names is not None and len(args.names) != len(args.results):
        raise SystemExit(f"--names has {len(args.names)} names for {len(args.results)} result files")
    if args.cases < 0 or args.case_k < 1:
        raise SystemExit(f"--cases must be >= 0 and --case_k >= 1, got {args.cases} and {args.case_k}")


def _load_catalog(args: Namespace):
    """The ``--data_dir`` catalog (titles, valid SIDs), or None."""
    if args.data_dir is None:
        return None
    from rec_lightning.files.layout import available_categories
    from rec_lightning.sids.codec import ItemCatalog

    categories = [args.category] if args.category else available_categories(args.data_dir)
    if len(categories) != 1:
        raise SystemExit(f"--data_dir {args.data_dir} holds categories {categories}; pick one with --category")
    return ItemCatalog.from_data_dir(args.data_dir, categories[0])


def _summarize_runs(args: Namespace, catalog) -> list:
    from rec_lightning.evaluation.reporting import load_records, summarize

    names = args.names or _default_names(args.results)
    is_valid = catalog.has_sid if catalog is not None else None
    try:
        return [summarize(name, load_records(path), is_valid=is_valid) for name, path in zip(names, args.results)]
    except ValueError as err:
        raise SystemExit(str(err)) from None


def _paired_comparisons(summaries: list, seed: int) -> tuple[dict, dict]:
    """Each later run vs the first (printed): ``(run -> comparisons as dicts, run -> comparisons)``."""
    from rec_lightning.evaluation.reporting import format_paired, paired_comparison

    paired, comparisons_by_run = {}, {}
    for summary in summaries[1:]:
        try:
            comparisons = paired_comparison(summaries[0], summary, seed=seed)
        except ValueError as err:
            print(f"\nno paired comparison of {summary.name} with {summaries[0].name}: {err}")
            continue
        comparisons_by_run[summary.name] = comparisons
        paired[summary.name] = [dataclasses.asdict(c) for c in comparisons]
        print("\n" + format_paired(summaries[0], summary, comparisons))
    return paired, comparisons_by_run


def _print_disagreements(summaries: list, comparisons_by_run: dict, args: Namespace, title_of_sid) -> dict:
    """Rows one paired run hits at k and the first misses (and the reverse), printed; returns them by run."""
    from rec_lightning.evaluation.reporting import describe_disagreement, disagreeing_rows

    base, cases = summaries[0], {}
    for summary in summaries[1:]:
        if summary.name not in comparisons_by_run:
            continue
        k = min(args.case_k, int(base.metrics["num_beams"]), int(summary.metrics["num_beams"]))
        b_only, a_only = disagreeing_rows(base, summary, k)
        cases[summary.name] = {"k": k, f"{summary.name}_hit_{base.name}_missed": [base.records[i].get("row", i)
                                                                                 for i in b_only],
                               f"{base.name}_hit_{summary.name}_missed": [base.records[i].get("row", i) for i in a_only]}
        for label, positions in ((f"{summary.name} hit@{k}, {base.name} missed", b_only),
                                 (f"{base.name} hit@{k}, {summary.name} missed", a_only)):
            print(f"\n{label}: {len(positions)} rows; the first {min(args.cases, len(positions))}:")
            for position in positions[: args.cases]:
                print(describe_disagreement(base, summary, position, title_of_sid))
    return cases


def _print_cases(summaries: list, args: Namespace, title_of_sid) -> None:
    from rec_lightning.evaluation.reporting import describe_case, pick_cases

    for summary in summaries:
        hits, misses = pick_cases(summary, args.cases, args.seed)
        for label, rows in (("correct", hits), ("incorrect", misses)):
            print(f"\n{summary.name}: {len(rows)} {label} cases")
            for row in rows:
                print(describe_case(summary, row, title_of_sid))


def _write_report(args: Namespace, catalog, summaries: list, paired: dict, comparisons_by_run: dict,
                  cases: dict) -> None:
    """``report.json``, ``report.md``, ``report.csv`` and ``report.png`` into ``--output``, each atomically."""
    from rec_lightning.evaluation.report_chart import chart_title, plot_report
    from rec_lightning.evaluation.reporting import paper_table
    from rec_lightning.files.atomic import write_json_atomic, write_text_atomic

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    base = summaries[0]
    recorded = _recorded(args.results[0])
    dataset = args.dataset or recorded.get("category") or (args.category if catalog is not None else None)
    split = args.split or recorded.get("split")
    title = chart_title(dataset, split, len(base.records), int(base.metrics["num_beams"]))
    report = {"title": title,
              "runs": [{"name": s.name, "file": str(Path(p).resolve()), "metrics": s.metrics}
                       for s, p in zip(summaries, args.results)],
              "paired_vs_first": paired, "cases_vs_first": cases}
    json_path = write_json_atomic(output / "report.json", report)
    markdown = f"{title}\n\n" + paper_table(summaries)
    for name, comparisons in comparisons_by_run.items():
        markdown += (f"\n{name} vs {base.name}, paired bootstrap 95% intervals and sign-flip p-values:\n\n"
                     "| Metric | Difference | 95% interval | p |\n|:---|---:|---:|---:|\n")
        markdown += "".join(f"| {c.metric.upper()} | {c.difference:+.4f} | [{c.ci_low:+.4f}, {c.ci_high:+.4f}] | "
                            f"{c.p_value:.4f} |\n" for c in comparisons)
    md_path = write_text_atomic(output / "report.md", markdown)
    csv_path = write_text_atomic(output / "report.csv", paper_table(summaries, markdown=False))
    png_path = plot_report(summaries, output / "report.png", title, comparisons_by_run)
    print(f"\n{paper_table(summaries)}\nwrote {json_path}, {md_path}, {csv_path} and {png_path}")


def _default_names(paths: Sequence[str]) -> list[str]:
    names = [Path(p).resolve().parent.name or Path(p).stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{i + 1}:{name}" for i, name in enumerate(names)]
    return names

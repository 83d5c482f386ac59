"""Reading evaluation results back: metrics from ``eval_results.json`` records, tables and cases.

Works on our records and on MiniOneRec's (``{"input", "output", "predict"}`` only), reproducing its
calc.py: predictions are stripped of quotes, newlines and spaces; the rank is the first position of
the target SID in ``predict``; K runs over {1, 3, 5, 10, 20, 50} up to the list length.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rec_lightning.errors import ConfigurationError, CorruptFileError
from rec_lightning.evaluation.metrics import DEFAULT_KS, RankingMetrics, metric_ks
from rec_lightning.sids.codec import SIDFormatError, parse_sid


@dataclass
class RunSummary:
    """One results file: its records, each row's target rank (-1 = miss) and its metrics."""

    name: str
    records: list[dict[str, Any]]
    ranks: list[int]
    metrics: dict[str, float] = field(default_factory=dict)


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Read an ``eval_results.json`` (a JSON list of records with ``output`` and ``predict``).

    Raises:
        ValueError: naming the file and the first bad record, with the expected shape.
    """
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CorruptFileError(f"{path}: cannot read evaluation results ({err}). Fix: pass an eval_results.json "
                         "written by `python -m rec_lightning evaluate` (or MiniOneRec's evaluate.py)") from None
    if not isinstance(records, list) or not records:
        raise CorruptFileError(f"{path}: expected a non-empty JSON list of records, got {type(records).__name__}")
    for number, record in enumerate(records):
        if not (isinstance(record, dict) and isinstance(record.get("output"), str)
                and isinstance(record.get("predict"), list)):
            raise CorruptFileError(f"{path}, record {number}: expected an object with 'output' (a SID string) and "
                             f"'predict' (a list of SID strings), got {str(record)[:120]}")
    return records


def clean_prediction(text: str) -> str:
    """calc.py's cleaning of a prediction: strip quotes, newlines and surrounding spaces."""
    return text.strip().strip('"\n').strip()


def summarize(name: str, records: list[dict[str, Any]], ks: Sequence[int] = DEFAULT_KS,
              is_valid: Callable[[str], bool] | None = None) -> RunSummary:
    """Ranks and metrics of one run (HR@K, NDCG@K, MRR, mean rank of hits, invalid predictions).

    Args:
        is_valid: which predicted SIDs are valid items (e.g. ``catalog.has_sid``); default: well-formed SIDs.
    """
    is_valid = is_valid or _well_formed
    num_beams = max(len(r["predict"]) for r in records)
    ranks, invalid = [], []
    for record in records:
        target = record["output"].strip(' \n"')
        predicted = [clean_prediction(p) for p in record["predict"]]
        ranks.append(predicted.index(target) if target in predicted else -1)
        invalid.append(sum(not is_valid(p) for p in predicted))
    metric = RankingMetrics(metric_ks(num_beams, ks))
    metric.update(torch.tensor(ranks), torch.tensor(invalid))
    metrics = {key: value.item() for key, value in metric.compute().items()}
    from rec_lightning.evaluation.significance import per_row_values

    for cutoff in sorted({k for k in (10, num_beams) if k <= num_beams}):  # MRR named by its cut-off
        metrics[f"mrr@{cutoff}"] = float(per_row_values(ranks, f"mrr@{cutoff}").mean())
    hits = [r for r in ranks if r >= 0]
    metrics["mean_hit_rank"] = (sum(hits) / len(hits) + 1) if hits else float("nan")  # 1 = top of the list
    metrics["num_beams"] = num_beams
    return RunSummary(name, records, ranks, metrics)


def _well_formed(sid: str) -> bool:
    try:
        parse_sid(sid)
    except SIDFormatError:
        return False
    return True


def metric_names(summaries: Sequence[RunSummary]) -> list[str]:
    """Metric columns shared by every run, in table order (HR@K, NDCG@K, MRR, then counts)."""
    shared = [name for name in summaries[0].metrics if all(name in s.metrics for s in summaries[1:])]
    mrr = sorted((n for n in shared if n.startswith("mrr@")), key=lambda n: int(n[4:])) or [
        n for n in ("mrr",) if n in shared]  # "mrr" (whole list) only where no named cut-off exists
    return [n for n in shared if n.startswith("hr@")] + [n for n in shared if n.startswith("ndcg@")] + mrr + [
        n for n in ("mean_hit_rank", "invalid", "count") if n in shared]


def format_table(summaries: Sequence[RunSummary]) -> str:
    """Runs as columns, metrics as rows; with two or more runs, each later run's change vs the first."""
    names = metric_names(summaries)
    header = f"{'metric':<16}" + "".join(f"{s.name[:18]:>20}" for s in summaries)
    if len(summaries) > 1:
        header += "".join(f"{'vs ' + summaries[0].name[:14]:>20}" for _ in summaries[1:])
    lines = [header, "-" * len(header)]
    for name in names:
        values = [s.metrics[name] for s in summaries]
        cells = "".join(f"{_format_value(name, v):>20}" for v in values)
        if len(summaries) > 1 and name not in ("invalid", "count"):
            cells += "".join(f"{relative_change(values[0], v):>20}" for v in values[1:])
        lines.append(f"{name:<16}{cells}")
    return "\n".join(lines)


def _format_value(name: str, value: float) -> str:
    return f"{int(value)}" if name in ("invalid", "count") else f"{value:.4f}"


def relative_change(baseline: float, value: float) -> str:
    """``+12.3%`` style change of ``value`` against ``baseline`` (``n/a`` when the baseline is 0)."""
    if baseline != baseline or value != value or baseline == 0:
        return "n/a"
    return f"{100.0 * (value - baseline) / abs(baseline):+.1f}%"


def pick_cases(summary: RunSummary, num_cases: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded samples of ``num_cases`` hit rows and ``num_cases`` missed rows (record positions)."""
    rng = random.Random(seed)
    hits = [i for i, rank in enumerate(summary.ranks) if rank >= 0]
    misses = [i for i, rank in enumerate(summary.ranks) if rank < 0]
    return (sorted(rng.sample(hits, min(num_cases, len(hits)))),
            sorted(rng.sample(misses, min(num_cases, len(misses)))))


def describe_case(summary: RunSummary, position: int, title_of_sid: Callable[[str], str] | None = None,
                  top: int = 3) -> str:
    """A few lines on one row: the target (title, SID), where it ranked, and the top predictions."""
    record, rank = summary.records[position], summary.ranks[position]
    titles = record.get("predict_titles") or []

    def title(sid: str, index: int | None = None) -> str:
        if index is not None and index < len(titles):
            return titles[index]
        return title_of_sid(sid) if title_of_sid else ""

    def quoted(text: str) -> str:
        return f' "{text}"' if text else ""

    target = record["output"].strip(' \n"')
    where = f"found at rank {rank + 1}" if rank >= 0 else "not in the list"
    lines = [f"  row {record.get('row', position)}: target {target}{quoted(record.get('target_title') or title(target))}"
             f" {where}"]
    for index, sid in enumerate(record["predict"][:top]):
        lines.append(f"    {index + 1}. {clean_prediction(sid)}{quoted(title(clean_prediction(sid), index))}")
    return "\n".join(lines)


PAIRED_METRICS = ("hr@1", "hr@3", "hr@5", "hr@10", "ndcg@3", "ndcg@5", "ndcg@10", "mrr@10", "mrr")  # "mrr": mrr@<list length>


def paired_comparison(first: RunSummary, second: RunSummary, metrics: Sequence[str] = PAIRED_METRICS,
                      num_samples: int = 10_000, seed: int = 0) -> list:
    """Paired bootstrap 95% intervals (and sign-flip p-values) of ``second - first`` per metric.

    Rows are matched by their ``row`` field (by position for records without one); both runs must hold
    the same rows with the same targets.

    Raises:
        ValueError: the runs do not cover the same rows and targets, naming the first difference.
    """
    from rec_lightning.evaluation.significance import compare_ranks

    def keyed(summary: RunSummary) -> dict:
        return {record.get("row", position): (record["output"].strip(' \n"'), rank)
                for position, (record, rank) in enumerate(zip(summary.records, summary.ranks))}

    a, b = keyed(first), keyed(second)
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))[:3]
        raise ConfigurationError(f"{first.name} and {second.name} cover different rows (e.g. {missing}): a paired comparison "
                         "needs both evaluated on the same split and rows (same --split, --limit and --seed)")
    rows = sorted(a)
    for row in rows:
        if a[row][0] != b[row][0]:
            raise ConfigurationError(f"row {row} has target {a[row][0]} in {first.name} but {b[row][0]} in {second.name}: "
                             "not the same data")
    num_beams = int(min(first.metrics.get("num_beams", 50), second.metrics.get("num_beams", 50)))
    named = [f"mrr@{num_beams}" if m == "mrr" else m for m in metrics]
    usable = list(dict.fromkeys(m for m in named if int(m.split("@")[1]) <= num_beams))
    return compare_ranks([a[r][1] for r in rows], [b[r][1] for r in rows], usable, num_samples=num_samples, seed=seed)


def format_paired(first: RunSummary, second: RunSummary, comparisons: Sequence) -> str:
    """A table of each metric's difference with its interval and p-value."""
    lines = [f"{second.name} vs {first.name} on {comparisons[0].count} paired rows (bootstrap 95% intervals of "
             "each run and of the difference, paired sign-flip p-value):",
             f"{'metric':<10}{first.name[:10]:>10}{'95% interval':>18}{second.name[:10]:>10}{'95% interval':>18}"
             f"{'difference':>12}{'relative':>10}{'95% interval':>20}{'p':>8}"]
    for c in comparisons:
        relative = f"{100 * c.relative:+.1f}%" if c.relative == c.relative else "n/a"
        lines.append(f"{c.metric:<10}{c.mean_a:>10.4f}{f'[{c.ci_a_low:.4f}, {c.ci_a_high:.4f}]':>18}"
                     f"{c.mean_b:>10.4f}{f'[{c.ci_b_low:.4f}, {c.ci_b_high:.4f}]':>18}{c.difference:>+12.4f}"
                     f"{relative:>10}{f'[{c.ci_low:+.4f}, {c.ci_high:+.4f}]':>20}{c.p_value:>8.4f}")
    return "\n".join(lines)


def disagreeing_rows(first: RunSummary, second: RunSummary, k: int = 10) -> tuple[list[int], list[int]]:
    """Positions (in ``first``'s record order) where ``second`` hit within the top ``k`` and ``first`` missed,
    and the reverse. Rows are matched by their ``row`` field (by position without one), as in
    :func:`paired_comparison`; rows missing from ``second`` are skipped."""
    position_b = {record.get("row", i): i for i, record in enumerate(second.records)}
    b_only, a_only = [], []
    for position, record in enumerate(first.records):
        other = position_b.get(record.get("row", position))
        if other is None:
            continue
        hit_a = 0 <= first.ranks[position] < k
        hit_b = 0 <= second.ranks[other] < k
        if hit_b and not hit_a:
            b_only.append(position)
        elif hit_a and not hit_b:
            a_only.append(position)
    return b_only, a_only


def describe_disagreement(first: RunSummary, second: RunSummary, position: int,
                          title_of_sid: Callable[[str], str] | None = None, top: int = 3) -> str:
    """One row as both runs saw it: the target with its title, then each run's rank and top predictions."""
    row = first.records[position].get("row", position)
    other = next(i for i, r in enumerate(second.records) if r.get("row", i) == row)
    head, *first_lines = describe_case(first, position, title_of_sid, top).splitlines()
    _, *second_lines = describe_case(second, other, title_of_sid, top).splitlines()
    where = f" found at rank {first.ranks[position] + 1}" if first.ranks[position] >= 0 else " not in the list"
    lines = [head[: -len(where)]]  # the target line without first's rank
    for summary, index, predictions in ((first, position, first_lines), (second, other, second_lines)):
        rank = summary.ranks[index]
        lines.append(f"    {summary.name}: " + (f"found at rank {rank + 1}" if rank >= 0 else "not in the list"))
        lines.extend("  " + line for line in predictions)
    return "\n".join(lines)


PAPER_METRICS = ("hr@3", "hr@5", "hr@10", "ndcg@3", "ndcg@5", "ndcg@10")


def paper_table(summaries: Sequence[RunSummary], markdown: bool = True) -> str:
    """Runs as rows, HR@3/5/10 and NDCG@3/5/10 as columns (MiniOneRec's paper layout), 4 decimals.

    ``markdown=False`` gives CSV (``method,HR@3,...``); metrics a run lacks are left empty.
    """
    header = ["Method"] + [name.upper() for name in PAPER_METRICS]
    rows = [[s.name] + [f"{s.metrics[m]:.4f}" if m in s.metrics else "" for m in PAPER_METRICS] for s in summaries]
    if not markdown:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue()
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * len(PAPER_METRICS)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"

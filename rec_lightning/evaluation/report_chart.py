"""The ``report`` PNG: HR@K and NDCG@K against K, MRR per run, and the paired differences with their intervals.

Plain matplotlib (Agg backend), written atomically. The title names the data set, split, number of
rows and beam width, so a chart pasted on its own still says what it measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from rec_lightning.evaluation.reporting import RunSummary, metric_names
from rec_lightning.files.atomic import write_atomic


def chart_title(dataset: str | None, split: str | None, rows: int, num_beams: int) -> str:
    """``"Industrial_and_Scientific, test split: 4533 rows, beam width 50"`` (unknown parts left out)."""
    where = ", ".join(part for part in (dataset, f"{split} split" if split else None) if part)
    return f"{where + ': ' if where else ''}{rows} rows, beam width {num_beams}"


def plot_report(summaries: Sequence[RunSummary], path: str | Path, title: str,
                paired: Mapping[str, Sequence] | None = None) -> Path:
    """Write the chart: HR@K, NDCG@K (log K axis), MRR bars, and (with ``paired``) each later run's
    difference from the first per metric, with its bootstrap 95% interval as an error bar.

    Args:
        paired: run name -> its :class:`~rec_lightning.evaluation.significance.PairedComparison` list vs the first run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    names = metric_names(summaries)
    paired = {name: comparisons for name, comparisons in (paired or {}).items() if comparisons}
    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    for axis, prefix, label in ((axes[0, 0], "hr@", "HR@K"), (axes[0, 1], "ndcg@", "NDCG@K")):
        ks = [int(name[len(prefix):]) for name in names if name.startswith(prefix)]
        for summary in summaries:
            axis.plot(ks, [summary.metrics[f"{prefix}{k}"] for k in ks], marker="o", label=summary.name)
        axis.set_xscale("log")
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.minorticks_off()
        axis.set_xlabel("cut-off K")
        axis.set_ylabel(label)
        axis.set_title(f"{label} by cut-off")
        axis.grid(alpha=0.3)
        axis.legend()

    mrr_names = [name for name in names if name.startswith("mrr")]
    axis = axes[1, 0]
    width = 0.8 / max(len(summaries), 1)
    for number, summary in enumerate(summaries):
        positions = [i + (number - (len(summaries) - 1) / 2) * width for i in range(len(mrr_names))]
        bars = axis.bar(positions, [summary.metrics[n] for n in mrr_names], width=width, label=summary.name)
        axis.bar_label(bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(range(len(mrr_names)), [n.upper() for n in mrr_names])
    axis.set_xlabel("metric (cut-off)")
    axis.set_ylabel("MRR")
    axis.set_title("MRR")
    axis.grid(alpha=0.3, axis="y")
    axis.legend()

    axis = axes[1, 1]
    if paired:
        base = summaries[0].name
        offset = 0.8 / len(paired)
        for number, (name, comparisons) in enumerate(paired.items()):
            y = [i + (number - (len(paired) - 1) / 2) * offset for i in range(len(comparisons))]
            x = [c.difference for c in comparisons]
            errors = [[c.difference - c.ci_low for c in comparisons], [c.ci_high - c.difference for c in comparisons]]
            axis.errorbar(x, y, xerr=errors, fmt="o", capsize=4, label=f"{name} - {base}")
        labels = [c.metric.upper() for c in next(iter(paired.values()))]
        axis.set_yticks(range(len(labels)), labels)
        axis.invert_yaxis()
        axis.axvline(0.0, color="black", linewidth=1)
        axis.set_xlabel(f"difference vs {base} (paired bootstrap 95% interval)")
        axis.set_ylabel("metric")
        axis.set_title("Paired difference")
        axis.grid(alpha=0.3, axis="x")
        axis.legend()
    else:
        axis.axis("off")
        axis.text(0.5, 0.5, "no paired comparison\n(one run, or runs on different rows)", ha="center", va="center")
    figure.suptitle(title)
    figure.tight_layout()
    try:
        write_atomic(path, lambda staging: figure.savefig(staging, dpi=110))
    finally:
        plt.close(figure)
    return path

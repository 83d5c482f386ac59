"""``prepare``'s steps in order, with the counts after each one, ending in ``prepare_report.json``.

1. Metadata pass 1: which raw item keys have a usable title (the first record of a key wins).
2. Reviews, streamed: minimum rating (off by default), time window (off by default), item has usable
   metadata; drops counted by reason.
3. Iterative user/item k-core (5/5 by default, as MiniOneRec).
4. Sequences, sliding windows (history <= 10), split (chronological 8:1:1 by default).
5. Metadata pass 2: the cleaned fields of the kept items only.
6. The data folder (positional SIDs), written atomically, and the report.

Deviations from MiniOneRec's script, on purpose: month boundaries are UTC (the original used the
machine's local time zone, so results depended on where it ran), and the window is never widened
behind the user's back (the original decremented the start year while fewer than 3000 items
remained); an empty result is an error that names the step that emptied it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np

from rec_lightning.data.raw import formats
from rec_lightning.data.raw.interactions import Interactions, collect, k_core
from rec_lightning.data.raw.metadata import ItemMeta, item_meta, title_problem
from rec_lightning.data.raw.sequences import Sequences, Windows, build_sequences, sliding_windows, split_windows
from rec_lightning.data.raw.writer import StagedOutput, check_output_free, positional_sids, write_catalog, write_split_csv
from rec_lightning.errors import ConfigurationError, DataValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")
REPORT_NAME = "prepare_report.json"


@dataclass
class PrepareOptions:
    """Every choice of the procedure; the defaults are MiniOneRec's."""

    user_k: int = 5
    """Keep users with at least this many interactions (iterated with item_k until stable)."""
    item_k: int = 5
    """Keep items with at least this many interactions."""
    start_month: str | None = None
    """First month kept, YYYY-MM (UTC); None: no lower bound."""
    end_month: str | None = None
    """Last month kept, YYYY-MM, inclusive (UTC); None: no upper bound."""
    min_rating: float | None = None
    """Keep reviews rated at least this; None keeps all (MiniOneRec keeps all)."""
    max_history: int = 10
    """History items per window."""
    split: str = "chronological"
    """``chronological`` (global 8:1:1 by target time) or ``leave-last-out`` (per user)."""
    split_ratio: tuple[int, int, int] = (8, 1, 1)
    """train:valid:test parts of the chronological split."""
    max_title_words: int | None = 20
    """Items whose cleaned title has more words are dropped (MiniOneRec: 20); None keeps any length."""


def month_start(month: str, option: str, offset: int = 0) -> int:
    """Unix seconds of 00:00 UTC on the first day of ``YYYY-MM`` (+ ``offset`` months)."""
    try:
        year, number = (int(part) for part in month.split("-"))
        if not 1 <= number <= 12:
            raise ValueError
    except ValueError:
        raise ConfigurationError(f"--{option} must be YYYY-MM, got {month!r}") from None
    year, number = year + (number - 1 + offset) // 12, (number - 1 + offset) % 12 + 1
    return int(datetime(year, number, 1, tzinfo=timezone.utc).timestamp())


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Progress:
    """A tqdm bar over the bytes of the file being streamed (quiet when disabled)."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled, self.label, self.bar, self.source = enabled, label, None, None

    def on_open(self, size: int, source: formats.ByteProgress) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar, self.source = tqdm(total=size, unit="B", unit_scale=True, desc=self.label), source

    def wrap(self, iterable: Iterator[T]) -> Iterator[T]:
        for count, value in enumerate(iterable, start=1):
            if self.bar is not None and count % 20000 == 0:
                self.bar.update(self.source.position - self.bar.n)
            yield value
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()


def usable_item_keys(meta_path: Path, fmt: str, options: PrepareOptions, progress: bool) -> tuple[set[str], dict]:
    """Metadata pass 1: the item keys whose first record has a usable title, and the counts."""
    usable: set[str] = set()
    seen: set[str] = set()
    counts: dict = {"records": 0, "duplicate records (first kept)": 0, "unusable": {}}
    bar = _Progress(progress, "metadata")
    for _, key, record in bar.wrap(formats.iter_meta(meta_path, fmt, bar.on_open)):
        counts["records"] += 1
        if key in seen:
            counts["duplicate records (first kept)"] += 1
            continue
        seen.add(key)
        problem = title_problem(item_meta(fmt, key, record).title, options.max_title_words)
        if problem is None:
            usable.add(key)
        else:
            counts["unusable"][problem] = counts["unusable"].get(problem, 0) + 1
    counts["items with usable metadata"] = len(usable)
    return usable, counts


def kept_item_meta(meta_path: Path, fmt: str, item_keys: list[str]) -> list[ItemMeta]:
    """Metadata pass 2: the cleaned metadata of ``item_keys``, in their order (first record of a key)."""
    wanted = {key: i for i, key in enumerate(item_keys)}
    found: list[ItemMeta | None] = [None] * len(item_keys)
    for _, key, record in formats.iter_meta(meta_path, fmt):
        position = wanted.get(key)
        if position is not None and found[position] is None:
            found[position] = item_meta(fmt, key, record)
    missing = [item_keys[i] for i, m in enumerate(found) if m is None]
    if missing:  # pass 1 saw them, so the file changed between the passes
        raise DataValidationError(meta_path, [f"{len(missing)} kept items vanished from the file, e.g. {missing[:3]}"],
                                  fix="do not modify the input files while prepare runs")
    return found  # type: ignore[return-value]


def _empty_error(reviews: Path, step: str, steps: list[dict], fix: str) -> DataValidationError:
    trail = "; ".join(f"{s['step']}: {s['interactions']} interactions" for s in steps)
    return DataValidationError(reviews, [f"no interactions are left after {step} ({trail})"], fix=fix)


def _split_stats(seq: Sequences, windows: Windows, rows: np.ndarray, max_history: int) -> dict:
    lengths = windows.history_lengths()[rows]
    histogram = np.bincount(lengths, minlength=max_history + 1)[1:]
    times = seq.times[windows.target[rows]]
    return {"rows": int(rows.size), "users": int(np.unique(windows.user[rows]).size),
            "history_length_histogram": {str(n): int(c) for n, c in enumerate(histogram.tolist(), start=1)},
            "target_time_range": [_iso(times.min()), _iso(times.max())] if rows.size else None}


def prepare_dataset(reviews: str | Path, meta: str | Path, fmt: str, category: str, output: str | Path,
                    options: PrepareOptions = PrepareOptions(), progress: bool = False,
                    before_commit: Callable[[Path], object] | None = None) -> tuple[dict, dict]:
    """Run every step and write ``output`` (see the module docstring).

    Args:
        before_commit: called with the complete staging folder before it becomes ``output`` (e.g. to
            build semantic IDs in it); what it returns replaces the report's ``sids`` entry.

    Returns:
        ``(report, seconds_per_step)``; the report is also ``output/prepare_report.json``.

    Raises:
        DataValidationError: bad input (file and line named), an empty step, or an existing output.
        ValueError: an invalid option.
    """
    _check_options(fmt, options)
    reviews, meta, output = Path(reviews), Path(meta), Path(output)
    check_output_free(output)
    start = month_start(options.start_month, "start_month") if options.start_month else None
    end = month_start(options.end_month, "end_month", offset=1) if options.end_month else None
    timer = _StepTimer()

    usable, meta_counts = usable_item_keys(meta, fmt, options, progress)
    log.info("metadata: %d records, %d items with a usable title", meta_counts["records"], len(usable))
    timer.lap("metadata pass 1")
    bar = _Progress(progress, "reviews")
    data = collect(bar.wrap(formats.iter_reviews(reviews, fmt, bar.on_open)), start, end, options.min_rating, usable)
    timer.lap("read and filter reviews")
    steps = _filter_steps(reviews, data)
    core = k_core(data, options.user_k, options.item_k)
    timer.lap("k-core")
    _record_core_step(reviews, core, options, steps)
    seq = build_sequences(core.interactions)
    windows = sliding_windows(seq, options.max_history)
    splits = split_windows(seq, windows, options.split, options.split_ratio)
    timer.lap("sequences, windows, split")
    _check_splits(reviews, splits, options, len(windows))
    metas = kept_item_meta(meta, fmt, seq.item_keys)
    timer.lap("metadata pass 2")
    sids = positional_sids(len(metas))
    report = _report(category, fmt, reviews, meta, options, start, end, meta_counts, steps, core.rounds, seq, windows,
                     splits, len(metas))
    _write_staged(output, category, seq, windows, splits, metas, sids, report, before_commit, timer)
    return report, timer.seconds


class _StepTimer:
    """Seconds per named step: each ``lap(name)`` records the time since the previous lap (or the start)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._clock = round(now - self._clock, 3), now


def _check_options(fmt: str, options: PrepareOptions) -> None:
    if fmt not in formats.FORMATS:
        raise ConfigurationError(f"unknown --format {fmt!r}; expected one of {formats.FORMATS}")
    if options.split not in ("chronological", "leave-last-out"):
        raise ConfigurationError(f"--split must be chronological or leave-last-out, got {options.split!r}")


def _filter_steps(reviews: Path, data: Interactions) -> list[dict]:
    """The interaction count after reading and after each drop reason (logged); raises if none is left."""
    steps, remaining = [{"step": "read", "interactions": data.num_read}], data.num_read
    for reason, count in data.dropped.items():
        remaining -= count
        steps.append({"step": f"drop {reason}", "interactions": remaining})
    steps[-1].update(data.counts())
    for s in steps:
        log.info("%-40s %d interactions", s["step"], s["interactions"])
    if not len(data):
        raise _empty_error(reviews, "the filters", steps, "widen --start_month/--end_month, lower --min_rating, or check "
                           "that --meta describes the items of --reviews (same --format)")
    return steps


def _record_core_step(reviews: Path, core, options: PrepareOptions, steps: list[dict]) -> None:
    """Append (and log) the k-core's counts to ``steps``; raises if it left nothing."""
    steps.append({"step": f"{options.user_k}/{options.item_k}-core ({len(core.rounds)} rounds)", **core.interactions.counts()})
    log.info("%-40s %d interactions, %d users, %d items", steps[-1]["step"], steps[-1]["interactions"],
             steps[-1]["users"], steps[-1]["items"])
    if not len(core.interactions):
        raise _empty_error(reviews, f"the {options.user_k}/{options.item_k}-core", steps,
                           "fewer than k interactions per user/item remain in this window: widen the window or lower "
                           "--user_k/--item_k")


def _check_splits(reviews: Path, splits: dict[str, np.ndarray], options: PrepareOptions, num_windows: int) -> None:
    empty = [name for name, rows in splits.items() if rows.size == 0]
    if empty:
        raise DataValidationError(reviews, [f"the {options.split} split leaves {empty} empty ({num_windows} windows)"],
                                  fix="use more data (wider window, lower k) or another --split")


def _report(category: str, fmt: str, reviews: Path, meta: Path, options: PrepareOptions, start, end, meta_counts: dict,
            steps: list[dict], k_core_rounds, seq: Sequences, windows: Windows, splits: dict[str, np.ndarray],
            num_items: int) -> dict:
    """The content of ``prepare_report.json`` (``sids``: positional until a ``before_commit`` hook replaces it)."""
    num_users, num_inter = seq.num_users, int(seq.items.size)
    pairs = np.unique(np.stack([np.repeat(np.arange(num_users), np.diff(seq.offsets)), seq.items]), axis=1).shape[1]
    return {
        "category": category, "format": fmt,
        "inputs": {"reviews": {"path": str(reviews), "bytes": reviews.stat().st_size},
                   "meta": {"path": str(meta), "bytes": meta.stat().st_size}},
        "options": {**asdict(options), "split_ratio": list(options.split_ratio)},
        "time_window_utc": [_iso(start) if start is not None else None, _iso(end) if end is not None else None],
        "metadata": meta_counts, "steps": steps, "k_core_rounds": k_core_rounds,
        "final": {"users": num_users, "items": num_items, "interactions": num_inter,
                  "repeat_interactions": num_inter - int(pairs),
                  "sparsity": round(1.0 - num_inter / (num_users * num_items), 6),
                  "time_range": [_iso(seq.times.min()), _iso(seq.times.max())], "windows": len(windows)},
        "splits": {name: _split_stats(seq, windows, rows, options.max_history) for name, rows in splits.items()},
        "sids": "positional (item id digits, no meaning); replace with embed-items + build-sids --rewrite_data",
    }


def _write_staged(output: Path, category: str, seq: Sequences, windows: Windows, splits: dict[str, np.ndarray],
                  metas: list[ItemMeta], sids: list[str], report: dict, before_commit: Callable[[Path], object] | None,
                  timer: _StepTimer) -> None:
    """Write the split CSVs, catalog and report into a staging folder (hook run inside), then commit it as ``output``."""
    staged = StagedOutput(output)
    try:
        titles = [m.title for m in metas]
        for name, rows in splits.items():
            write_split_csv(staged.path(f"{name}/{category}.csv"), seq, windows, rows, titles, sids)
        write_catalog(staged, category, metas, sids)
        if before_commit is not None:
            timer.lap("write")
            report["sids"] = before_commit(staged.root)
            timer.lap("build SIDs")
        staged.write_text(REPORT_NAME, json.dumps(report, indent=2) + "\n")
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    timer.lap("write" if before_commit is None else "write report")


def format_summary(report: dict) -> str:
    """The printed summary: counts after each step, then the splits."""
    lines = [f"{report['category']} ({report['format']}):"]
    for s in report["steps"]:
        extra = f", {s['users']} users, {s['items']} items" if "users" in s else ""
        lines.append(f"  {s['step']:<44}{s['interactions']:>10} interactions{extra}")
    final = report["final"]
    lines.append(f"  final: {final['users']} users, {final['items']} items, {final['interactions']} interactions, "
                 f"sparsity {final['sparsity']:.4f}, {final['windows']} windows")
    for name, s in report["splits"].items():
        lines.append(f"  {name:<6}{s['rows']:>9} rows, {s['users']} users, history lengths {list(s['history_length_histogram'].values())}")
    return "\n".join(lines)

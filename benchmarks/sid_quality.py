"""SID quality: the same from-scratch recipe trained on each SID set, compared on validation (issue 28, item 3).

    python benchmarks/sid_quality.py --sids shipped rq-kmeans-balanced [rq-kmeans-plus ...] --seeds 0 1 \\
        [--budget_minutes 8] [--num_beams 20] [--data_dir ../shared/data/Amazon] [--work_dir outputs/sid_quality] \\
        [--results benchmarks/sid_quality_results.md] [--third_seed_if_crossing] [--threads N] [--dry_run]
    python benchmarks/sid_quality.py --smoke [--work_dir DIR]      # the whole pipeline on a tiny data set, seconds

A comparison protocol that fits a working day (2 sets x 2 seeds x ~10 min = 40 min; 5 sets = about 2 hours):

1. **SIDs.** ``shipped`` is the data folder as it is. Any other name is a ``build-sids --method`` (or a folder that
   already holds a MiniOneRec-layout SID set, used as it is). Each method is built once, on the MiniLM item
   embeddings that ``benchmarks/sid_construction.py`` caches (``outputs/sid_bench/<Category>.minilm.npy``; made with
   ``embed-items`` if missing), 3 levels x 256 codes, ``reassign``, seed 0, ``--rewrite_data``, into
   ``<work_dir>/sids/<method>/``; a folder that already holds ``sid_report.json`` (written last) is reused.
2. **Runs.** Every (SID set, seed) is one ``fit`` process with ``configs/industrial_cpu.yaml`` (the compact
   from-scratch recipe) and only these overrides: ``--trainer.max_time`` = the budget (which also sizes the
   cosine LR schedule: it reaches its floor when the time is up), the seed S three times (``--seed_everything``:
   dropout and the rest; ``--model.init_args.backbone.init_seed``: the from-scratch weights, which would
   otherwise be the same for every seed; ``--data.seed``: the data order), ``--data.data_dir <SID folder>`` and the run folder. It runs
   under ``timeout`` (budget + ``--timeout_margin_minutes``, for start-up and export). Then one ``evaluate`` of its
   ``final_checkpoint`` (the checkpoint the recipe selects on validation NDCG@10 over 1,000 seeded valid rows) on
   the **full valid split** at ``--num_beams`` (20). Runs go seed by seed (every set's seed 0, then seed 1), so
   a first comparison exists early. A run whose ``eval/`` holds ``metrics.json`` and ``eval_results.json`` is
   skipped; one with a finished ``final_checkpoint`` is only evaluated; anything else starts again (the broken
   training folder is kept as ``train.partial``). Every command is printed before it runs, ready to paste.
3. **Table.** After each run the results file is rewritten: the summary (one row per SID set) and the runs
   (one row per run, in the order they finished). With ``--third_seed_if_crossing``, once the first seeds are
   done, each set whose interval vs shipped crosses zero (``--crossing_metric``) gets one more seed, and so does
   shipped (the paired comparison needs the same seeds on both sides). The table lists the sets named in the
   command: ``--report_only`` rewrites it from the finished runs of the sets named, running nothing.
4. **Variants** (recipe changes on the same protocol, issue 29): ``--variant LABEL SIDS 'FIT ARGS'`` trains SID
   set ``SIDS`` with the extra ``fit`` arguments (after the recipe, before the protocol's overrides) into
   ``runs/LABEL/``; it is compared with shipped like any SID set, e.g. ``--variant ls0.1 shipped
   '--model.init_args.loss.label_smoothing 0.1'``.

The paired bootstrap (``rec_lightning.evaluation.significance.paired_bootstrap``) pairs **validation rows**, not
SID strings: row ``i`` of the valid CSV is the same user and target item in every SID set (``build-sids
--rewrite_data`` only re-keys the SIDs), so rows are matched by the ``row`` field of ``eval_results.json`` and
checked to have the same ``target_item_id``. (``report`` cannot pair two SID sets: it requires the same target
SID string per row.) A row's HR@10 / NDCG@10 comes from the rank of its target SID in the beam list, as
``evaluate`` counts it. Pooling rule: on the seeds both sets have, each row's value is first averaged over the
seeds (per set), then the rows are resampled (10,000 times) to give the 95% interval of mean(set) - mean(shipped).

**Run it on an otherwise idle machine.** The budget is wall time, so anything else on the CPU takes steps from
the run (on the 2-core development machine, runs beside niced test jobs made 1,083-1,391 optimizer steps in 8
minutes, idle ones 2,224-2,449): the ``steps`` column of the runs table is the check, and runs whose steps are
far below their neighbours' are not comparable (move their ``runs/<set>/seed<S>`` folder aside and rerun).

``--smoke`` runs the same pipeline in seconds: a generated demo data set (30 users), random 16-d item embeddings
(or ``--embeddings FILE.npy``), SIDs of 3 x 8 codes, the recipe with a tiny model for 2 steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "industrial_cpu.yaml"
SHIPPED = "shipped"
METRICS = ("hr@10", "ndcg@10")
LEVELS = "abcdefgh"

HEADER = """\
# SID quality: the same from-scratch recipe on each SID set (issue 28, item 3)

Written by `benchmarks/sid_quality.py` (the how-to is its docstring); rewritten after every run. Each run: one
`fit` of `configs/industrial_cpu.yaml` (a Qwen2-shaped LM from scratch on compact SID prompts) for a fixed
wall-time budget, with only the seed, the data folder and the budget overridden (a *variant* adds its own fit
arguments, listed under the table's context line, to test a recipe change on the same protocol); then `evaluate` of the
checkpoint it selects on the **full valid split**. HR@10 / NDCG@10 count a hit when the target's SID is in the
beam list (as `evaluate` does; a SID shared by several items counts for each). "vs shipped" is the paired
bootstrap 95% interval of mean(set) - mean(shipped) over the validation rows (paired by CSV row, i.e. the same
user and target item, never by SID string), after averaging each row's value over the seeds both sets have.
Mean +/- s.e. is over seeds (s.e. = sample s.d. / sqrt(seeds)). Construction time is the quantisation time
reported by `build-sids` (the embedding time, shared by every method, is not included). Used codes and entropy
(bits) per level are of the written SIDs; collisions = (items - distinct SIDs) / items, the share of items that
would need a new SID, before and after collision handling (the shipped SIDs keep theirs).
"""


# ----------------------------------------------------------------------------- commands


@dataclass
class Settings:
    """Everything a command depends on (from the arguments, with the smoke mode's replacements)."""

    data_dir: Path
    category: str
    work_dir: Path
    embeddings: Path
    budget_seconds: int
    timeout_seconds: int
    num_beams: int
    levels: int
    codebook_size: int
    build_seed: int
    build_args: list[str]
    extra_fit_args: list[str]
    eval_batch_size: int
    threads: int | None
    variants: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    """label -> (SID set it trains on, extra ``fit`` arguments): a recipe change compared with shipped."""


def python_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rec_lightning", *args]


def max_time(seconds: int) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a number of seconds."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def embed_command(s: Settings) -> list[str]:
    return python_command("embed-items", "--data_dir", str(s.data_dir), "--category", s.category,
                          "--output", str(s.embeddings), "--progress", "false")


def build_command(s: Settings, method: str, output: Path) -> list[str]:
    return python_command("build-sids", "--embeddings", str(s.embeddings), "--output", str(output), "--method", method,
                          "--levels", str(s.levels), "--codebook_size", str(s.codebook_size), "--collision", "reassign",
                          "--data_dir", str(s.data_dir), "--category", s.category, "--rewrite_data", "true",
                          "--seed", str(s.build_seed), "--progress", "false", *s.build_args)


def fit_command(s: Settings, data_dir: Path, train_dir: Path, seed: int, variant_args: Sequence[str] = ()) -> list[str]:
    return ["timeout", "--kill-after=60", str(s.timeout_seconds),
            *python_command("fit", "--config", str(RECIPE), *s.extra_fit_args, *variant_args,
                            "--trainer.max_time", max_time(s.budget_seconds), "--seed_everything", str(seed),
                            "--model.init_args.backbone.init_seed", str(seed), "--data.seed", str(seed), "--data.data_dir", str(data_dir),
                            "--data.category", s.category, "--trainer.default_root_dir", str(train_dir),
                            "--trainer.logger.init_args.save_dir", str(train_dir))]


def evaluate_command(s: Settings, data_dir: Path, run_dir: Path) -> list[str]:
    return python_command("evaluate", "--checkpoint", str(run_dir / "train" / "final_checkpoint"), "--data_dir",
                          str(data_dir), "--category", s.category, "--split", "valid", "--num_beams", str(s.num_beams),
                          "--batch_size", str(s.eval_batch_size), "--output", str(run_dir / "eval"), "--overwrite")


def child_env(s: Settings) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if s.threads:
        env.update(OMP_NUM_THREADS=str(s.threads), MKL_NUM_THREADS=str(s.threads), RAYON_NUM_THREADS=str(s.threads))
    return env


def shown(command: Sequence[str], s: Settings) -> str:
    """The command as one shell line, with the environment it runs in (run from the repository root)."""
    env = ["HF_HUB_OFFLINE=1", "WANDB_MODE=offline", f"PYTHONPATH={REPO}"]
    if s.threads:
        env += [f"OMP_NUM_THREADS={s.threads}", f"MKL_NUM_THREADS={s.threads}"]
    return " ".join(env) + " " + shlex.join(command)


def execute(command: list[str], log: Path, s: Settings, dry_run: bool) -> tuple[int, float]:
    """Print ``command``, run it (output into ``log``) unless ``dry_run``; returns (exit code, wall seconds)."""
    print(f"$ {shown(command, s)}\n  (output: {log})", flush=True)
    if dry_run:
        return 0, 0.0
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        code = subprocess.run(command, cwd=REPO, env=child_env(s), stdout=stream, stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - start


# ----------------------------------------------------------------------------- SID sets


def is_finished_build(folder: Path) -> bool:
    """``build-sids`` writes ``sid_report.json`` last: its presence means the folder is complete."""
    return (folder / "sid_report.json").is_file()


def sid_folder(name: str, s: Settings) -> Path:
    if name in s.variants:
        return sid_folder(s.variants[name][0], s)
    if name == SHIPPED:
        return s.data_dir
    if Path(name).is_dir():
        return Path(name)
    return s.work_dir / "sids" / name


def set_label(name: str) -> str:
    return Path(name).name if name != SHIPPED and Path(name).is_dir() else name


def ensure_sids(name: str, s: Settings, dry_run: bool) -> Path | None:
    """The data folder of SID set ``name``, built if needed; None when the build failed."""
    if name in s.variants:
        return ensure_sids(s.variants[name][0], s, dry_run)
    folder = sid_folder(name, s)
    if name == SHIPPED or Path(name).is_dir() or is_finished_build(folder):
        print(f"SID set {set_label(name)}: {folder}" + ("" if name == SHIPPED or Path(name).is_dir() else " (built before)"))
        return folder
    if not s.embeddings.is_file():
        code, _ = execute(embed_command(s), s.work_dir / "logs" / "embed_items.log", s, dry_run)
        if code:
            raise SystemExit(f"embed-items failed (exit {code}); see {s.work_dir / 'logs' / 'embed_items.log'}")
    if folder.exists() and not dry_run:
        shutil.rmtree(folder)  # an unfinished build of ours (no sid_report.json)
    code, seconds = execute(build_command(s, name, folder), s.work_dir / "sids" / f"{name}.log", s, dry_run)
    if code:
        print(f"build-sids --method {name} failed (exit {code}); see {s.work_dir / 'sids' / f'{name}.log'}")
        return None
    if not dry_run:
        (s.work_dir / "sids" / f"{name}.build.json").write_text(json.dumps({"wall_seconds": round(seconds, 1)}) + "\n")
    return folder


def sid_summary(name: str, s: Settings) -> dict | None:
    """Construction seconds, collisions before/after, used codes and entropy per level; None if not built yet."""
    if name in s.variants:
        return sid_summary(s.variants[name][0], s)
    folder = sid_folder(name, s)
    if is_finished_build(folder):
        report = json.loads((folder / "sid_report.json").read_text())
        seconds = report.get("quantise_seconds")
    elif name == SHIPPED or Path(name).is_dir():
        if not (folder / "index" / f"{s.category}.index.json").is_file():
            return None
        if str(REPO / "benchmarks") not in sys.path:
            sys.path.insert(0, str(REPO / "benchmarks"))
        from sid_construction import shipped_codes  # the same statistics as benchmarks/sid_construction.py

        from rec_lightning.sids.collisions import sid_statistics

        codes = shipped_codes(folder, s.category)
        k = max(s.codebook_size, 1 + max(c for code in codes for c in code))
        report, seconds = sid_statistics(codes, codes, k), None  # written SIDs only: before = after
    else:
        return None
    return {"seconds": seconds, "collisions_before": report["collision_rate_before"],
            "collisions_after": report["collision_rate_after"],
            "used_codes": [level["used_codes"] for level in report["level_stats"]],
            "entropy_bits": [level["entropy_bits"] for level in report["level_stats"]]}


# ----------------------------------------------------------------------------- runs


def run_dir_of(s: Settings, name: str, seed: int) -> Path:
    return s.work_dir / "runs" / set_label(name) / f"seed{seed}"


def run_stage(run_dir: Path) -> str:
    """What a run still needs: ``done`` (evaluation written), ``evaluate`` (a finished final_checkpoint) or ``fit``.

    ``evaluate`` writes both files atomically and ``final_checkpoint/`` is staged and renamed into place, so
    their presence means the step finished.
    """
    if (run_dir / "eval" / "metrics.json").is_file() and (run_dir / "eval" / "eval_results.json").is_file():
        return "done"
    if (run_dir / "train" / "final_checkpoint" / "rec_lightning.json").is_file():
        return "evaluate"
    return "fit"


def do_run(name: str, seed: int, data_dir: Path, s: Settings, dry_run: bool) -> bool:
    """Fit then evaluate one (SID set, seed), skipping what is already done; False when a step failed."""
    run_dir = run_dir_of(s, name, seed)
    stage = run_stage(run_dir)
    label = f"{set_label(name)} seed {seed}"
    if stage == "done":
        print(f"[{label}] done before: {run_dir / 'eval'}")
        return True
    print(f"\n[{label}] {'fit + evaluate' if stage == 'fit' else 'evaluate (the fit finished before)'}", flush=True)
    if stage == "fit":
        train = run_dir / "train"
        if train.exists() and not dry_run:
            partial = run_dir / "train.partial"
            shutil.rmtree(partial, ignore_errors=True)
            train.rename(partial)
            print(f"  an unfinished training folder moved to {partial}")
        variant_args = s.variants[name][1] if name in s.variants else []
        code, seconds = execute(fit_command(s, data_dir, train, seed, variant_args), run_dir / "fit.log", s, dry_run)
        if not dry_run:
            (run_dir / "fit.json").write_text(json.dumps({"exit_code": code, "wall_seconds": round(seconds, 1),
                                                          "timed_out": code in (124, 137)}) + "\n")
        if code:
            print(f"[{label}] fit failed (exit {code}{', timed out' if code in (124, 137) else ''}); see {run_dir / 'fit.log'}")
            return False
    code, _ = execute(evaluate_command(s, data_dir, run_dir), run_dir / "eval.log", s, dry_run)
    if code:
        print(f"[{label}] evaluate failed (exit {code}); see {run_dir / 'eval.log'}")
        return False
    return True


def training_steps(train_dir: Path) -> tuple[int | None, int | None]:
    """(last logged optimizer step, step of the selected checkpoint) from the CSV log and the checkpoint name."""
    import csv

    last = None
    for metrics in sorted(train_dir.glob("logs/version_*/metrics.csv")):
        with metrics.open(newline="") as handle:
            steps = [int(row["step"]) for row in csv.DictReader(handle) if row.get("step")]
        last = max(steps + ([last] if last is not None else []), default=last)
    best = None
    for checkpoint in train_dir.glob("logs/version_*/checkpoints/epoch=*-step=*.ckpt"):
        best = int(checkpoint.stem.rsplit("step=", 1)[1].split("-")[0])
    return (None if last is None else last + 1), best


def collect_run(run_dir: Path) -> dict | None:
    """A finished run's row: metrics, steps, wall time, finish time; None if it is not evaluated."""
    if run_stage(run_dir) != "done":
        return None
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    fit = json.loads((run_dir / "fit.json").read_text()) if (run_dir / "fit.json").is_file() else {}
    steps, best = training_steps(run_dir / "train")
    return {"metrics": metrics, "fit_seconds": fit.get("wall_seconds"), "steps": steps, "best_step": best,
            "finished": (run_dir / "eval" / "metrics.json").stat().st_mtime}


# ----------------------------------------------------------------------------- statistics


def target_ranks(records: list[dict]) -> dict[int, tuple[int, int]]:
    """Per validation row (``row`` field, else position): (target item id, 0-based rank of its SID, -1 = miss)."""
    out = {}
    for position, record in enumerate(records):
        target = record["output"].strip(' \n"')
        predicted = [p.strip().strip('"\n').strip() for p in record["predict"]]
        out[int(record.get("row", position))] = (int(record.get("target_item_id", -1)),
                                                 predicted.index(target) if target in predicted else -1)
    return out


def row_values(ranks: dict[int, tuple[int, int]], metric: str) -> dict[int, tuple[int, float]]:
    """Per row: (target item id, value of ``metric``)."""
    from rec_lightning.evaluation.significance import per_row_values

    rows = sorted(ranks)
    values = per_row_values([ranks[r][1] for r in rows], metric)
    return {r: (ranks[r][0], float(v)) for r, v in zip(rows, values)}


def pooled_rows(per_seed: dict[int, dict[int, tuple[int, float]]], seeds: Sequence[int]) -> dict[int, tuple[int, float]]:
    """Each row's value averaged over ``seeds`` (all seeds must hold the same rows with the same targets).

    Raises:
        ValueError: a seed covers other rows, or a row's target item differs between seeds.
    """
    first = per_seed[seeds[0]]
    for seed in seeds[1:]:
        check_same_rows(first, per_seed[seed], f"seed {seeds[0]}", f"seed {seed}")
    return {r: (first[r][0], float(np.mean([per_seed[seed][r][1] for seed in seeds]))) for r in first}


def check_same_rows(a: dict, b: dict, name_a: str, name_b: str) -> None:
    if a.keys() != b.keys():
        raise ValueError(f"{name_a} and {name_b} cover different validation rows (e.g. {sorted(set(a) ^ set(b))[:3]})")
    for row in a:
        if a[row][0] != b[row][0]:
            raise ValueError(f"validation row {row} has target item {a[row][0]} in {name_a} but {b[row][0]} in {name_b}")


def paired_vs_shipped(shipped: dict[int, dict[int, tuple[int, float]]], other: dict[int, dict[int, tuple[int, float]]],
                      metric: str, num_samples: int = 10_000, seed: int = 0):
    """Paired bootstrap of mean(other) - mean(shipped) over validation rows, on the seeds both have (pooled by
    averaging each row over those seeds); None when they share no seed.

    Args:
        shipped, other: seed -> row -> (target item id, per-row value of ``metric``).
    """
    from rec_lightning.evaluation.significance import paired_bootstrap

    seeds = sorted(set(shipped) & set(other))
    if not seeds:
        return None
    a, b = pooled_rows(shipped, seeds), pooled_rows(other, seeds)
    check_same_rows(a, b, "shipped", "the other SID set")
    rows = sorted(a)
    comparison = paired_bootstrap([a[r][1] for r in rows], [b[r][1] for r in rows], metric, num_samples, seed=seed)
    comparison.seeds = seeds
    return comparison


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample s.d. / sqrt(n)); the s.e. is nan for fewer than 2 values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def crosses_zero(comparison) -> bool:
    """The interval holds zero (a degenerate [0, 0] too): the difference is not resolved."""
    return comparison.ci_low <= 0 <= comparison.ci_high


def needs_third_seed(comparisons: dict[str, object], crossing_metric: str) -> bool:
    """``comparisons``: metric -> PairedComparison (or None); ``crossing_metric``: a metric name or ``either``."""
    metrics = list(comparisons) if crossing_metric == "either" else [crossing_metric]
    return any(comparisons.get(m) is None or crosses_zero(comparisons[m]) for m in metrics)


# ----------------------------------------------------------------------------- the results file


def format_mean_se(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean, se = mean_se(values)
    return f"{mean:.4f}" if math.isnan(se) else f"{mean:.4f} +/- {se:.4f}"


def format_interval(comparison) -> str:
    if comparison is None:
        return "-"
    return (f"{comparison.difference:+.4f} [{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}] "
            f"(seeds {','.join(map(str, comparison.seeds))})")


def summary_row(label: str, sids: dict | None, runs: dict[int, dict], comparisons: dict[str, object]) -> str:
    if sids is None:
        sid_cells = ["-"] * 5
    else:
        sid_cells = ["-" if sids["seconds"] is None else f"{sids['seconds']:.1f}",
                     f"{100 * sids['collisions_before']:.2f}%", f"{100 * sids['collisions_after']:.2f}%",
                     " / ".join(str(u) for u in sids["used_codes"]),
                     " / ".join(f"{e:.2f}" for e in sids["entropy_bits"])]
    seeds = sorted(runs)
    cells = [label, *sid_cells, ",".join(map(str, seeds)) or "-",
             format_mean_se([runs[x]["metrics"]["hr@10"] for x in seeds]),
             format_mean_se([runs[x]["metrics"]["ndcg@10"] for x in seeds]),
             *(format_interval(comparisons.get(m)) for m in METRICS)]
    return "| " + " | ".join(cells) + " |"


def run_row(label: str, seed: int, run: dict) -> str:
    m = run["metrics"]
    minutes = "-" if run["fit_seconds"] is None else f"{run['fit_seconds'] / 60:.1f}"
    finished = datetime.fromtimestamp(run["finished"]).strftime("%Y-%m-%d %H:%M")
    return (f"| {label} | {seed} | {minutes} | {run['steps'] if run['steps'] is not None else '-'} | "
            f"{run['best_step'] if run['best_step'] is not None else '-'} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | "
            f"{m['hr@1']:.4f} | {m['count']} | {finished} |")


def render_results(context: str, summaries: list[str], runs: list[tuple[float, str]]) -> str:
    return (HEADER + "\n" + context + "\n\n"
            "| SID set | construction s | collisions before | after | used codes per level | entropy bits per level | "
            "seeds | valid HR@10 | valid NDCG@10 | HR@10 vs shipped [95%] | NDCG@10 vs shipped [95%] |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(summaries) + "\n\n"
            "Runs, in the order they finished (fit min = wall time of the `fit` process, start-up and export "
            "included; steps = the last logged optimizer step, logged every 50; best step = the checkpoint the "
            "recipe selected):\n\n"
            "| SID set | seed | fit min | steps | best step | valid HR@10 | NDCG@10 | HR@1 | rows | finished |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(row for _, row in sorted(runs)) + "\n")


class Study:
    """The SID sets and seeds, what has finished, and the results file built from it."""

    def __init__(self, names: list[str], s: Settings, context: str, bootstrap_samples: int):
        self.names, self.s, self.context, self.samples = names, s, context, bootstrap_samples

    def finished_runs(self, name: str) -> dict[int, dict]:
        runs = {}
        folder = self.s.work_dir / "runs" / set_label(name)
        for run_dir in sorted(folder.glob("seed*")) if folder.is_dir() else []:
            if run_dir.name[4:].isdigit() and (run := collect_run(run_dir)) is not None:
                runs[int(run_dir.name[4:])] = run
        return runs

    def row_values(self, name: str, seeds: Sequence[int], metric: str) -> dict[int, dict[int, tuple[int, float]]]:
        out = {}
        for seed in seeds:
            records = json.loads((run_dir_of(self.s, name, seed) / "eval" / "eval_results.json").read_text())
            out[seed] = row_values(target_ranks(records), metric)
        return out

    def comparisons(self, name: str) -> dict[str, object]:
        if name == SHIPPED:
            return {}
        shipped_seeds, seeds = sorted(self.finished_runs(SHIPPED)), sorted(self.finished_runs(name))
        common = sorted(set(shipped_seeds) & set(seeds))
        out = {}
        for metric in METRICS:
            try:
                out[metric] = paired_vs_shipped(self.row_values(SHIPPED, common, metric),
                                                self.row_values(name, common, metric), metric, self.samples)
            except ValueError as err:
                print(f"no paired comparison of {set_label(name)} with shipped ({metric}): {err}")
                out[metric] = None
        return out

    def write(self, path: Path | None) -> str:
        summaries, runs = [], []
        for name in self.names:
            finished = self.finished_runs(name)
            summaries.append(summary_row(set_label(name), sid_summary(name, self.s), finished, self.comparisons(name)))
            runs += [(run["finished"], run_row(set_label(name), seed, run)) for seed, run in finished.items()]
        text = render_results(self.context, summaries, runs)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".tmp")
            partial.write_text(text)
            partial.replace(path)
        return text


# ----------------------------------------------------------------------------- main

SMOKE_YAML = """\
# sid_quality.py --smoke: the industrial_cpu recipe with a tiny model for 2 steps
trainer:
  max_steps: 2
  enable_model_summary: false
model:
  class_path: rec_lightning.modules.sft.SFTModule
  init_args:
    backbone:
      config:
        model_type: qwen2
        hidden_size: 32
        intermediate_size: 64
        num_hidden_layers: 2
        num_attention_heads: 4
        num_key_value_heads: 2
        max_position_embeddings: 128
        tie_word_embeddings: true
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sids", nargs="+", default=[SHIPPED, "rq-kmeans-balanced"],
                        help="SID sets: 'shipped', build-sids methods, or folders holding SID sets ('shipped' is "
                             "always added: every set is compared with it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--budget_minutes", type=float, default=8.0, help="trainer.max_time of each fit")
    parser.add_argument("--timeout_margin_minutes", dest="timeout_margin", type=float,
                        default=4.0, help="a fit is killed after budget + this (start-up, tokenization, export)")
    parser.add_argument("--num_beams", type=int, default=20)
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "Amazon"))
    parser.add_argument("--category", default=None, help="default: the only category in --data_dir")
    parser.add_argument("--work_dir", default=None, help="default: outputs/sid_quality (smoke: outputs/sid_quality_smoke)")
    parser.add_argument("--results", default=None, help="the results markdown (default: "
                        "benchmarks/sid_quality_results.md; smoke: <work_dir>/sid_quality_results.md)")
    parser.add_argument("--embeddings", default=None, help="item embeddings .npy for build-sids (default: "
                        "sid_construction.py's MiniLM cache, outputs/sid_bench/<Category>.minilm.npy)")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook_size", type=int, default=256)
    parser.add_argument("--build_seed", type=int, default=0)
    parser.add_argument("--build_args", default="", help="extra build-sids arguments, one shell-quoted string")
    parser.add_argument("--variant", nargs=3, action="append", default=[], metavar=("LABEL", "SIDS", "FIT_ARGS"),
                        help="a recipe change to compare with shipped: runs labelled LABEL train on SID set SIDS "
                             "('shipped', a method or a folder) with the extra fit arguments FIT_ARGS (one "
                             "shell-quoted string), e.g. --variant ls0.1 shipped "
                             "'--model.init_args.loss.label_smoothing 0.1'; repeatable")
    parser.add_argument("--report_only", action="store_true",
                        help="rewrite the results file from the finished runs of the sets named; run nothing")
    parser.add_argument("--third_seed_if_crossing", action="store_true")
    parser.add_argument("--crossing_metric", choices=("either", *METRICS), default="either",
                        help="which interval decides the third seed (either: HR@10 or NDCG@10 crossing zero)")
    parser.add_argument("--bootstrap_samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of every child process")
    parser.add_argument("--dry_run", action="store_true", help="print the commands (and the SID statistics), run nothing")
    parser.add_argument("--smoke", action="store_true", help="tiny data, embeddings, SIDs and model: seconds")
    return parser.parse_args(argv)


def smoke_inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The smoke mode's demo data folder (30 users) and random item embeddings, made once in ``work``."""
    data = work / "smoke_data"
    if not (data / "index").is_dir():
        command = python_command("make-demo-data", "--output", str(data), "--num_users", "30", "--train_tokenizer", "false")
        print(f"$ {shlex.join(command)}")
        subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    if args.embeddings:
        return data, Path(args.embeddings)
    embeddings = work / "smoke_embeddings.npy"
    if not embeddings.is_file():
        index = json.loads(next((data / "index").glob("*.index.json")).read_text())
        np.save(embeddings, np.random.default_rng(0).standard_normal((len(index), 16)).astype(np.float32))
    return data, embeddings


def settings_of(args: argparse.Namespace) -> Settings:
    work = Path(args.work_dir or REPO / "outputs" / ("sid_quality_smoke" if args.smoke else "sid_quality")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    extra_fit = []
    budget = round(args.budget_minutes * 60)
    timeout = budget + round(args.timeout_margin * 60)
    if args.smoke:
        data_dir, embeddings = smoke_inputs(args, work)
        (work / "smoke.yaml").write_text(SMOKE_YAML)
        extra_fit = ["--config", str(work / "smoke.yaml")]
        budget, timeout, levels, codebook = 60, 300, 3, 8
    else:
        data_dir, levels, codebook = Path(args.data_dir).resolve(), args.levels, args.codebook_size
        embeddings = None
    from rec_lightning.files.layout import available_categories

    if not (data_dir / "index").is_dir():
        raise SystemExit(f"no data at {data_dir} (expected the MiniOneRec layout: index/, train/, valid/, ...)")
    categories = [args.category] if args.category else available_categories(data_dir)
    if len(categories) != 1:
        raise SystemExit(f"{data_dir} holds categories {categories}: choose one with --category")
    category = categories[0]
    if embeddings is None:
        embeddings = Path(args.embeddings or REPO / "outputs" / "sid_bench" / f"{category}.minilm.npy").resolve()
    return Settings(data_dir=data_dir, category=category, work_dir=work, embeddings=embeddings, budget_seconds=budget,
                    timeout_seconds=timeout, num_beams=args.num_beams, levels=levels, codebook_size=codebook,
                    build_seed=args.build_seed, build_args=shlex.split(args.build_args), extra_fit_args=extra_fit,
                    eval_batch_size=args.eval_batch_size, threads=args.threads, variants=parse_variants(args.variant))


def parse_variants(specs: Sequence[Sequence[str]]) -> dict[str, tuple[str, list[str]]]:
    """``--variant LABEL SIDS FIT_ARGS`` triples -> {label: (SID set, fit arguments)}.

    Raises:
        SystemExit: a label that is not a plain name, repeats, or is the name of a SID set or a folder.
    """
    import re

    out = {}
    for label, sids, fit_args in specs:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", label) or label == SHIPPED or label in out or Path(label).exists():
            raise SystemExit(f"--variant {label!r}: the label must be a new plain name (letters, digits, . _ + = -), "
                             f"not 'shipped', a repeated label or an existing path; its runs go to runs/<label>/")
        if sids != SHIPPED and not Path(sids).is_dir() and not re.fullmatch(r"[a-z0-9-]+", sids):
            raise SystemExit(f"--variant {label}: SID set {sids!r} is neither 'shipped', a build-sids method nor a folder")
        try:
            arguments = shlex.split(fit_args)
        except ValueError as err:
            raise SystemExit(f"--variant {label}: its fit arguments {fit_args!r} do not parse ({err})") from None
        out[label] = (sids, arguments)
    return out


def context_line(s: Settings, args: argparse.Namespace) -> str:
    return (f"Data: {s.data_dir} ({s.category}), valid split; budget {s.budget_seconds / 60:g} min per fit"
            f"{' (smoke: 2 steps, tiny model)' if args.smoke else ''}; beam {s.num_beams}; "
            f"{'seeds: as each row says' if args.report_only else f'seeds {args.seeds}'}"
            f"{' (+1 where an interval crosses zero)' if args.third_seed_if_crossing else ''}; SIDs built with "
            f"{s.levels} levels x {s.codebook_size} codes, reassign, seed {s.build_seed}, from {s.embeddings.name}; "
            f"{args.bootstrap_samples} bootstrap samples. Machine: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}"
            f"{f', {s.threads} threads per process' if s.threads else ''}."
            + "".join(f" Variant {label}: SID set {sids} with `{shlex.join(extra)}`." for label, (sids, extra) in s.variants.items()))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    s = settings_of(args)
    names = list(dict.fromkeys([SHIPPED, *args.sids, *s.variants]))
    results = None if args.dry_run else Path(args.results or (s.work_dir / "sid_quality_results.md" if args.smoke
                                                              else REPO / "benchmarks" / "sid_quality_results.md"))
    study = Study(names, s, context_line(s, args), args.bootstrap_samples)
    if args.report_only:
        text = study.write(results)
        print(text + (f"\nwrote {results}" if results is not None else ""))
        return 0
    folders = {name: ensure_sids(name, s, args.dry_run) for name in names}
    if folders[SHIPPED] is None:
        raise SystemExit("the shipped SIDs are missing")
    failed = [name for name, folder in folders.items() if folder is None]

    def run_all(seeds: Sequence[int], which: Sequence[str]) -> None:
        for seed in seeds:
            for name in which:
                if folders.get(name) is None:
                    continue
                if not do_run(name, seed, folders[name], s, args.dry_run):
                    failed.append(f"{set_label(name)} seed {seed}")
                elif not args.dry_run:
                    study.write(results)
                    print(f"  results: {results}", flush=True)

    run_all(args.seeds, names)
    if args.third_seed_if_crossing and not args.dry_run:
        extra = max(args.seeds) + 1
        crossing = [n for n in names if n != SHIPPED and folders[n] is not None
                    and needs_third_seed(study.comparisons(n), args.crossing_metric)]
        if crossing:
            print(f"\nintervals vs shipped cross zero for {', '.join(map(set_label, crossing))}: seed {extra}")
            run_all([extra], [SHIPPED, *crossing])
    text = study.write(results)
    print("\n" + text)
    if results is not None:
        print(f"wrote {results}")
    if failed:
        print(f"failed: {', '.join(failed)} (rerun the same command to retry them; finished runs are kept)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

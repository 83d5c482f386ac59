"""The real-data proof on a CPU: baselines, our SFT recipe, GRPO on top, one results table (issue 9).

    python benchmarks/real_data.py --data_dir ../shared/data/Amazon --output outputs/real_data
    python benchmarks/real_data.py ... --only baselines|sft|rl|table      # one stage (the others reused)

Every step runs the library's own command line, exactly as a user would:

1. ``baseline --kind popularity`` and ``--kind transition`` (decay chosen on the valid split), and
   SASRec (``fit --config configs/sasrec.yaml``, then ``baseline --kind sasrec``), on the whole test split;
2. ``fit --config configs/industrial_cpu.yaml`` (a from-scratch model, a wall-time budget), then
   ``evaluate`` on the whole test split at beam 50;
3. ``fit --config configs/grpo_industrial_cpu.yaml`` from that checkpoint (its ``transition_log`` reward counts
   the train split), then ``evaluate`` again;
4. ``report`` of everything against the SFT run (paired bootstrap intervals) and the paper-format table
   (HR@3/5/10, NDCG@3/5/10) beside the paper's published rows.

Numbers depend on the machine and on what else runs on it: the table prints both, and the training wall
times come from the runs themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER = [  # MiniOneRec paper, Industrial_and_Scientific test split (HR@3/5/10, NDCG@3/5/10)
    ("MiniOneRec (paper, Qwen2.5-3B, 8 GPUs)", [0.1143, 0.1321, 0.1586, 0.1011, 0.1084, 0.1167]),
    ("TIGER (paper)", [None, None, 0.1321, None, None, 0.0908]),
    ("SASRec (paper)", [None, None, 0.1088, None, None, 0.0806]),
]
COLUMNS = ["hr@3", "hr@5", "hr@10", "ndcg@3", "ndcg@5", "ndcg@10"]
DECAYS = (0.0, 0.3, 0.5, 0.7)


def run(*args: str, log: Path) -> float:
    """``python -m rec_lightning ARGS`` with its output in ``log``; returns wall seconds; raises on failure."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with log.open("w") as stream:
        result = subprocess.run([sys.executable, "-m", "rec_lightning", *args], cwd=REPO, env=env, stdout=stream,
                                stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"`python -m rec_lightning {' '.join(args)}` failed (exit {result.returncode}); see {log}")
    return time.perf_counter() - start


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def baselines(args, out: Path) -> dict[str, float]:
    data = ["--data_dir", args.data_dir, "--num_items", "50"]
    seconds = {}
    seconds["popularity"] = run("baseline", "--kind", "popularity", *data, "--split", "test",
                                "--output", str(out / "popularity"), log=out / "popularity.log")
    best = None
    for decay in DECAYS:  # choose the recency decay on valid, never on test
        folder = out / "transition_valid" / f"decay{decay}"
        run("baseline", "--kind", "transition", "--decay", str(decay), *data, "--split", "valid",
            "--output", str(folder), log=out / f"transition_valid_{decay}.log")
        score = metrics_of(folder)["ndcg@10"]
        best = (score, decay) if best is None or score > best[0] else best
    (out / "transition_decay.txt").write_text(f"{best[1]}\n")
    seconds["transition"] = run("baseline", "--kind", "transition", "--decay", str(best[1]), *data, "--split", "test",
                                "--output", str(out / "transition"), log=out / "transition.log")
    sasrec_root = out / "sasrec_run"
    seconds["sasrec_fit"] = run("fit", "--config", str(REPO / "configs" / "sasrec.yaml"), "--data.data_dir",
                                args.data_dir, "--trainer.default_root_dir", str(sasrec_root),
                                log=out / "sasrec_fit.log")
    seconds["sasrec"] = run("baseline", "--kind", "sasrec", "--checkpoint", str(sasrec_root / "final_checkpoint"),
                            *data, "--split", "test", "--output", str(out / "sasrec"), log=out / "sasrec.log")
    return seconds


def sft(args, out: Path) -> dict[str, float]:
    root = out / "sft_run"
    seconds = {"sft_fit": run("fit", "--config", str(REPO / "configs" / "industrial_cpu.yaml"), "--data.data_dir",
                              args.data_dir, "--trainer.default_root_dir", str(root),
                              "--trainer.logger.init_args.save_dir", str(root), log=out / "sft_fit.log")}
    seconds["sft_eval"] = run("evaluate", "--checkpoint", str(root / "final_checkpoint"), "--data_dir", args.data_dir,
                              "--split", "test", "--num_beams", "50", "--batch_size", "64",
                              "--output", str(out / "sft"), log=out / "sft_eval.log")
    return seconds


def rl(args, out: Path) -> dict[str, float]:
    root, sft_checkpoint = out / "rl_run", out / "sft_run" / "final_checkpoint"
    seconds = {"rl_fit": run("fit", "--config", str(REPO / "configs" / "grpo_industrial_cpu.yaml"),
                             "--data.data_dir", args.data_dir, "--model.init_args.sft_checkpoint", str(sft_checkpoint),
                             "--data.tokenizer", str(sft_checkpoint), "--trainer.default_root_dir", str(root),
                             "--trainer.logger.init_args.save_dir", str(root), log=out / "rl_fit.log")}
    seconds["rl_eval"] = run("evaluate", "--checkpoint", str(root / "final_checkpoint"), "--data_dir", args.data_dir,
                             "--split", "test", "--num_beams", "50", "--batch_size", "64",
                             "--output", str(out / "rl"), log=out / "rl_eval.log")
    return seconds


def table(out: Path, seconds: dict[str, float]) -> str:
    runs = [(name, out / folder) for name, folder in (("popularity", "popularity"), ("transition", "transition"),
                                                       ("SASRec", "sasrec"), ("ours: SFT", "sft"), ("ours: SFT + GRPO", "rl"))
            if (out / folder / "metrics.json").exists()]
    present = [name for name, _ in runs]
    if "ours: SFT" in present:
        others = [str(folder / "eval_results.json") for name, folder in runs if name != "ours: SFT"]
        run("report", str(out / "sft" / "eval_results.json"), *others, "--names", "SFT",
            *[name.replace("ours: ", "").replace(" ", "_") for name, _ in runs if name != "ours: SFT"],
            "--output", str(out / "report"), log=out / "report.log")
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
             f"Python {platform.python_version()}; wall seconds: " + json.dumps({k: round(v) for k, v in seconds.items()}),
             "", "| model (Industrial test split, 4,533 rows, 50 items) | HR@3 | HR@5 | HR@10 | NDCG@3 | NDCG@5 | NDCG@10 |",
             "|---|---|---|---|---|---|---|"]
    for name, folder in runs:
        metrics = metrics_of(folder)
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS) + " |")
    for name, values in PAPER:
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "Amazon"))
    parser.add_argument("--output", default=str(REPO / "outputs" / "real_data"))
    parser.add_argument("--only", choices=("baselines", "sft", "rl", "table"), default=None)
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    timing_file = out / "seconds.json"
    seconds = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    for stage, fn in (("baselines", baselines), ("sft", sft), ("rl", rl)):
        if args.only in (None, stage):
            seconds.update(fn(args, out))
            timing_file.write_text(json.dumps(seconds, indent=1))
    result = table(out, seconds)
    (out / "table.md").write_text(result + "\n")
    print(result)


if __name__ == "__main__":
    main()

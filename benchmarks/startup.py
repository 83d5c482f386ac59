"""Start-up of ``python -m rec_lightning``: wall seconds of ``--help`` and of an argument error, per command.

    python benchmarks/startup.py [--runs 5] [--reference /path/to/older/checkout]

Each figure is the median of ``--runs`` fresh interpreters (after one warm-up), timed from outside the
process; ``--reference`` times the same commands with that checkout first on ``PYTHONPATH`` (e.g. a
``git worktree`` of an earlier commit) and prints the ratio reference / this tree. Also prints which heavy
packages each ``--help`` imported (none is the target for every non-Trainer command).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["check-data", "evaluate", "report", "baseline", "export", "recommend", "make-demo-data", "download",
            "prepare", "embed-items", "build-sids"]
HEAVY = ("torch", "lightning", "transformers", "torchmetrics")
PROBE = """
import contextlib, io, sys
from rec_lightning.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(",".join(m for m in {heavy!r} if m in sys.modules) or "-")
"""


def environment(path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))}


def seconds(argv: list[str], path: Path, runs: int) -> float:
    times = []
    for attempt in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rec_lightning", *argv], env=environment(path), capture_output=True,
                       cwd=path, timeout=300)
        if attempt:  # the first run warms the file cache
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def heavy_imports(argv: list[str], path: Path) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], env=environment(path),
                            capture_output=True, text=True, cwd=path, timeout=300)
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reference", type=Path, default=None, help="an older checkout to compare with")
    parser.add_argument("--commands", nargs="+", default=COMMANDS)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"median of {args.runs} runs after a warm-up")
    header = "| command | this tree (s) | heavy imports |"
    if args.reference:
        header += " reference (s) | reference heavy imports | ratio |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for command in args.commands:
        for argv in ([command, "--help"], [command, "--no_such_option"]):
            ours = seconds(argv, REPO, args.runs)
            row = f"| `{' '.join(argv)}` | {ours:.2f} | {heavy_imports(argv, REPO)} |"
            if args.reference:
                theirs = seconds(argv, args.reference, args.runs)
                row += f" {theirs:.2f} | {heavy_imports(argv, args.reference)} | {theirs / ours:.1f}x |"
            print(row, flush=True)


if __name__ == "__main__":
    main()

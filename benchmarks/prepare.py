"""``prepare`` on a synthetic Amazon-2023 dump of realistic shape: wall time and peak memory per step.

    python benchmarks/prepare.py [--sizes 200000 1000000] [--work outputs/prepare_bench]

For each size N it writes a gzipped 2023-format reviews file (N lines with review text, ~0.5 KB each)
and its meta file, then runs ``prepare`` (MiniOneRec defaults: 5/5-core, 10-item windows, 8:1:1) in a
fresh process while a thread samples its resident memory every 20 ms. Shape: reviews per user
follow Zipf(2.5) capped at 300 (about 3 in 4 users write one), N/25 items with Zipf(1.1)
popularity, times uniform over 2018-2023, so the 5-core keeps a realistic few percent.

The bounded-memory claim checked: peak RSS above the interpreter's baseline stays below
``32 MB + 64 bytes x reviews read + 400 bytes x distinct raw keys``, far below the uncompressed input, because
only 16 bytes per kept review and one dict entry per user/item key are held (texts never are).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEXT = ("This works as described and arrived on time. The build quality is solid for the price, and the "
        "instructions were clear enough. I would buy it again for the lab; it replaced an older unit. ") * 2


def write_dump(folder: Path, num_reviews: int, seed: int = 0) -> tuple[Path, Path, dict]:
    """The reviews and meta files (gzip level 1) and the true key counts."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    activity = np.minimum(rng.zipf(2.5, size=num_reviews), 300)  # reviews per user: ~3 in 4 write one
    users = np.repeat(np.arange(num_reviews), activity)[:num_reviews]
    users = users[rng.permutation(num_reviews)]  # interleave users through the file
    num_items = max(num_reviews // 25, 10)
    item_weight = 1.0 / np.arange(1, num_items + 1) ** 1.1
    items = rng.choice(num_items, size=num_reviews, p=item_weight / item_weight.sum())
    start, span = 1514764800, 6 * 365 * 86400  # 2018-01-01 .. 2023-12-31
    times = (start + rng.integers(0, span, size=num_reviews)) * 1000
    reviews, meta = folder / "reviews.jsonl.gz", folder / "meta.jsonl.gz"
    with gzip.open(reviews, "wt", compresslevel=1, encoding="utf-8") as out:
        for u, i, t in zip(users.tolist(), items.tolist(), times.tolist()):
            out.write(f'{{"rating": 5.0, "title": "Great", "text": "{TEXT}", "images": [], "asin": "B{i:09d}", '
                      f'"parent_asin": "B{i:09d}", "user_id": "AG{u:026d}", "timestamp": {t}, "helpful_vote": 0, '
                      f'"verified_purchase": true}}\n')
    with gzip.open(meta, "wt", compresslevel=1, encoding="utf-8") as out:
        for i in range(num_items):
            out.write(json.dumps({"main_category": "Industrial & Scientific", "title": f"Acme Lab Part {i} Kit",
                                  "description": [f"Part {i} for the lab.", TEXT[:200]], "store": "Acme",
                                  "categories": ["Industrial & Scientific", "Lab"], "parent_asin": f"B{i:09d}",
                                  "details": {"Brand": "Acme"}}) + "\n")
    keys = {"distinct_users": int(np.unique(users).size), "distinct_items": int(np.unique(items).size)}
    return reviews, meta, keys


CHILD = r"""
import json, sys, threading, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
import numpy, tqdm  # baseline: interpreter + the libraries prepare imports
from rec_lightning.data.raw.pipeline import PrepareOptions, prepare_dataset
baseline = rss()
samples, running = [], True
def sample():
    while running:
        samples.append((time.perf_counter(), rss()))
        time.sleep(0.02)
thread = threading.Thread(target=sample, daemon=True)
t0 = time.perf_counter()
thread.start()
report, seconds = prepare_dataset(sys.argv[1], sys.argv[2], "amazon2023", "Bench", sys.argv[3], PrepareOptions())
running = False
thread.join()
steps, t = {}, t0
for name, s in seconds.items():
    window = [m for when, m in samples if t <= when <= t + s + 0.02]
    steps[name] = {"seconds": s, "peak_rss_mb": round(max(window, default=0) / 2**20, 1)}
    t += s
print(json.dumps({"baseline_mb": round(baseline / 2**20, 1), "peak_mb": round(max(m for _, m in samples) / 2**20, 1),
                  "steps": steps, "final": report["final"], "read": report["steps"][0]["interactions"],
                  "splits": {k: v["rows"] for k, v in report["splits"].items()}}))
"""


def run_one(work: Path, num_reviews: int) -> dict:
    folder = work / f"n{num_reviews}"
    start = time.perf_counter()
    reviews, meta, keys = write_dump(folder, num_reviews)
    generate_seconds = time.perf_counter() - start
    output = folder / "prepared"
    if output.exists():
        import shutil

        shutil.rmtree(output)  # ours: written by the previous run of this benchmark
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(reviews), str(meta), str(output)], env=env,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(num_reviews=num_reviews, wall_seconds=round(time.perf_counter() - start, 1),
                  generate_seconds=round(generate_seconds, 1), reviews_gz_mb=round(reviews.stat().st_size / 2**20, 1),
                  uncompressed_mb=round(num_reviews * (len(TEXT) + 200) / 2**20, 1), **keys)
    bound_mb = 32 + (64 * num_reviews + 400 * (keys["distinct_users"] + keys["distinct_items"])) / 2**20
    result["memory_bound_mb"] = round(bound_mb, 1)
    result["bounded"] = result["peak_mb"] - result["baseline_mb"] <= bound_mb
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "prepare_bench")
    args = parser.parse_args()
    rows = [run_one(args.work, n) for n in args.sizes]
    print("| reviews | gz MB | users / items (raw) | kept users / items / inter. | wall s | steps (s, peak MB) | "
          "baseline / peak MB | bound MB | bounded |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        steps = "; ".join(f"{k} {v['seconds']:.1f} s {v['peak_rss_mb']:.0f}" for k, v in r["steps"].items())
        f = r["final"]
        print(f"| {r['num_reviews']:,} | {r['reviews_gz_mb']} | {r['distinct_users']:,} / {r['distinct_items']:,} | "
              f"{f['users']:,} / {f['items']:,} / {f['interactions']:,} | {r['wall_seconds']} | {steps} | "
              f"{r['baseline_mb']} / {r['peak_mb']} | {r['memory_bound_mb']} | {r['bounded']} |")
    print(json.dumps(rows, indent=1))
    if not all(r["bounded"] for r in rows):
        raise SystemExit("peak memory exceeded the stated bound")


if __name__ == "__main__":
    main()

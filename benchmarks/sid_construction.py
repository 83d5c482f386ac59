"""SID construction on the real Industrial_and_Scientific items: every method vs the shipped index.

    python benchmarks/sid_construction.py [--data_dir ../shared/data/Amazon] [--threads 1]

Embeds the 3,686 items with MiniLM (cached under outputs/sid_bench/), builds SIDs with rq-kmeans,
rq-kmeans-balanced, rq-vae and rq-kmeans-plus (3 x 256, reassign), writes each into outputs/sid_bench/<method>/ with
re-keyed CSVs, and prints one markdown table with the shipped index's statistics beside them.
Beyond collisions and codebook usage it reports two semantic checks: the mean cosine similarity
(MiniLM vectors) of items sharing a first-level code, and how often the next item of a train row
shares the first-level code of the last history item (and that rate over chance, i.e. over what
the two code distributions would give if independent).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
METHODS = ("rq-kmeans", "rq-kmeans-balanced", "rq-vae", "rq-kmeans-plus")


def shipped_codes(data_dir: Path, category: str) -> list[tuple[int, ...]]:
    from rec_lightning.sids.codec import parse_sid_token, read_index_json

    index = read_index_json(data_dir / "index" / f"{category}.index.json")
    return [tuple(parse_sid_token(t)[1] for t in index[i]) for i in range(len(index))]


def semantic_checks(first_codes: np.ndarray, x: np.ndarray, train_csv: Path) -> dict:
    """Mean cosine of item pairs sharing a first-level code, and the next-item same-code rate."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims, pairs = 0.0, 0
    for code in np.unique(first_codes):
        members = x[first_codes == code]
        n = len(members)
        if n > 1:
            total = members.sum(0)
            sims += float(total @ total - n)  # sum over ordered pairs i != j of cos(i, j)
            pairs += n * (n - 1)
    last, target = [], []
    with open(train_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            last.append(first_codes[ast.literal_eval(row["history_item_id"])[-1]])
            target.append(first_codes[int(row["item_id"])])
    last, target = np.array(last), np.array(target)
    same = float((last == target).mean())
    k = int(first_codes.max()) + 1
    chance = float(np.bincount(last, minlength=k) @ np.bincount(target, minlength=k)) / len(last) ** 2
    return {"same_a_cosine": sims / max(pairs, 1), "next_item_same_a": same, "next_item_same_a_lift": same / chance}


def row_of(name: str, stats: dict, checks: dict, seconds: float | None, error: float | None) -> str:
    levels = stats["level_stats"]
    usage = " / ".join(f"{s['used_codes']}" for s in levels[:3])
    entropy = " / ".join(f"{s['entropy_bits']:.2f}" for s in levels[:3])
    spread = stats["items_per_used_first_level_code"]
    return (f"| {name} | {100 * stats['collision_rate_before']:.2f}% ({stats['num_colliding_groups_before']} groups, "
            f"max {stats['max_group_size_before']}) | {100 * stats['collision_rate_after']:.2f}% | {usage} | {entropy} | "
            f"{spread['min']}/{spread['mean']:.1f}/{spread['max']} | "
            f"{'-' if error is None else f'{error:.3f}'} | {checks['same_a_cosine']:.3f} | "
            f"{100 * checks['next_item_same_a']:.1f}% (x{checks['next_item_same_a_lift']:.0f}) | {'-' if seconds is None else f'{seconds:.0f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "Amazon"))
    parser.add_argument("--category", default="Industrial_and_Scientific")
    parser.add_argument("--work_dir", default=str(REPO / "outputs" / "sid_bench"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rqvae_epochs", type=int, default=300)
    parser.add_argument("--rqkmeans_plus_epochs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from rec_lightning.data.item_embeddings import embed_items, format_summary as embedding_summary
    from rec_lightning.files.layout import find_split_csv
    from rec_lightning.modules.rqkmeans_plus import fit_rqkmeans_plus
    from rec_lightning.modules.rqvae import fit_rqvae
    from rec_lightning.sids.build import RQKMeansPlusOptions, RQVAEOptions, build_sids, format_report
    from rec_lightning.sids.collisions import sid_statistics

    data_dir, work = Path(args.data_dir), Path(args.work_dir)
    if not (data_dir / "index" / f"{args.category}.index.json").is_file():
        raise SystemExit(f"real data not found at {data_dir}; nothing to benchmark")
    embeddings = work / f"{args.category}.minilm.npy"
    if not embeddings.is_file():
        print(embedding_summary(*embed_items(str(data_dir), args.category, str(embeddings), progress=False), 0))
    embed_meta = json.loads(embeddings.with_suffix(".json").read_text())
    x = np.load(embeddings)
    train_csv = find_split_csv(data_dir, "train", args.category)

    rows, reports = [], {}
    shipped = shipped_codes(data_dir, args.category)
    stats = sid_statistics(shipped, shipped, 256)
    rows.append(row_of("shipped (RQ-VAE, Qwen emb.)", stats, semantic_checks(np.array([c[0] for c in shipped]), x, train_csv), None, None))
    rqvae = RQVAEOptions(epochs=args.rqvae_epochs, accelerator="cpu")
    rqkmeans_plus = RQKMeansPlusOptions(epochs=args.rqkmeans_plus_epochs, accelerator="cpu")
    for method in args.methods:
        report = build_sids(str(embeddings), str(work / method), method=method, levels=3, codebook_size=256,
                            collision="reassign", data_dir=str(data_dir), category=args.category, rewrite_data=True,
                            seed=args.seed, rqvae=rqvae, progress=False, fit_rqvae=fit_rqvae,
                            rqkmeans_plus=rqkmeans_plus, fit_rqkmeans_plus=fit_rqkmeans_plus)
        print(format_report(report))
        reports[method] = report
        first = np.array([c[0] for c in shipped_codes(work / method, args.category)])  # the index just written
        rows.append(row_of(f"{method} + reassign", report, semantic_checks(first, x, train_csv),
                           report["quantise_seconds"], report["relative_quantisation_error"]))

    print(f"\nSID construction, {args.category} ({len(x)} items), MiniLM embeddings ({embed_meta['dim']}-d, "
          f"max_length {embed_meta['max_length']}, normalised {embed_meta['normalize']}, "
          f"{embed_meta['num_truncated_texts']} texts truncated, embedded in {embed_meta['seconds']:.0f} s)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; 3 levels x 256 codes, seed {args.seed}; "
          f"rq-vae: {args.rqvae_epochs} epochs full batch, MLP {list(rqvae.hidden_dims)} -> {rqvae.latent_dim}, AdamW lr {rqvae.lr}; "
          f"rq-kmeans-plus: {rqkmeans_plus.epochs} epochs, batch {rqkmeans_plus.batch_size}, residual MLPs "
          f"{list(rqkmeans_plus.hidden_dims)}, AdamW lr {rqkmeans_plus.lr}\n")
    print("| SIDs | collisions before | after | used codes a / b / c | entropy bits a / b / c | items per a-code min/mean/max "
          "| rel. quant. error | same-a cosine | next item same a (lift) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    total = unit.sum(0)
    print(f"(mean cosine of two random distinct items: {(total @ total - len(x)) / (len(x) * (len(x) - 1)):.3f})")
    for method, report in reports.items():
        c = report["collision"]
        print(f"{method}: reassign moved {c['num_moved']} items ({c['num_extra_level']} extra level); "
              f"extra-level would give {report['num_colliding_items_before']} items a 4th token")
    (work / "summary.json").write_text(json.dumps({m: {k: v for k, v in r.items() if k != "items_per_first_level_code"}
                                                   for m, r in reports.items()}, indent=2))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")

"""Would a count prior at decoding lift the top of the list? An offline check on saved beam lists (issue 29).

    python benchmarks/rerank_offline.py --data_dir ../shared/data/Amazon \\
        --eval_results 'outputs/sid_quality/runs/shipped/seed*/eval/eval_results.json'
    python benchmarks/rerank_offline.py --data_dir DIR --eval_results VALID/eval_results.json \\
        --test_results TEST/eval_results.json --output OUT     # lambda chosen on valid, applied to test

Each ``eval_results.json`` (``evaluate``'s, on the valid split) holds, per row, the beam list and each beam's
log-probability. Its lists are re-ranked by

    score' = log p_LM(sid | h) + lambda * log p_prior(sid | h)

with two priors counted on the **train split only**: ``popularity`` (train-target counts, Laplace-smoothed)
and ``transition`` (the transition baseline's probability after the history, decay 0.3, mixed with 10% of
the popularity prior so that no beam has probability 0). Only the order of the beams changes (no beam is
added), so HR@20 stays the same; HR@1 / NDCG@10 move. lambda is chosen on half of the rows (odd rows) and
reported on the other half (even rows) against lambda = 0 (the model as it is), with a paired bootstrap
interval: choosing on valid, testing on held-out valid rows. The runs' values are averaged per row (seeds).
With ``--test_results`` (the same model's ``evaluate`` on the test split), lambda is chosen on all valid rows
and applied to the test lists, which are written re-ranked (``OUT/eval_results.json``, evaluate's format, the
beams' ``scores`` replaced by the fused ones) for ``report`` to compare with the baselines row by row.

This is an analysis: it needs no model and runs in seconds. A prior that wins here is the lead for a decoding
option (beam search with the prior inside, which can also change which beams survive).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
METRICS = ("hr@1", "hr@3", "ndcg@3", "ndcg@10", "hr@10")


def priors(data_dir: str, category: str, records: list[dict], decay: float,
           split: str = "valid") -> dict[str, list[np.ndarray]]:
    """Per prior, per row: log p_prior of each beam of that row (``records``: evaluate's, on ``split``)."""
    from rec_lightning.data.records import load_rec_data
    from rec_lightning.modules.transition_reward import TransitionReward

    data = load_rec_data(data_dir, category, splits=("train", split))
    catalog, valid = data.catalog, data.splits[split]
    teacher = TransitionReward(data.splits["train"], catalog, decay=decay)
    pop = teacher.model.popularity.counts.numpy()
    pop = (pop + 1.0) / (pop.sum() + len(pop))  # Laplace: no item at 0
    items_of = {}
    out = {"popularity": [], "transition": []}
    for start in range(0, len(records), 512):
        chunk = records[start:start + 512]
        histories = []
        for record in chunk:
            row = valid[int(record["row"])]
            if row.item_id != int(record["target_item_id"]):
                raise SystemExit(f"row {record['row']} of the eval results is not {split} row {record['row']} of the data")
            histories.append(list(row.history_item_ids))
        trans = teacher.probabilities(histories).numpy()
        for i, record in enumerate(chunk):
            log_pop, log_trans = [], []
            for sid in record["predict"]:
                sid = sid.strip()
                if sid not in items_of:
                    items_of[sid] = list(catalog.items_with_sid(sid))
                ids = items_of[sid]
                p_pop = float(pop[ids].sum())
                log_pop.append(math.log(p_pop))
                log_trans.append(math.log(0.9 * float(trans[i, ids].sum()) + 0.1 * p_pop))
            out["popularity"].append(np.array(log_pop))
            out["transition"].append(np.array(log_trans))
    return out


def target_rank(order: np.ndarray, target_position: int) -> int:
    return -1 if target_position < 0 else int(np.flatnonzero(order == target_position)[0])


def row_metric(rank: int, metric: str) -> float:
    name, k = metric.split("@")
    if rank < 0 or rank >= int(k):
        return 0.0
    return 1.0 if name == "hr" else 1.0 / math.log2(rank + 2)


def values(runs: list[list[dict]], prior: dict[str, list[np.ndarray]], name: str, lam: float, metric: str) -> np.ndarray:
    """Per row, ``metric`` after re-ranking with ``lam``, averaged over the runs."""
    out = np.zeros(len(runs[0]))
    for r, records in enumerate(runs):
        for i, record in enumerate(records):
            predict = [p.strip() for p in record["predict"]]
            target = record["output"].strip()
            position = predict.index(target) if target in predict else -1
            score = np.asarray(record["scores"], dtype=np.float64) + lam * prior[r][name][i]
            order = np.argsort(-score, kind="stable")
            out[i] += row_metric(target_rank(order, position), metric) / len(runs)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval_results", nargs="+", required=True, help="evaluate's eval_results.json, valid split")
    parser.add_argument("--test_results", nargs="+", default=None, help="the same model's eval_results.json on test")
    parser.add_argument("--output", default=None, help="folder for the re-ranked test eval_results.json")
    parser.add_argument("--data_dir", required=True, help="the data folder the runs were evaluated on")
    parser.add_argument("--category", default="Industrial_and_Scientific")
    parser.add_argument("--decay", type=float, default=0.3)
    args = parser.parse_args()
    from rec_lightning.evaluation.significance import paired_bootstrap

    files = sorted({f for pattern in args.eval_results for f in glob.glob(pattern)})
    runs = [sorted(json.loads(Path(f).read_text()), key=lambda r: int(r["row"])) for f in files]
    if len({len(r) for r in runs}) != 1:
        raise SystemExit("the runs cover different numbers of rows")
    prior = [priors(args.data_dir, args.category, records, args.decay) for records in runs]
    if args.test_results:
        return choose_on_valid_apply_to_test(args, runs, prior)
    rows = np.arange(len(runs[0]))
    choose, report = rows % 2 == 1, rows % 2 == 0
    print(f"{len(files)} runs, {len(rows)} rows; lambda chosen on {choose.sum()} odd rows by NDCG@10, reported on "
          f"{report.sum()} even rows")
    for name in ("popularity", "transition"):
        table = {lam: {m: values(runs, prior, name, lam, m) for m in METRICS} for lam in LAMBDAS}
        print(f"\nprior {name}: lambda | " + " | ".join(f"{m} (choose / report)" for m in METRICS))
        for lam in LAMBDAS:
            print(f"  {lam:<5} | " + " | ".join(f"{table[lam][m][choose].mean():.4f} / {table[lam][m][report].mean():.4f}"
                                                 for m in METRICS))
        best = max(LAMBDAS, key=lambda lam: table[lam]["ndcg@10"][choose].mean())
        print(f"  chosen lambda {best}; on the report half vs lambda 0:")
        for m in METRICS:
            c = paired_bootstrap(table[0.0][m][report], table[best][m][report], m, 10_000)
            print(f"    {m}: {table[0.0][m][report].mean():.4f} -> {table[best][m][report].mean():.4f}, "
                  f"{c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]")
    return 0


def choose_on_valid_apply_to_test(args, runs, prior) -> int:
    from rec_lightning.evaluation.significance import paired_bootstrap

    if not args.output:
        raise SystemExit("--test_results needs --output")
    best = max(LAMBDAS, key=lambda lam: values(runs, prior, "transition", lam, "ndcg@10").mean())
    print(f"transition prior: lambda {best} chosen on all {len(runs[0])} valid rows "
          f"(NDCG@10 {values(runs, prior, 'transition', 0.0, 'ndcg@10').mean():.4f} -> "
          f"{values(runs, prior, 'transition', best, 'ndcg@10').mean():.4f})")
    files = sorted({f for pattern in args.test_results for f in glob.glob(pattern)})
    if len(files) != 1:
        raise SystemExit("--test_results: give one file (one model)")
    test = sorted(json.loads(Path(files[0]).read_text()), key=lambda r: int(r["row"]))
    test_prior = priors(args.data_dir, args.category, test, args.decay, split="test")
    for m in METRICS:
        before, after = values([test], [test_prior], "transition", 0.0, m), values([test], [test_prior], "transition", best, m)
        c = paired_bootstrap(before, after, m, 10_000)
        print(f"  test {m}: {before.mean():.4f} -> {after.mean():.4f}, {c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]")
    reranked = []
    for i, record in enumerate(test):
        score = np.asarray(record["scores"], dtype=np.float64) + best * test_prior["transition"][i]
        order = np.argsort(-score, kind="stable")
        new = dict(record)
        for key in ("predict", "predict_item_ids", "predict_titles"):
            if key in record:
                new[key] = [record[key][j] for j in order]
        new["scores"] = [round(float(score[j]), 6) for j in order]
        reranked.append(new)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_results.json").write_text(json.dumps(reranked))
    (out / "rerank.json").write_text(json.dumps({"lambda": best, "decay": args.decay, "valid": args.eval_results,
                                                 "test": files[0]}) + "\n")
    print(f"wrote {out / 'eval_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``baseline``: rank every item with a classic recommender and score it like ``evaluate``.

    python -m rec_lightning baseline --kind popularity --data_dir ../shared/data/Amazon --split test \\
        --num_items 50 --output outputs/popularity
    python -m rec_lightning baseline --kind transition --decay 0.3 ... --output outputs/transition
    python -m rec_lightning baseline --kind sasrec --checkpoint outputs/sasrec/final_checkpoint ... --output outputs/sasrec

``popularity`` and ``transition`` are fit on the train split here (see :mod:`rec_lightning.modules.baselines`);
``sasrec`` loads a ``final_checkpoint/`` trained with ``fit --config configs/sasrec.yaml``. Writes
``eval_results.json`` and ``metrics.json`` with ``evaluate``'s keys and rows, so ``report`` compares a
baseline with any LLM run; prints the same table.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Sequence

from jsonargparse import Namespace

from rec_lightning.commands.arguments import DEFAULT_KS, SuggestingParser, command_parser

log = logging.getLogger(__name__)
KINDS = ("popularity", "transition", "sasrec")


def build_parser() -> SuggestingParser:
    parser = command_parser("baseline", __doc__.splitlines()[0])
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--data_dir", default=None, help="MiniOneRec-layout folder (default: the demo data set)")
    parser.add_argument("--category", default=None, help="file-name category (default: the only one present)")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--num_items", type=int, default=50, help="length of each ranked list (like --num_beams)")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="cut-offs K (<= num_items)")
    parser.add_argument("--output", required=True, help="folder for eval_results.json and metrics.json")
    parser.add_argument("--decay", type=float, default=0.3, help="transition: weight decay**d of the history item "
                        "d steps before the last (0 = last item only)")
    parser.add_argument("--counting", default="per_user", choices=("per_user", "per_window"),
                        help="transition: count each adjacent train pair once per user or once per row")
    parser.add_argument("--checkpoint", default=None, help="sasrec: the final_checkpoint/ folder of its fit")
    parser.add_argument("--batch_size", type=int, default=256, help="rows scored at once")
    parser.add_argument("--limit", type=int, default=None, help="a seeded subset of this many rows (as evaluate)")
    parser.add_argument("--seed", type=int, default=0, help="seed of that subset")
    return parser


def main(argv: Sequence[str]) -> None:
    """Entry point: ``python -m rec_lightning baseline ...``."""
    args = build_parser().parse_args(list(argv))
    if args.num_items < 1 or args.batch_size < 1:
        raise SystemExit("--num_items and --batch_size must be at least 1")
    if args.kind == "sasrec" and args.checkpoint is None:
        raise SystemExit("--kind sasrec needs --checkpoint ROOT/final_checkpoint (train one with "
                         "`python -m rec_lightning fit --config configs/sasrec.yaml`)")
    if args.kind != "sasrec" and args.checkpoint is not None:
        raise SystemExit(f"--checkpoint is for --kind sasrec; {args.kind} is fit on the train split here")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_baseline(args)


def _scorer(args: Namespace, datamodule, num_columns: int):
    """``histories (list of item-id lists) -> [B, V] rank scores, [B, V] scores shown``, and a description."""
    from rec_lightning.modules.baselines import PopularityModel, TransitionModel

    if args.kind == "popularity":
        model = PopularityModel(num_columns).fit(datamodule.records("train"))
        return (lambda histories: (model.scores(histories), None)), "popularity (train targets)"
    if args.kind == "transition":
        model = TransitionModel(num_columns, decay=args.decay, counting=args.counting).fit(datamodule.records("train"))
        return ((lambda histories: (model.scores(histories), model.transition_scores(histories))),
                f"transition (decay {args.decay}, {args.counting})")
    from rec_lightning.data.item_sequences import encode_history
    from rec_lightning.modules.sasrec import check_sasrec_catalog, load_sasrec

    try:
        network, config = load_sasrec(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    check_sasrec_catalog(config, datamodule.catalog, args.checkpoint)

    import torch

    def score(histories):
        ids = torch.tensor([encode_history(h, config["max_history"]) for h in histories], dtype=torch.long)
        return network.score_histories(ids), None

    return score, str(Path(args.checkpoint).resolve())


def run_baseline(args: Namespace) -> dict:
    """Fit or load the baseline, rank every row of the split, write and print the results."""
    from rec_lightning.data.item_sequences import ItemSequenceDataModule
    from rec_lightning.evaluation.item_ranking import RankingResults, SIDRanker
    from rec_lightning.evaluation.ranking import write_results

    datamodule = ItemSequenceDataModule(data_dir=args.data_dir, category=args.category)
    catalog = datamodule.catalog
    ranker = SIDRanker(catalog)
    score, description = _scorer(args, datamodule, ranker.num_columns)
    records = datamodule.records(args.split)
    if args.limit is not None and args.limit < len(records):  # the same subset as evaluate --limit --seed
        chosen = sorted(random.Random(args.seed).sample(range(len(records)), args.limit))
        records = [records[i] for i in chosen]
    results = RankingResults(ranker, args.num_items, args.ks)
    start = time.perf_counter()
    for begin in range(0, len(records), args.batch_size):
        batch = records[begin:begin + args.batch_size]
        histories = [list(r.history_item_ids) for r in batch]
        scores, shown = score(histories)
        results.update(scores, [r.item_id for r in batch], [r.row for r in batch],
                       ["".join(r.history_sids) for r in batch], shown)
    seconds = time.perf_counter() - start
    metrics = results.compute()
    metrics.update(split=args.split, category=datamodule.category, checkpoint=description, processes=1,
                   seconds=round(seconds, 2), users_per_second=round(metrics["count"] / max(seconds, 1e-9), 2),
                   device="cpu", dtype="float32", model=args.kind)
    if args.kind == "transition":
        metrics.update(decay=args.decay, counting=args.counting)
    results_path, metrics_path = write_results(args.output, results.records, metrics)
    _print_table(results.records, metrics, results_path, metrics_path)
    return metrics


def _print_table(records: list, metrics: dict, results_path: Path, metrics_path: Path) -> None:
    from rec_lightning.evaluation.reporting import RunSummary, format_table

    numbers = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    print(format_table([RunSummary(name=f"{metrics['model']} {metrics['split']}", records=records, ranks=[],
                                   metrics=numbers)]))
    print(f"ambiguous targets (SID shared by several items): {metrics['ambiguous_targets']} of {metrics['count']}")
    print(f"wrote {results_path} and {metrics_path}")

"""``evaluate``: constrained beam search metrics of a final checkpoint on a split, on one or more devices.

    python -m rec_lightning evaluate --checkpoint outputs/quickstart/final_checkpoint \\
        --data_dir ../shared/data/Amazon --category Industrial_and_Scientific --split test \\
        --num_beams 50 --output outputs/eval [--devices 8]

Loads an adapter checkpoint (rebuilding its base), a merged export or a full model. With several
devices, Lightning Fabric runs DDP: each process decodes its own rows (no row twice) and the
metrics are summed. Writes ``eval_results.json`` and ``metrics.json`` atomically, prints a table.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from jsonargparse import Namespace

from rec_lightning.commands.arguments import DEFAULT_KS, SuggestingParser, command_parser
from rec_lightning.errors import EmptyResultsError, OutputExistsError
from rec_lightning.files.output_lock import OutputLock

log = logging.getLogger(__name__)


def build_parser() -> SuggestingParser:
    parser = command_parser("evaluate", __doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="final_checkpoint/ folder, export output or HF folder")
    parser.add_argument("--data_dir", default=None, help="MiniOneRec-layout folder (default: the demo data set)")
    parser.add_argument("--category", default=None, help="file-name category (default: the one recorded in the "
                        "checkpoint if the folder holds it, else the only one present)")
    parser.add_argument("--category_name", default=None, help="words used in prompts (default: from the checkpoint "
                        "metadata, else derived from the category)")
    parser.add_argument("--next_item_task", default=None, help="the next-item prompt (default: the one recorded in "
                        "the checkpoint, else sid_history_to_sid)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--num_beams", type=int, default=50)
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="cut-offs K (<= num_beams)")
    parser.add_argument("--renormalize", action="store_true", help="renormalise log-probs over allowed tokens")
    parser.add_argument("--prior", default="none", choices=("none", "transition"),
                        help="re-rank each beam list by log p + prior_weight x log p_transition(SID | history), the "
                        "transition baseline counted on this data's train split (choose the weight on valid)")
    parser.add_argument("--prior_weight", type=str, default="1.0",
                        help="weight of the prior's log-probability, or 'auto': decode the valid split first and keep "
                        "the weight of 0, 0.25, 0.5, 1, 2, 3, 5, 8 with the best valid NDCG@10 (0 unless the prior helps)")
    parser.add_argument("--prior_tune_limit", type=int, default=None,
                        help="with --prior_weight auto: a seeded subset of this many valid rows (default: all)")
    parser.add_argument("--prior_decay", type=float, default=0.3, help="the transition prior's recency decay")
    parser.add_argument("--output", required=True, help="folder for eval_results.json and metrics.json (one run at a "
                        "time; earlier results there need --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace eval_results.json and metrics.json of an "
                        "earlier run in --output")
    parser.add_argument("--batch_size", type=int, default=16, help="prompts per decoding batch, per device")
    parser.add_argument("--max_length", type=int, default=None,
                        help="longest prompt; longer ones drop their oldest history items (default: the training max_length recorded in the "
                             "checkpoint, else 512)")
    parser.add_argument("--limit", type=int, default=None, help="a seeded subset of this many rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of that subset")
    parser.add_argument("--accelerator", default="auto", help="cpu, cuda, auto")
    parser.add_argument("--devices", type=int, default=1, help="processes (GPUs); > 1 runs DDP")
    parser.add_argument("--num_nodes", type=int, default=1)
    parser.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: as saved)")
    return parser


def main(argv: Sequence[str]) -> None:
    """Entry point: ``python -m rec_lightning evaluate ...``."""
    args = build_parser().parse_args(list(argv))
    if args.num_beams < 1 or args.batch_size < 1:
        raise SystemExit("--num_beams and --batch_size must be at least 1")
    args.prior_weight = _prior_weight(args.prior_weight)
    if (args.prior_weight != "auto" and args.prior_weight < 0) or not 0.0 <= args.prior_decay <= 1.0:
        raise SystemExit(f"--prior_weight must be >= 0 or 'auto' (got {args.prior_weight}) and --prior_decay in [0, 1] "
                         f"(got {args.prior_decay}); choose both on the valid split")
    if args.prior_tune_limit is not None and (args.prior_tune_limit < 1 or args.prior_weight != "auto"):
        raise SystemExit("--prior_tune_limit (valid rows to choose the weight on, >= 1) needs --prior_weight auto")
    if args.prior == "none" and args.prior_weight == "auto":
        raise SystemExit("--prior_weight auto chooses the weight of a prior: add --prior transition")
    from lightning.fabric import Fabric
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from rec_lightning.modules.export import read_metadata

    try:
        read_metadata(args.checkpoint)  # fail before starting processes
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    strategy = "ddp" if args.devices * args.num_nodes > 1 else "auto"
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        fabric = Fabric(accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes, strategy=strategy)
        fabric.launch(evaluate, args)  # a worker started by the launcher: the first process holds the lock
        return
    with OutputLock(args.output, "evaluate"):
        check_output(args.output, args.overwrite)
        fabric = Fabric(accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes, strategy=strategy)
        fabric.launch(evaluate, args)


def check_output(output: str, overwrite: bool) -> None:
    """Refuse to mix with (or silently replace) the results of an earlier run in ``output``.

    Raises:
        OutputExistsError: ``eval_results.json`` or ``metrics.json`` is there and ``overwrite`` is off.
    """
    from rec_lightning.evaluation.ranking import existing_results

    found = existing_results(output)
    if found and not overwrite:
        raise OutputExistsError(f"{output} already holds {' and '.join(found)} from an earlier evaluation. Fix: give "
                                "this run another --output, or add --overwrite to replace those files")


def evaluate(fabric, args: Namespace) -> dict:
    """Decode this process's share of the split, then (on rank 0) write and print the results."""
    from rec_lightning.data.datamodule import RecDataModule, demo_data_dir
    from rec_lightning.evaluation.ranking import RankingEvaluator, check_empty_rows, write_results
    from rec_lightning.modules.inference import load_checkpoint

    data_dir = args.data_dir
    if data_dir is None:  # the demo data set, generated once into the cache by the first process
        data_dir = str(demo_data_dir(create=fabric.is_global_zero))
    fabric.barrier()
    loaded = load_checkpoint(args.checkpoint, data_dir=data_dir, category=args.category,
                             category_name=args.category_name, next_item_task=args.next_item_task,
                             max_length=args.max_length, dtype=args.dtype, device=fabric.device)
    model, tokenizer, catalog = loaded.model, loaded.tokenizer, loaded.catalog
    datamodule = RecDataModule(data_dir=data_dir, tokenizer=str(args.checkpoint), eval_batch_size=args.batch_size,
                               **loaded.settings.as_dict())
    datamodule.use_tokenizer(tokenizer)  # the checkpoint's, loaded once
    evaluator = RankingEvaluator(catalog, tokenizer.get_vocab(), tokenizer.eos_token_id, args.num_beams, args.ks,
                                 args.renormalize, keep_predictions=True).to(fabric.device)
    prior = None
    if args.prior == "transition":
        from rec_lightning.modules.transition_prior import TransitionPrior

        auto = args.prior_weight == "auto"
        prior = TransitionPrior(datamodule.records("train"), catalog, evaluator.item_to_key, len(evaluator.trie.keys),
                                0.0 if auto else args.prior_weight, args.prior_decay)
        if auto:
            prior.choice = _choose_prior_weight(fabric, model, datamodule, tokenizer, catalog, prior, args)
            prior.weight = prior.choice["weight"]
        evaluator.rerank = prior
    loader = datamodule.generation_dataloader(args.split, limit=args.limit, seed=args.seed)
    start = time.perf_counter()
    for number, batch in enumerate(loader, start=1):
        evaluator.update(model, fabric.to_device(batch))
        if fabric.is_global_zero and number % 20 == 0:
            log.info("rank 0: %d/%d batches, %.1f rows/s", number, len(loader),
                     number * args.batch_size / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    metrics = evaluator.compute()
    examples = loader.dataset.examples  # dataset index -> example (what batch['index'] refers to)
    records = evaluator.records([e.prompt for e in examples], [e.row for e in examples])
    metrics.update(split=args.split, category=datamodule.category, checkpoint=str(Path(args.checkpoint).resolve()),
                   processes=fabric.world_size, seconds=round(seconds, 2),
                   users_per_second=round(metrics["count"] / max(seconds, 1e-9), 2),
                   device=str(fabric.device), dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
                   prior=None if prior is None else prior.settings())
    if fabric.is_global_zero:
        empty_error = None
        try:
            check_empty_rows(records, metrics)  # more than EMPTY_ROWS_LIMIT of the rows empty: exit 1
        except EmptyResultsError as err:
            empty_error = err
        results_path, metrics_path = write_results(args.output, records, metrics)
        _print_table(records, metrics, results_path, metrics_path)
        if empty_error is not None:
            raise empty_error
    fabric.barrier()
    return metrics


def _prior_weight(value: str | float) -> str | float:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"--prior_weight must be a number >= 0 or 'auto' (got {value!r})") from None


def _choose_prior_weight(fabric, model, datamodule, tokenizer, catalog, prior, args: Namespace) -> dict:
    """``--prior_weight auto``: decode the valid split (every process its share), then keep the grid weight whose
    re-ranked lists have the best NDCG@10 over all of its rows; the same choice on every process."""
    from rec_lightning.evaluation.ranking import RankingEvaluator
    from rec_lightning.modules.transition_prior import WEIGHT_GRID, choose_prior_weight, prior_weight_ndcg

    if args.split == "valid":
        log.warning("--prior_weight auto chooses the weight on the valid split: the valid metrics below are tuned on "
                    "their own rows (report the test split)")
    tuner = RankingEvaluator(catalog, tokenizer.get_vocab(), tokenizer.eos_token_id, args.num_beams, args.ks,
                             args.renormalize, keep_predictions=True).to(fabric.device)
    loader = datamodule.generation_dataloader("valid", limit=args.prior_tune_limit, seed=args.seed)
    for batch in loader:
        tuner.update(model, fabric.to_device(batch))
    predictions = tuner.gathered_predictions()
    examples = loader.dataset.examples
    histories = [examples[index].history_item_ids for index in predictions["index"].tolist()]
    targets = tuner.target_keys(predictions["target_item_id"])
    ndcg = prior_weight_ndcg(prior, predictions["items"], predictions["scores"], histories, targets, WEIGHT_GRID)
    weight = choose_prior_weight(ndcg, WEIGHT_GRID)
    if fabric.is_global_zero:
        log.info("prior weight chosen on %d valid rows (NDCG@10 after re-ranking): %s -> %s", len(histories),
                 ", ".join(f"{w:g}: {v:.4f}" for w, v in zip(WEIGHT_GRID, ndcg)), weight)
    return {"weight": weight, "split": "valid", "rows": len(histories), "metric": "ndcg@10",
            "by_weight": {f"{w:g}": round(v, 6) for w, v in zip(WEIGHT_GRID, ndcg)}}


def _print_table(records: list, metrics: dict, results_path: Path, metrics_path: Path) -> None:
    from rec_lightning.evaluation.reporting import RunSummary, format_table

    numbers = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    summary = RunSummary(name=metrics["split"], records=records, ranks=[], metrics=numbers)
    print(format_table([summary]))
    print(f"rows with no item from decoding: {metrics.get('empty_rows', 0)} of {metrics['count']}")
    print(f"ambiguous targets (SID shared by several items): {metrics['ambiguous_targets']} of {metrics['count']}; "
          f"{metrics['users_per_second']} users/s on {metrics['processes']} x {metrics['device']}")
    print(f"wrote {results_path} and {metrics_path}")

"""``recommend``: the top items for one or more histories from a final checkpoint, with titles.

    python -m rec_lightning recommend --checkpoint outputs/quickstart/final_checkpoint --history 12,7,301 [--k 10]

A history is comma-separated item ids, SIDs or exact titles, oldest first; repeat ``--history`` for
more users. The items come from the catalog the checkpoint carries (``item_catalog.json``), so no data
folder is needed; ``--data_dir``/``--category`` use the data the model was trained on instead (checked
against the checkpoint's SID index; needed for checkpoints written before they carried their catalog).
``--json FILE`` also writes the rankings (atomically). ``--prior transition --prior_weight W`` re-ranks the beams
as ``evaluate --prior`` does (the transition counts of ``--data_dir``'s train split; choose ``W`` on valid).
"""

from __future__ import annotations

from typing import Sequence

from rec_lightning.commands.arguments import SuggestingParser, command_parser


def build_parser() -> SuggestingParser:
    parser = command_parser("recommend", __doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="final_checkpoint/ folder, export output or HF folder")
    parser.add_argument("--history", action="append", required=True,
                        help="comma-separated item ids, SIDs or titles, oldest first (repeat for more users)")
    parser.add_argument("--k", type=int, default=10, help="items shown per user (default: 10)")
    parser.add_argument("--num_beams", type=int, default=None, help="beam width (default: --k)")
    parser.add_argument("--data_dir", default=None, help="MiniOneRec-layout folder the model was trained on (default: the "
                        "catalog the checkpoint carries; required for checkpoints without item_catalog.json)")
    parser.add_argument("--category", default=None, help="file-name category (default: the checkpoint's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: as saved)")
    parser.add_argument("--json", default=None, help="also write the rankings to this JSON file")
    parser.add_argument("--prior", default="none", choices=("none", "transition"),
                        help="re-rank the beams with the transition baseline's probabilities (needs --data_dir)")
    parser.add_argument("--prior_weight", type=float, default=1.0, help="weight of the prior's log-probability")
    parser.add_argument("--prior_decay", type=float, default=0.3, help="the transition prior's recency decay")
    return parser


def split_history(text: str) -> list[str]:
    """``"12, 7,301"`` -> ``["12", "7", "301"]``; empty entries are an error."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise SystemExit(f"--history {text!r}: expected comma-separated item ids, SIDs or titles with no empty "
                         "entry, e.g. --history 12,7,301")
    return parts


def _train_records(args, catalog) -> list:
    from rec_lightning.files.layout import available_categories
    from rec_lightning.data.records import load_rec_data

    categories = [args.category] if args.category else available_categories(args.data_dir)
    if len(categories) != 1:
        raise SystemExit(f"{args.data_dir} holds categories {categories}: choose one with --category")
    return load_rec_data(args.data_dir, categories[0], splits=("train",), catalog=catalog).splits["train"]


def main(argv: Sequence[str]) -> None:
    """Entry point: ``python -m rec_lightning recommend ...``."""
    args = build_parser().parse_args(list(argv))
    histories = [split_history(text) for text in args.history]
    if args.prior != "none" and (args.data_dir is None or args.prior_weight < 0 or not 0 <= args.prior_decay <= 1):
        raise SystemExit("--prior transition counts the train split of --data_dir (give the folder the model was "
                         "trained on), with --prior_weight >= 0 and --prior_decay in [0, 1]")
    from rec_lightning.modules.export import CheckpointMismatchError
    from rec_lightning.recommend import Recommender, UnknownItemError

    try:
        recommender = Recommender.from_checkpoint(args.checkpoint, data_dir=args.data_dir, category=args.category,
                                                  device=args.device, dtype=args.dtype)
        if args.prior == "transition":
            recommender.use_transition_prior(_train_records(args, recommender.catalog), args.prior_weight,
                                             args.prior_decay)
        results = recommender.recommend(histories, k=args.k, num_beams=args.num_beams)
    except (FileNotFoundError, CheckpointMismatchError, UnknownItemError, ValueError) as err:
        raise SystemExit(str(err)) from None
    catalog = recommender.catalog
    for user, result in enumerate(results):
        history = ", ".join(f"{i} \"{catalog.title_of(i)}\"" for i in result.history_item_ids)
        print(f"user {user}: history {history}")
        print(f"  {'rank':>4}  {'item':>7}  {'sid':<24}{'score':>10}  title")
        for row in result.rows():
            print(f"  {row['rank']:>4}  {row['item_id']:>7}  {row['sid']:<24}{row['score']:>10.4f}  {row['title']}")
    if args.json:
        from rec_lightning.files.atomic import write_json_atomic

        payload = [{"history_item_ids": list(r.history_item_ids), "recommendations": r.rows()} for r in results]
        print(f"wrote {write_json_atomic(args.json, payload)}")

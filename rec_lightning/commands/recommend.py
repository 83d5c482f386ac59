"""``recommend``: the top items for one or more histories from a final checkpoint, with titles.

    python -m rec_lightning recommend --checkpoint outputs/quickstart/final_checkpoint --history 12,7,301 [--k 10]

A history is comma-separated item ids, SIDs or exact titles, oldest first; repeat ``--history`` for
more users. The items come from the catalog the checkpoint carries (``item_catalog.json``), so no data
folder is needed; ``--data_dir``/``--category`` use the data the model was trained on instead (checked
against the checkpoint's SID index; needed for checkpoints written before they carried their catalog).
``--json FILE`` also writes the rankings (atomically).
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
    return parser


def split_history(text: str) -> list[str]:
    """``"12, 7,301"`` -> ``["12", "7", "301"]``; empty entries are an error."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise SystemExit(f"--history {text!r}: expected comma-separated item ids, SIDs or titles with no empty "
                         "entry, e.g. --history 12,7,301")
    return parts


def main(argv: Sequence[str]) -> None:
    """Entry point: ``python -m rec_lightning recommend ...``."""
    args = build_parser().parse_args(list(argv))
    histories = [split_history(text) for text in args.history]
    from rec_lightning.modules.export import CheckpointMismatchError
    from rec_lightning.recommend import Recommender, UnknownItemError

    try:
        recommender = Recommender.from_checkpoint(args.checkpoint, data_dir=args.data_dir, category=args.category,
                                                  device=args.device, dtype=args.dtype)
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

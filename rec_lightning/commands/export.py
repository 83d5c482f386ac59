"""``export``: turn a ``final_checkpoint/`` into a plain Hugging Face model folder or a portable adapter.

``--merge`` folds the adapter into the base weights: the output is a plain HF model folder that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load without
rec_lightning or peft. Without it, an adapter checkpoint becomes a portable PEFT adapter that also
holds the resized embedding matrices (plain PEFT loads it onto a base resized with
``resize_token_embeddings``); a full-model checkpoint becomes a plain HF folder either way.
"""

from __future__ import annotations

from pathlib import Path

from rec_lightning.commands.arguments import command_parser
from rec_lightning.errors import OutputExistsError


def check_output(checkpoint: str | Path, output: str | Path, overwrite: bool) -> None:
    """Refuse an output that is, holds or sits inside the input, or a non-empty folder without ``overwrite``.

    Even with ``overwrite`` only an earlier export (``rec_lightning.json`` with ``exported_from``, or
    the marker file) is replaced: never a run folder, a data folder or anything else export did not write.

    Raises:
        OutputExistsError: with the fix.
    """
    from rec_lightning.modules.export import EXPORT_MARKER

    source, target = Path(checkpoint).resolve(), Path(output).resolve()
    if target == source or target in source.parents or source in target.parents:
        raise OutputExistsError(f"--output {output} is the checkpoint folder {checkpoint}, holds it or lies inside it: "
                                "exporting there would delete the input. Fix: choose an output folder outside the run, "
                                "e.g. exports/my_model")
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not target.is_dir():
        raise OutputExistsError(f"--output {output} is a file. Fix: choose a folder path")
    if not overwrite:
        raise OutputExistsError(f"--output {output} already exists and is not empty. Fix: choose a new folder, or add "
                                "--overwrite to replace an earlier export there")
    if not (target / EXPORT_MARKER).is_file():
        shown = ", ".join(sorted(p.name for p in target.iterdir())[:5])
        raise OutputExistsError(f"--output {output} holds files export did not write ({shown}); --overwrite only "
                                "replaces an earlier export. Fix: choose a new or empty folder")


def export(checkpoint: str, output: str, merge: bool = False, dtype: str | None = None,
           overwrite: bool = False, portable: bool = False) -> str:
    """Export ``checkpoint`` to ``output``; returns a one-line description of what was written.

    ``portable`` (the default when not ``merge``) writes the adapter with its embedding matrices.

    Raises:
        SystemExit: the folder is not a checkpoint, or does not fit its base/tokenizer (with the fix).
        OutputExistsError: see :func:`check_output`.
    """
    from rec_lightning.modules.export import (CheckpointMismatchError, export_merged, export_portable_adapter,
                                              read_metadata)

    if merge and portable:
        raise SystemExit("--merge and --portable exclude each other: --merge writes a plain HF model, --portable a "
                         "PEFT adapter for the original base. Fix: pass one of them")
    check_output(checkpoint, output, overwrite)
    try:
        if merge:
            written = export_merged(checkpoint, output, dtype=dtype)
        else:
            written = export_portable_adapter(checkpoint, output)
    except (CheckpointMismatchError, FileNotFoundError) as err:
        raise SystemExit(str(err)) from None
    metadata = read_metadata(written) or {}
    kind = "PEFT adapter with embedding matrices" if metadata.get("format") == "adapter" else "Hugging Face model"
    return f"wrote a {kind} to {written}"


def main(argv: list[str]) -> None:
    parser = command_parser("export", __doc__.split("\n\n")[1])
    parser.add_argument("--checkpoint", required=True, help="the final_checkpoint/ folder written at the end of fit")
    parser.add_argument("--output", required=True, help="new or empty folder to write (outside the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output (never "
                        "anything export did not write)")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the weights (plain HF model)")
    parser.add_argument("--portable", action="store_true", help="(the default without --merge) a PEFT adapter with "
                        "the resized embedding matrices: PeftModel.from_pretrained loads it onto the original base "
                        "after base.resize_token_embeddings(rows); rows and recipe are in its README.md")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weight dtype of the exported model (default: as trained)")
    args = parser.parse_args(argv)
    print(export(args.checkpoint, args.output, args.merge, args.dtype, args.overwrite, args.portable))

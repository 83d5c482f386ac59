"""``export``: turn a ``final_checkpoint/`` into a plain Hugging Face model folder or a portable adapter.

``--merge`` folds the adapter into the base weights: the output is a plain HF model folder that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load without
rec_lightning or peft. Without it, an adapter checkpoint becomes a portable PEFT adapter that also
holds the resized embedding matrices (plain PEFT loads it onto a base resized with
``resize_token_embeddings``); a full-model checkpoint becomes a plain HF folder either way.
"""

from __future__ import annotations

import argparse


def export(checkpoint: str, output: str, merge: bool = False, dtype: str | None = None) -> str:
    """Export ``checkpoint`` to ``output``; returns a one-line description of what was written.

    Raises:
        SystemExit: the folder is not a checkpoint, or does not fit its base/tokenizer (with the fix).
    """
    from rec_lightning.modules.export import (CheckpointMismatchError, export_merged, export_portable_adapter,
                                              read_metadata)

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
    parser = argparse.ArgumentParser(prog="python -m rec_lightning export", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the final_checkpoint/ folder written at the end of fit")
    parser.add_argument("--output", required=True, help="folder to write (replaced atomically if it exists)")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the weights (plain HF model)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weight dtype of the exported model (default: as trained)")
    args = parser.parse_args(argv)
    print(export(args.checkpoint, args.output, args.merge, args.dtype))

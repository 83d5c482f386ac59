"""The ``README.md`` model card of an adapter folder: which base it expects and how to load it.

PEFT's own card is an empty template. Ours records the base model, the number of embedding rows
the adapter expects (the base's vocabulary plus the SID tokens, padded to a multiple of 64) and
the loading recipes, because plain ``PeftModel.from_pretrained`` onto a base without those rows fails
with a bare ``IndexError`` inside PEFT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CARD_FILE = "README.md"


def base_model_of(metadata: dict[str, Any]) -> str | None:
    """The hub id or folder the adapter was trained on; None for a base built from a config."""
    return (metadata.get("backbone") or {}).get("model_name_or_path")


def adapter_card(metadata: dict[str, Any], directory_name: str = "ADAPTER_DIR") -> str:
    """The card text for an adapter folder described by ``metadata`` (``rec_lightning.json``)."""
    base = base_model_of(metadata)
    rows = metadata["embedding_rows"]
    portable = bool(metadata.get("embedding_layers_saved"))
    base_line = f"`{base}`" if base else "built from a config (random weights), saved beside this card in `base/`"
    load_base = f'"{base}"' if base else f'"{directory_name}/base"'
    front = ["---", f"base_model: {base}" if base else "base_model: null", "library_name: peft",
             "pipeline_tag: text-generation", "tags:", "- rec_lightning", "- lora", "- generative-recommendation",
             "---", ""]
    body = [
        "# rec_lightning adapter", "",
        f"- **Base model:** {base_line}",
        f"- **Embedding rows expected:** {rows} (tokenizer of {metadata['tokenizer_size']} tokens, incl. "
        f"{len(metadata['sid_tokens'])} SID tokens; rows padded to a multiple of 64)",
        f"- **Fine-tuning:** {(metadata.get('finetune') or {}).get('mode', 'lora')}",
        f"- **Embedding matrices included:** {'yes (portable)' if portable else 'no (SID rows only)'}",
        "- The extended tokenizer is saved in this folder: load it from here, not from the base.", "",
        "## Load with rec_lightning", "",
        "```python", "from rec_lightning import Recommender",
        f'recommender = Recommender.from_checkpoint("{directory_name}")', "```", "",
        "## Load with plain PEFT", "",
        f"The base must first have {rows} embedding rows; without them PEFT fails with a bare `IndexError`.", "",
        "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"base = AutoModelForCausalLM.from_pretrained({load_base})",
        f"base.resize_token_embeddings({rows})",
        f'model = PeftModel.from_pretrained(base, "{directory_name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{directory_name}")', "```", "",
    ]
    if portable:
        body.append("This folder holds the full resized embedding matrices, so the result is exact whatever "
                    "the resize initialised the new rows to.")
    else:
        body.append("This folder holds only the SID rows: their logits are exact, the padding rows keep what "
                    "`resize_token_embeddings` put there. For an exact plain-PEFT adapter run "
                    f"`python -m rec_lightning export --checkpoint {directory_name} --output DIR --portable`.")
    return "\n".join(front + body) + "\n"


def write_adapter_card(directory: str | Path, metadata: dict[str, Any], shown_name: str | None = None) -> Path:
    """Replace PEFT's template ``README.md`` in ``directory`` with :func:`adapter_card`; returns its path.

    ``shown_name`` is the folder name the card's code uses (the final name when ``directory`` is a staging one).
    """
    path = Path(directory) / CARD_FILE
    path.write_text(adapter_card(metadata, shown_name or str(directory)), encoding="utf-8")
    return path

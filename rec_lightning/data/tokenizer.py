"""Tokenizers: load one from the hub or a folder, or train a byte-level BPE on a data set's own text.

Either way the catalog's SID tokens are then added as ordinary added tokens (one id each, in
``catalog.sid_tokens`` order) and EOS/pad are guaranteed. A trained tokenizer is cached in a
folder keyed by a hash of its training text and settings, written atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from rec_lightning.prompts import TEMPLATES
from rec_lightning.sid import ItemCatalog

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def training_texts(catalog: ItemCatalog, category_name: str) -> list[str]:
    """Text a data set's tokenizer learns from: item titles, descriptions and the prompt frames."""
    frames = [t.render(history_sids="", history_titles="", category=category_name, sid="", title="") for t in TEMPLATES.values()]
    return frames * 50 + [item.title for item in catalog] + [item.description for item in catalog if item.description]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train a byte-level BPE (GPT-2 style) with ``<|endoftext|>`` as EOS and ``<|pad|>`` as pad.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def cached_data_tokenizer(catalog: ItemCatalog, category_name: str, cache_root: str | Path, vocab_size: int = 4096):
    """Train (once) and load the data set's tokenizer from ``cache_root/<hash>``."""
    from transformers import AutoTokenizer

    texts = training_texts(catalog, category_name)
    digest = hashlib.sha256(("\n".join(texts) + f"|{vocab_size}|v1").encode()).hexdigest()[:16]
    folder = Path(cache_root) / f"bpe-{vocab_size}-{digest}"
    if not (folder / "tokenizer.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tokenizer.", dir=folder.parent)
        train_bpe_tokenizer(texts, vocab_size).save_pretrained(staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process won the race; its copy is identical
            pass
    return AutoTokenizer.from_pretrained(str(folder))


def load_tokenizer(name_or_path: str):
    """Load a tokenizer from a hub id or local folder (honours ``HF_HUB_OFFLINE``/``HF_ENDPOINT``)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise OSError(f"could not load the tokenizer {name_or_path!r}: {err}\nFix: pass a local folder, or set "
                      "HF_ENDPOINT to a reachable mirror; in offline mode (HF_HUB_OFFLINE=1) the model must be "
                      "in the local cache") from err


def add_sid_tokens(tokenizer, sid_tokens: Sequence[str]) -> list[int]:
    """Add SID tokens as ordinary tokens (idempotent), set pad = EOS if there is no pad.

    Returns:
        The token ids of ``sid_tokens``, in order; each SID token maps to exactly one id.

    Raises:
        ValueError: the tokenizer has no EOS token, or a SID token does not map to a single id.
    """
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token (the response terminator)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab = tokenizer.get_vocab()
    tokenizer.add_tokens([token for token in sid_tokens if token not in vocab])
    ids = tokenizer.convert_tokens_to_ids(list(sid_tokens))
    joined = "".join(sid_tokens[:3])
    if tokenizer(joined, add_special_tokens=False)["input_ids"] != ids[:3]:
        raise ValueError(f"SID tokens do not tokenize to one id each ({joined!r}); the tokenizer must "
                         "treat added tokens as atomic")
    return ids

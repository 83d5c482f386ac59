"""Tokenizers: load one from the hub or a folder, or train a byte-level BPE on a data set's own text;
save one so that it reloads as the identical pipeline.

Either way the catalog's SID tokens are then added as ordinary added tokens (one id each, in
``catalog.sid_tokens`` order) and EOS/pad are guaranteed. A trained tokenizer is cached in a
folder keyed by a hash of its training text and settings, written atomically.

A trained tokenizer is a :class:`Qwen2Tokenizer` (Qwen2.5's normaliser, pre-tokenizer regex and
byte-level decoder, with a vocabulary and merges learned from the data), not a generic
``PreTrainedTokenizerFast``: ``AutoTokenizer`` rebuilds the tokenizer of any folder whose
``config.json`` says ``model_type: qwen2`` as a ``Qwen2Tokenizer`` whatever its ``tokenizer.json``
says, so a generic pipeline silently came back different after a save (``"?\n\n###"`` as one
``\n\n`` token instead of two ``\n``). :func:`save_tokenizer` records the ids of a probe set and
:func:`load_tokenizer` checks a reloaded tokenizer against them, so a drift fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from rec_lightning.errors import ConfigurationError, RecLightningError
from rec_lightning.prompts import TEMPLATES
from rec_lightning.sids.codec import ItemCatalog

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
#: Written beside a saved tokenizer: probe strings and the ids they had when it was saved.
CHECK_FILE = "tokenizer_check.json"


class TokenizerMismatchError(RecLightningError, ValueError):
    """A tokenizer reloaded from a folder does not tokenize as the one that was saved there."""


def training_texts(catalog: ItemCatalog, category_name: str) -> list[str]:
    """Text a data set's tokenizer learns from: item titles, descriptions and the prompt frames."""
    frames = [t.render(history_sids="", history_titles="", category=category_name, sid="", title="")
              for t in TEMPLATES.values() if t.framed]
    return frames * 50 + [item.title for item in catalog] + [item.description for item in catalog if item.description]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train a byte-level BPE in Qwen2.5's pipeline with ``<|endoftext|>`` as EOS and ``<|pad|>`` as pad.

    The normaliser (NFC), pre-tokenizer (Qwen2's split regex, then bytes) and decoder are exactly
    those :class:`Qwen2Tokenizer` builds, so the tokenizer reloads identically through
    ``AutoTokenizer`` next to a Qwen2 model (see the module docstring).

    Returns:
        A ``transformers`` ``Qwen2Tokenizer``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(pair) for pair in model["merges"]], unk_token=None,
                          eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def cached_data_tokenizer(catalog: ItemCatalog, category_name: str, cache_root: str | Path, vocab_size: int = 4096):
    """Train (once) and load the data set's tokenizer from ``cache_root/<hash>``."""
    texts = training_texts(catalog, category_name)
    digest = hashlib.sha256(("\n".join(texts) + f"|{vocab_size}|qwen2-v2").encode()).hexdigest()[:16]
    folder = Path(cache_root) / f"bpe-{vocab_size}-{digest}"
    if not (folder / CHECK_FILE).exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tokenizer.", dir=folder.parent)
        save_tokenizer(train_bpe_tokenizer(texts, vocab_size), staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process won the race; its copy is identical
            pass
    return load_tokenizer(folder)


def load_tokenizer(name_or_path: str | Path, verify: bool = True):
    """Load a tokenizer from a hub id or local folder (honours ``HF_HUB_OFFLINE``/``HF_ENDPOINT``).

    A folder written by :func:`save_tokenizer` is checked against the ids recorded when it was saved
    (``verify=False`` leaves that to the caller: :func:`verify_saved_tokenizer`).

    Raises:
        OSError: the tokenizer cannot be found, with what to do.
        TokenizerMismatchError: the reloaded tokenizer tokenizes differently from the saved one.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise OSError(f"could not load the tokenizer {str(name_or_path)!r}: {err}\nFix: pass a local folder, or set "
                      "HF_ENDPOINT to a reachable mirror; in offline mode (HF_HUB_OFFLINE=1) the model must be "
                      "in the local cache") from err
    if verify:
        verify_saved_tokenizer(tokenizer, name_or_path)
    return tokenizer


def verify_saved_tokenizer(tokenizer, folder: str | Path) -> None:
    """Check ``tokenizer`` against the record :func:`save_tokenizer` left in ``folder`` (if there is one)."""
    check = Path(folder) / CHECK_FILE
    if check.is_file():
        verify_tokenizer(tokenizer, json.loads(check.read_text()), source=str(folder))


def tokenizer_probes(sid_tokens: Sequence[str] = ()) -> list[str]:
    """Strings whose ids pin a tokenizer's pipeline: every prompt frame with SIDs and titles filled in,
    and the spots where pipelines differ (runs of newlines, spaces, digits, Unicode normalisation)."""
    levels: dict[str, list[str]] = {}
    for token in sid_tokens:
        levels.setdefault(token[:3], []).append(token)
    first = "".join(tokens[0] for tokens in levels.values())
    last = "".join(tokens[-1] for tokens in levels.values())
    fields = {"history_sids": f"{first}, {last}{first}", "history_titles": '"Caf\u00e9 12-Pack, 3/8\\" Drill", "T\u00fcv"',
              "category": "industrial and scientific items", "sid": first, "title": "Ca\u0301fe\u0301 Tool (2 pcs)"}
    frames = [template.render(**fields) for template in TEMPLATES.values()]
    edges = ["?\n\n###", "a\n\n\nb  c   d\t\te", "1234567 89.5mm", "e\u0301 \u00e9 \ufb01 \u2163 \u00bd",
             "\U0001f527 \u4e2d\u6587 \u0440\u0443\u0441", f" {first} {last}\n"]
    return frames + edges


def _probe_record(tokenizer, probes: Sequence[str]) -> dict:
    return {"probes": list(probes),
            "ids": [tokenizer(text, add_special_tokens=True)["input_ids"] for text in probes],
            "size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def verify_tokenizer(tokenizer, record: dict, source: str = "the saved tokenizer") -> None:
    """Raise unless ``tokenizer`` gives the ids of ``record`` (from :func:`save_tokenizer`).

    Raises:
        TokenizerMismatchError: naming the first probe that differs and both id lists.
    """
    found = _probe_record(tokenizer, record["probes"])
    for key in ("size", "eos_token_id", "pad_token_id"):
        if found[key] != record[key]:
            raise TokenizerMismatchError(
                f"{source}: the reloaded tokenizer ({type(tokenizer).__name__}) has {key} {found[key]}, but "
                f"{record[key]} when it was saved: the tokenizer files were replaced, or this transformers version "
                "reads them differently. Fix: restore the folder's tokenizer files from the training run, or load "
                "it with the transformers version it was saved with")
    for text, expected, ids in zip(record["probes"], record["ids"], found["ids"]):
        if ids != expected:
            raise TokenizerMismatchError(
                f"{source}: the reloaded tokenizer ({type(tokenizer).__name__}) tokenizes {text[:60]!r} as "
                f"{ids[:12]}..., but as {expected[:12]}... when it was saved, so prompts would not match training "
                "and metrics would be wrong. Fix: load the tokenizer with "
                "rec_lightning.data.tokenizer.load_tokenizer (AutoTokenizer picked another class), or re-save it "
                "with the transformers version it was trained with")


def save_tokenizer(tokenizer, directory: str | Path, sid_tokens: Sequence[str] = ()) -> None:
    """``save_pretrained`` plus a record of probe ids, then prove the folder reloads to the same pipeline.

    Call it after everything else of the folder is written (``AutoTokenizer`` picks the tokenizer class
    from ``config.json``, when there is one).

    Raises:
        TokenizerMismatchError: ``AutoTokenizer.from_pretrained(directory)`` tokenizes differently.
    """
    directory = Path(directory)
    tokenizer.save_pretrained(str(directory))
    record = _probe_record(tokenizer, tokenizer_probes(sid_tokens))
    (directory / CHECK_FILE).write_text(json.dumps(record, ensure_ascii=False) + "\n")
    load_tokenizer(directory)


def add_sid_tokens(tokenizer, sid_tokens: Sequence[str]) -> list[int]:
    """Add SID tokens as ordinary tokens (idempotent), set pad = EOS if there is no pad.

    Returns:
        The token ids of ``sid_tokens``, in order; each SID token maps to exactly one id.

    Raises:
        ValueError: the tokenizer has no EOS token, or a SID token does not map to a single id.
    """
    if tokenizer.eos_token is None:
        raise ConfigurationError("the tokenizer has no EOS token; set tokenizer.eos_token (the response terminator)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab = tokenizer.get_vocab()
    tokenizer.add_tokens([token for token in sid_tokens if token not in vocab])
    ids = tokenizer.convert_tokens_to_ids(list(sid_tokens))
    joined = "".join(sid_tokens[:3])
    if tokenizer(joined, add_special_tokens=False)["input_ids"] != ids[:3]:
        raise ConfigurationError(f"SID tokens do not tokenize to one id each ({joined!r}); the tokenizer must "
                         "treat added tokens as atomic")
    return ids

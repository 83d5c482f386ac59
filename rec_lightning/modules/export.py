"""Final checkpoints: write them (PEFT adapter or full model + tokenizer + metadata) and load them back.

A ``final_checkpoint/`` folder is either

* ``adapter``: a PEFT adapter (LoRA weights and SID rows only), the extended tokenizer and
  ``rec_lightning.json``. The base is rebuilt from the recorded hub id or folder and resized
  deterministically; a base built from a config (random weights) is saved beside it in ``base/``.
* ``full``: a plain Hugging Face model folder (full fine-tuning, or a merged export).

``rec_lightning.json`` records the base, the fine-tuning options, the vocabulary and the SID index
checksum, so loading onto a different vocabulary or SID index fails with a message that says what
to do instead of producing silently wrong rankings.

``item_catalog.json`` carries the item catalog the model was trained on (SID index, titles, checksum),
so inference needs no data folder (:func:`read_item_catalog`). Checkpoints written before it existed
have none: they need the data folder they were trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

import rec_lightning
from rec_lightning.data.tokenizer import load_tokenizer, save_tokenizer, verify_saved_tokenizer
from rec_lightning.errors import CorruptFileError, DataValidationError, OutputExistsError, RecLightningError
from rec_lightning.files.atomic import write_json_atomic
from rec_lightning.modules.adapter_card import write_adapter_card
from rec_lightning.modules.backbone import BackboneOptions, add_sid_tokens, build_backbone
from rec_lightning.modules.lora import base_without_adapter, is_adapter_model, load_adapter, merge_adapter, save_adapter

METADATA_FILE = "rec_lightning.json"
#: The item catalog (SID index, titles, checksum) a final checkpoint carries, so inference needs no data folder.
CATALOG_FILE = "item_catalog.json"
CATALOG_FORMAT = "rec_lightning.item_catalog/1"
#: Written into every ``export`` output: ``export --overwrite`` replaces only folders holding it.
EXPORT_MARKER = ".rec_lightning_export"
BASE_DIR = "base"


class CheckpointMismatchError(RecLightningError, ValueError):
    """A checkpoint does not fit the base model, tokenizer or SID index it is being combined with."""


def build_metadata(backbone: BackboneOptions, finetune: dict[str, Any], tokenizer, sid_tokens: list[str],
                   sid_token_ids: list[int], embedding_rows: int, sid_index_checksum: str | None,
                   **extra: Any) -> dict[str, Any]:
    """The content of ``rec_lightning.json`` (``format`` and ``base_dir`` are added when saving)."""
    return {
        "library": "rec_lightning",
        "version": rec_lightning.__version__,
        "backbone": asdict(backbone),
        "finetune": finetune,
        "tokenizer_size": len(tokenizer),
        "embedding_rows": int(embedding_rows),
        "sid_tokens": list(sid_tokens),
        "sid_token_ids": [int(i) for i in sid_token_ids],
        "sid_index_checksum": sid_index_checksum,
        **extra,
    }


def save_final_checkpoint(model, tokenizer, output_dir: str | Path, metadata: dict[str, Any],
                          with_embeddings: bool = False, catalog=None) -> Path:
    """Write ``output_dir`` atomically (staged beside it, then renamed into place).

    Args:
        model: the trained model (a PEFT model in ``lora``/``freeze_lm`` modes, else a plain one).
        tokenizer: the extended tokenizer.
        output_dir: the folder to (re)create.
        metadata: from :func:`build_metadata`.
        with_embeddings: also store the full resized embedding matrices in the adapter (portable to
            plain PEFT; about ``2 x vocab x hidden`` more bytes).
        catalog: the :class:`~rec_lightning.sids.codec.ItemCatalog` the model was trained on, written as
            ``item_catalog.json`` (its checksum must be the metadata's ``sid_index_checksum``).

    Returns:
        ``output_dir`` as a Path.
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        metadata = dict(metadata)
        if is_adapter_model(model):
            save_adapter(model, staging, with_embeddings=with_embeddings)
            metadata["format"] = "adapter"
            metadata["embedding_layers_saved"] = with_embeddings
            metadata["base_dir"] = None
            if BackboneOptions(**metadata["backbone"]).from_scratch:
                _save_plain(base_without_adapter(model), staging / BASE_DIR)
                metadata["base_dir"] = BASE_DIR
            write_adapter_card(staging, metadata, shown_name=str(output_dir))
        else:
            _save_plain(model, staging)
            metadata["format"] = "full"
            metadata["base_dir"] = None
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if catalog is not None:
            write_item_catalog(staging, catalog, metadata.get("sid_index_checksum"))
        if "exported_from" in metadata:
            (staging / EXPORT_MARKER).write_text(metadata["exported_from"] + "\n")
        save_tokenizer(tokenizer, staging, metadata["sid_tokens"])  # last: proves the folder reloads it identically
        _replace_dir(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _save_plain(model, directory: Path) -> None:
    """``save_pretrained`` with ``use_cache`` on (training turns it off; inference wants it)."""
    use_cache = model.config.use_cache
    model.config.use_cache = True
    try:
        model.save_pretrained(str(directory))
    finally:
        model.config.use_cache = use_cache


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap ``staging`` into ``target``; an existing ``target`` is moved aside first, then removed."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_metadata(checkpoint_dir: str | Path) -> dict[str, Any] | None:
    """``rec_lightning.json`` of a checkpoint folder, or None for a plain HF model folder.

    Raises:
        FileNotFoundError: the folder holds neither ``rec_lightning.json`` nor ``config.json``.
    """
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / METADATA_FILE
    if path.exists():
        try:
            metadata = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = f"line {err.lineno}, column {err.colno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else str(err)
            raise CorruptFileError(f"{path}: not valid JSON ({where}). Fix: restore the file from the run that wrote "
                                   "it (it is written once, at the end of fit or export), or re-export the "
                                   "checkpoint") from None
        if not isinstance(metadata, dict):
            raise CorruptFileError(f"{path}: expected a JSON object, found {type(metadata).__name__}. Fix: restore "
                                   "the file from the run that wrote it")
        return metadata
    if (checkpoint_dir / "config.json").exists():
        return None
    raise FileNotFoundError(f"{checkpoint_dir} is not a checkpoint folder: it has no {METADATA_FILE} and no "
                            "config.json. Fix: pass the final_checkpoint/ folder written at the end of fit "
                            "(OUTPUT/final_checkpoint) or a folder written by `python -m rec_lightning export`")


_CATALOG_FIX = ("Fix: restore the file from the run that wrote it (or re-export the checkpoint), or pass the data "
                "folder the model was trained on (--data_dir DIR, data_dir= in Python), which is then used instead")


class MissingCatalogError(RecLightningError, FileNotFoundError):
    """A checkpoint carries no item catalog (written before catalogs travelled with the model) and no data folder was given."""


def catalog_payload(catalog) -> dict[str, Any]:
    """The content of ``item_catalog.json``: the SID index (as in ``index.json``), the titles and the checksum."""
    return {"format": CATALOG_FORMAT, "checksum": catalog.checksum(), "num_items": len(catalog),
            "source": str(catalog.source),
            "index": {str(item.item_id): list(item.tokens) for item in catalog},
            "titles": {str(item.item_id): item.title for item in catalog}}


def write_item_catalog(directory: str | Path, catalog, expected_checksum: str | None = None) -> Path:
    """Write ``directory/item_catalog.json`` atomically: one line of JSON, about 130 bytes per item with titles
    (474 KB for Industrial_and_Scientific's 3,686 items).

    Raises:
        CheckpointMismatchError: ``catalog`` is not the SID index ``expected_checksum`` names.
    """
    payload = catalog_payload(catalog)
    if expected_checksum is not None and payload["checksum"] != expected_checksum:
        raise CheckpointMismatchError(f"the item catalog ({catalog.source}) has checksum {payload['checksum'][:12]}..., "
                                      f"but the model was trained on {expected_checksum[:12]}.... Fix: save the "
                                      "checkpoint with the catalog of the data it was trained on")
    return write_json_atomic(Path(directory) / CATALOG_FILE, payload, indent=None)


def read_item_catalog(checkpoint_dir: str | Path, metadata: dict[str, Any] | None = None):
    """The :class:`~rec_lightning.sids.codec.ItemCatalog` a checkpoint carries, validated; None if it has none.

    Args:
        checkpoint_dir: a final checkpoint or ``export`` output.
        metadata: its ``rec_lightning.json`` (read if not given); the catalog must have its ``sid_index_checksum``.

    Raises:
        CorruptFileError: the file is not valid JSON, lacks a field, holds a malformed SID, or its items do not
            match its checksum or the checkpoint's, naming the file and the fix.
    """
    from rec_lightning.sids.codec import ItemCatalog

    path = Path(checkpoint_dir) / CATALOG_FILE
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"line {err.lineno}, column {err.colno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else str(err)
        raise CorruptFileError(f"{path}: not valid JSON ({where}). {_CATALOG_FIX}") from None

    def bad(problem: str) -> CorruptFileError:
        return CorruptFileError(f"{path}: {problem}. {_CATALOG_FIX}")

    if not isinstance(payload, dict):
        raise bad(f"expected a JSON object, found {type(payload).__name__}")
    if payload.get("format") != CATALOG_FORMAT:
        raise bad(f"format is {payload.get('format')!r}, expected {CATALOG_FORMAT!r}")
    index, titles, checksum = payload.get("index"), payload.get("titles"), payload.get("checksum")
    if not isinstance(index, dict) or not isinstance(titles, dict) or not isinstance(checksum, str):
        raise bad("expected the fields 'index' (object), 'titles' (object) and 'checksum' (string)")
    try:
        parsed = {}
        for key, tokens in index.items():
            if not key.isdigit() or not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise bad(f"index entry {key!r}: expected an item id and a list of SID tokens, got {tokens!r}")
            parsed[int(key)] = tokens
        if any(not key.isdigit() or not isinstance(title, str) for key, title in titles.items()):
            raise bad("'titles' must map item ids to strings")
        catalog = ItemCatalog(parsed, {int(key): title for key, title in titles.items()}, source=str(path))
    except DataValidationError as err:
        raise bad(f"invalid SID index ({str(err).splitlines()[0]})") from None
    if catalog.checksum() != checksum:
        raise bad(f"its {len(catalog)} items do not match its checksum {checksum[:12]}... (the file was edited or "
                  "damaged)")
    if metadata is None:
        metadata = read_metadata(checkpoint_dir) or {}
    expected = (metadata or {}).get("sid_index_checksum")
    if expected is not None and expected != checksum:
        raise bad(f"it holds the SID index {checksum[:12]}..., but {METADATA_FILE} says the model was trained on "
                  f"{expected[:12]}... (a catalog of another checkpoint)")
    return catalog


def require_item_catalog(checkpoint_dir: str | Path, metadata: dict[str, Any] | None = None):
    """:func:`read_item_catalog`, or a :class:`MissingCatalogError` that says to pass the data folder."""
    catalog = read_item_catalog(checkpoint_dir, metadata)
    if catalog is None:
        raise MissingCatalogError(
            f"{checkpoint_dir} carries no item catalog ({CATALOG_FILE}): it was written before checkpoints carried "
            "their catalog, or the file was removed, so the items it recommends are unknown. Fix: pass the data "
            "folder the model was trained on: --data_dir DIR [--category C] (data_dir=DIR in Python)")
    return catalog


WEIGHT_FILES = {"adapter": "adapter_model.safetensors", "full": "model.safetensors"}


def check_weight_files(checkpoint_dir: str | Path, metadata: dict[str, Any]) -> None:
    """Every ``.safetensors`` file of a checkpoint opens and holds only finite values.

    Raises:
        CorruptFileError: naming the file (and the tensor) that is missing, unreadable or not finite.
    """
    from safetensors import safe_open

    checkpoint_dir = Path(checkpoint_dir)
    fix = "Fix: re-export or re-train; the file was damaged after it was written (copy, disk or edit)"
    folders = [checkpoint_dir] + ([checkpoint_dir / metadata["base_dir"]] if metadata.get("base_dir") else [])
    expected = WEIGHT_FILES.get(metadata.get("format", "full")) if metadata else None
    if expected and not (checkpoint_dir / expected).exists() and not list(checkpoint_dir.glob("model-*.safetensors")):
        raise CorruptFileError(f"{checkpoint_dir / expected}: missing ({metadata.get('format', 'full')} checkpoint "
                               f"without its weights). {fix}")
    for folder in folders:
        for path in sorted(folder.glob("*.safetensors")):
            try:
                with safe_open(str(path), framework="pt") as weights:
                    for name in weights.keys():
                        tensor = weights.get_tensor(name)
                        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                            bad = int((~torch.isfinite(tensor)).sum())
                            raise CorruptFileError(f"{path}: tensor {name!r} has {bad} of {tensor.numel()} values "
                                                   f"that are NaN or infinite. {fix}")
            except CorruptFileError:
                raise
            except Exception as err:  # noqa: BLE001 - safetensors raises several types for a damaged file
                raise CorruptFileError(f"{path}: not a readable safetensors file ({type(err).__name__}: "
                                       f"{str(err).splitlines()[0] if str(err) else 'no detail'}). {fix}") from None


def check_sid_index(metadata: dict[str, Any] | None, catalog) -> None:
    """Raise unless ``catalog`` is the SID index the checkpoint was trained on.

    Raises:
        CheckpointMismatchError: naming both checksums and what to do.
    """
    expected = (metadata or {}).get("sid_index_checksum")
    if expected is None or catalog is None:
        return
    actual = catalog.checksum()
    if actual != expected:
        raise CheckpointMismatchError(
            f"the checkpoint was trained on a SID index with checksum {expected[:12]}..., but the data's index "
            f"({catalog.source}) has checksum {actual[:12]}...: item SIDs differ, so its rankings would be wrong. "
            "Fix: use the data folder (index.json) the model was trained on, or fine-tune on this index")


def check_base_vocabulary(base_model, metadata: dict[str, Any]) -> None:
    """Raise unless ``base_model`` has the resized embedding the adapter was trained on.

    Raises:
        CheckpointMismatchError: with the expected and found row counts and how to resize.
    """
    rows = base_model.get_input_embeddings().weight.shape[0]
    if rows != metadata["embedding_rows"]:
        raise CheckpointMismatchError(
            f"the adapter was trained on a base with {metadata['embedding_rows']} embedding rows (tokenizer of "
            f"{metadata['tokenizer_size']} tokens incl. {len(metadata['sid_tokens'])} SID tokens), but this base has "
            f"{rows}. Fix: load with rec_lightning.modules.export.load_for_inference(checkpoint_dir), or first call "
            "rec_lightning.modules.backbone.add_sid_tokens(base, tokenizer, metadata['sid_tokens']) with the "
            "checkpoint's tokenizer on the base model named in rec_lightning.json")


def _check_tokenizer(tokenizer, metadata: dict[str, Any]) -> None:
    ids = tokenizer.convert_tokens_to_ids(metadata["sid_tokens"])
    if len(tokenizer) != metadata["tokenizer_size"] or ids != metadata["sid_token_ids"]:
        raise CheckpointMismatchError(
            f"the tokenizer has {len(tokenizer)} tokens, expected {metadata['tokenizer_size']} with SID tokens at "
            f"the recorded ids. Fix: use the tokenizer saved in the checkpoint folder, not the base model's")


def attach_adapter(base_model, checkpoint_dir: str | Path, is_trainable: bool = False):
    """Wrap an already resized ``base_model`` with the checkpoint's adapter, after checking its vocabulary."""
    metadata = read_metadata(checkpoint_dir)
    if metadata is None or metadata.get("format") != "adapter":
        raise CheckpointMismatchError(f"{checkpoint_dir} holds a full model, not an adapter. Fix: load it with "
                                      "AutoModelForCausalLM.from_pretrained or load_for_inference")
    check_base_vocabulary(base_model, metadata)
    return load_adapter(base_model, checkpoint_dir, is_trainable=is_trainable)


def load_for_inference(checkpoint_dir: str | Path, dtype: str | torch.dtype | None = None,
                       device: str | torch.device | None = None, catalog=None):
    """Load a final checkpoint (adapter or full) or an exported HF folder, ready for generation.

    Args:
        checkpoint_dir: ``final_checkpoint/`` or an ``export`` output.
        dtype: weight dtype (``"bfloat16"``, ``torch.float32``, ...); default: as trained/saved.
        device: where to put the model; default: CPU.
        catalog: if given, checked against the recorded SID index checksum.

    Returns:
        ``(model, tokenizer, metadata)``; ``metadata`` is ``{}`` for a plain HF folder. The model is in
        eval mode with ``use_cache`` on.

    Raises:
        CheckpointMismatchError: vocabulary, tokenizer or SID index do not match.
    """
    from transformers import AutoModelForCausalLM

    checkpoint_dir = Path(checkpoint_dir)
    metadata = read_metadata(checkpoint_dir) or {}
    tokenizer = load_tokenizer(checkpoint_dir, verify=False)
    dtype_name = str(dtype).replace("torch.", "") if dtype is not None else None
    if metadata:
        _check_tokenizer(tokenizer, metadata)
        check_sid_index(metadata, catalog)
    verify_saved_tokenizer(tokenizer, checkpoint_dir)
    check_weight_files(checkpoint_dir, metadata)
    if metadata.get("format") == "adapter":
        if metadata.get("base_dir"):
            base = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir / metadata["base_dir"]),
                                                        dtype=dtype_name or "auto")
        else:
            known = {f.name for f in fields(BackboneOptions)}
            options = BackboneOptions(**{k: v for k, v in metadata["backbone"].items() if k in known})
            options.gradient_checkpointing = False
            if dtype_name is not None:
                options.dtype = dtype_name
            base = build_backbone(options, tokenizer)
            add_sid_tokens(base, tokenizer, metadata["sid_tokens"])
        check_base_vocabulary(base, metadata)
        model = load_adapter(base, checkpoint_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=dtype_name or "auto")
    model.config.use_cache = True
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer, metadata


def export_portable_adapter(checkpoint_dir: str | Path, output_dir: str | Path) -> Path:
    """Write the adapter with the resized embedding matrices included, for users of plain PEFT.

    Load it with ``base = AutoModelForCausalLM.from_pretrained(<base>)``,
    ``base.resize_token_embeddings(<embedding_rows>)`` (any initialisation), then
    ``PeftModel.from_pretrained(base, output_dir)``. A full-model checkpoint is re-saved as is.
    """
    model, tokenizer, metadata = load_for_inference(checkpoint_dir)
    if not is_adapter_model(model):
        return export_merged(checkpoint_dir, output_dir)
    metadata = {**metadata, "exported_from": str(Path(checkpoint_dir).resolve())}
    return save_final_checkpoint(model, tokenizer, output_dir, metadata, with_embeddings=True,
                                 catalog=read_item_catalog(checkpoint_dir, metadata))


def export_merged(checkpoint_dir: str | Path, output_dir: str | Path, dtype: str | None = None) -> Path:
    """Write a plain HF model folder (adapter merged into the weights) + tokenizer + metadata.

    ``AutoModelForCausalLM.from_pretrained(output_dir)`` and ``AutoTokenizer.from_pretrained(output_dir)``
    load it without rec_lightning or peft.
    """
    model, tokenizer, metadata = load_for_inference(checkpoint_dir, dtype=dtype)
    merged = merge_adapter(model)
    metadata = {**metadata, "exported_from": str(Path(checkpoint_dir).resolve())} if metadata else {}
    if metadata:
        return save_final_checkpoint(merged, tokenizer, output_dir, metadata,
                                     catalog=read_item_catalog(checkpoint_dir, metadata))
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    _save_plain(merged, staging)
    save_tokenizer(tokenizer, staging)
    (staging / EXPORT_MARKER).write_text(str(Path(checkpoint_dir).resolve()) + "\n")
    _replace_dir(staging, output_dir)
    return output_dir

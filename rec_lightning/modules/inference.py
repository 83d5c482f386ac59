"""One loader from a final checkpoint to what inference needs: :func:`load_checkpoint`.

``evaluate``, ``recommend`` / :meth:`rec_lightning.recommend.Recommender.from_checkpoint` and GRPO (starting
from an SFT checkpoint) all go through it, so they agree on

* the model (adapter, merged export or full model) on a device and dtype, and its tokenizer, loaded once;
* the item catalog: the one the checkpoint carries (``item_catalog.json``), or the given data folder's (or
  an already loaded catalog), checked against the SID index checksum the model was trained on;
* the data settings, by one rule (:func:`resolve_data_settings`): an explicit value wins, then the value
  recorded in ``rec_lightning.json``, then the default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rec_lightning.errors import ConfigurationError, DataValidationError
from rec_lightning.prompts import NEXT_ITEM, category_display_name

#: ``max_length`` of a checkpoint that records none (written before it was recorded, or a plain HF folder).
DEFAULT_MAX_LENGTH = 512


@dataclass(frozen=True)
class DataSettings:
    """How prompts are rendered and cut for a checkpoint: what training used unless overridden.

    ``category`` is the file-name category (None for a plain HF folder used with the checkpoint's catalog).
    """

    category: str | None
    category_name: str
    next_item_task: str
    max_length: int

    def as_dict(self) -> dict[str, Any]:
        """The settings as ``RecDataModule`` keyword arguments."""
        return asdict(self)


def resolve_data_settings(metadata: dict[str, Any] | None, data_dir: str | Path | None = None,
                          category: str | None = None, category_name: str | None = None,
                          next_item_task: str | None = None, max_length: int | None = None) -> DataSettings:
    """The one rule turning a checkpoint's metadata (+ explicit options) into data settings.

    Each setting is the explicit value if given, else the one recorded in ``rec_lightning.json``, else the
    default. The category of a data folder is the explicit one, else the recorded one if the folder holds it,
    else the folder's only category. ``category_name`` defaults to one derived from the category.

    Raises:
        DataValidationError: a data folder with several categories, none of them the recorded one.
        ConfigurationError: an explicit category other than the recorded one without a data folder.
    """
    metadata = metadata or {}
    recorded = metadata.get("category")
    if data_dir is not None:
        if category is None:
            from rec_lightning.files.layout import available_categories

            present = available_categories(data_dir)
            if recorded in present:
                category = recorded
            elif len(present) == 1:
                category = present[0]
            else:
                raise DataValidationError(Path(data_dir) / "index", [f"categories present: {present or 'none'}"],
                                          fix="pass --category (category= in Python) with one of them")
    elif category is not None and recorded is not None and category != recorded:
        raise ConfigurationError(f"category {category!r} without a data folder: the checkpoint carries only the "
                                 f"catalog of {recorded!r}. Fix: pass --data_dir (data_dir= in Python) with the data "
                                 f"folder that holds {category!r}, or leave --category out")
    else:
        category = category or recorded
    name = category_name or metadata.get("category_name") or (category_display_name(category) if category else "items")
    return DataSettings(category=category, category_name=name,
                        next_item_task=next_item_task or metadata.get("next_item_task") or NEXT_ITEM,
                        max_length=int(max_length or metadata.get("max_length") or DEFAULT_MAX_LENGTH))


@dataclass
class InferenceCheckpoint:
    """What :func:`load_checkpoint` returns: everything inference on a final checkpoint needs.

    Attributes:
        model: in eval mode, ``use_cache`` on, on the requested device and dtype.
        tokenizer: the checkpoint's tokenizer (verified against its saved probes), loaded once.
        catalog: the items; the carried catalog or the data folder's, checked against the checkpoint.
        metadata: ``rec_lightning.json`` (``{}`` for a plain HF folder).
        settings: the resolved :class:`DataSettings`.
        data_dir: the data folder the catalog came from (None: the checkpoint's own catalog).
    """

    model: Any
    tokenizer: Any
    catalog: Any
    metadata: dict[str, Any]
    settings: DataSettings
    data_dir: Path | None = None


def load_checkpoint(checkpoint: str | Path, data_dir: str | Path | None = None, category: str | None = None,
                    category_name: str | None = None, next_item_task: str | None = None,
                    max_length: int | None = None, device=None, dtype=None, catalog=None) -> InferenceCheckpoint:
    """Load a final checkpoint (adapter, merged export or full model) for inference, with its catalog and settings.

    Args:
        checkpoint: ``final_checkpoint/`` or an ``export`` output.
        data_dir: a MiniOneRec-layout folder to take the catalog from (checked against the checkpoint's SID
            index); None uses the catalog the checkpoint carries.
        category, category_name, next_item_task, max_length: explicit data settings (see
            :func:`resolve_data_settings`).
        device, dtype: where and in which dtype to put the model (default: CPU, as saved).
        catalog: an already loaded :class:`~rec_lightning.sids.codec.ItemCatalog` to use instead (checked
            like a data folder's), e.g. a data module's.

    Raises:
        FileNotFoundError: ``checkpoint`` is not a checkpoint folder.
        MissingCatalogError: no data folder and the checkpoint carries no catalog (written before it did).
        CorruptFileError: a damaged ``rec_lightning.json``, ``item_catalog.json`` or weight file.
        CheckpointMismatchError: the data's SID index or the tokenizer is not the checkpoint's.
    """
    from rec_lightning.modules.export import load_for_inference, read_metadata, require_item_catalog
    from rec_lightning.sids.codec import ItemCatalog

    metadata = read_metadata(checkpoint) or {}
    settings = resolve_data_settings(metadata, data_dir, category, category_name, next_item_task, max_length)
    if catalog is None:
        if data_dir is not None:
            catalog = ItemCatalog.from_data_dir(data_dir, settings.category)
        else:
            catalog = require_item_catalog(checkpoint, metadata)
    model, tokenizer, metadata = load_for_inference(checkpoint, dtype=dtype, device=device, catalog=catalog)
    return InferenceCheckpoint(model=model, tokenizer=tokenizer, catalog=catalog, metadata=metadata,
                               settings=settings, data_dir=Path(data_dir) if data_dir is not None else None)

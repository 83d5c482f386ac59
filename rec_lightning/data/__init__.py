"""Data layer: files -> validated records -> task examples -> tensors -> ``RecDataModule``.

The names below load on first use, so ``from rec_lightning.data.records import ...`` (``check-data``)
does not import Lightning through ``RecDataModule``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RecDataModule": "rec_lightning.data.datamodule",
    "RecData": "rec_lightning.data.records",
    "SequenceRecord": "rec_lightning.data.records",
    "load_rec_data": "rec_lightning.data.records",
    "TASKS": "rec_lightning.data.tasks",
    "Example": "rec_lightning.data.tasks",
    "next_item_example": "rec_lightning.data.tasks",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rec_lightning.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

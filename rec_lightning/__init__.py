"""rec_lightning: LLM-based generative recommendation with semantic IDs, on PyTorch Lightning.

The core (``sids``, ``generation``, ``evaluation``, ``rl``, ``files``, ``errors``, ``prompts``) is plain
torch/Python; ``data``, ``modules`` and ``callbacks`` build on it in that order, and ``commands``/``cli``/``recommend``
are the entry points.

The names a notebook needs are importable from here (``from rec_lightning import Recommender``);
they load on first use, so ``import rec_lightning`` stays cheap (no torch, no Lightning).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_EXPORTS = {
    "Recommender": "rec_lightning.recommend",
    "Recommendation": "rec_lightning.recommend",
    "UnknownItemError": "rec_lightning.recommend",
    "RecDataModule": "rec_lightning.data.datamodule",
    "SFTModule": "rec_lightning.modules.sft",
    "GRPOModule": "rec_lightning.modules.grpo",
    "BackboneOptions": "rec_lightning.modules.backbone",
    "LoraOptions": "rec_lightning.modules.lora",
    "OptimizerOptions": "rec_lightning.modules.optim",
    "FinalCheckpoint": "rec_lightning.callbacks.export",
    "load_for_inference": "rec_lightning.modules.export",
    "load_checkpoint": "rec_lightning.modules.inference",
    "ItemCatalog": "rec_lightning.sids.codec",
    "SIDTrie": "rec_lightning.generation.trie",
    "constrained_beam_search": "rec_lightning.generation.decoding",
}

__all__ = ["__version__", *_EXPORTS]

def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rec_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""How this package calls a Hugging Face causal LM: the cache argument's name, the model under a PEFT
wrapper, and ``logits_to_keep`` where the model accepts it."""

from __future__ import annotations

import inspect

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

# transformers 5.2x renamed the forward argument ``past_key_values`` to ``cache`` (the old name is deprecated)
CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def logits_to_keep_kwargs(model: torch.nn.Module, count: int) -> dict:
    """``{"logits_to_keep": count}`` if the model's forward takes it (only the last ``count`` positions' logits)."""
    return {"logits_to_keep": count} if "logits_to_keep" in inspect.signature(base_model(model).forward).parameters else {}

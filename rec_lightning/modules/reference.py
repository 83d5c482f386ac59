"""GRPO's policy and its reference model, without a second copy of the base under LoRA.

The SFT result (adapter or full) is merged into one plain model. In ``lora`` mode a fresh LoRA
adapter (+ trainable SID rows) is put on it: the policy is "adapter on" and the reference, exactly
the SFT model, is "adapter off" (``disable_adapter()`` turns off the LoRA layers *and* the trainable
SID rows, which is right here because the SFT rows are already merged into the base). In ``full``
mode the policy trains every weight and the reference is a frozen copy (made only when the KL term
is on). Reference sync (``ref <- (1 - alpha) ref + alpha policy``) works for both.

In ``lora`` mode a half-precision (bf16/fp16) SFT model is merged in float32 and the merged base
stays float32: merging in bf16 rounds ``W + dW`` (per-token log-probs drift by ~1e-2 from the SFT
model the user evaluated) and a sync in bf16 (``W += alpha dW``) rounds again and moves the policy.
In float32 both are exact to float32 rounding; the price is a float32 copy of the base instead of
a bf16 one (the trainer's ``bf16-mixed`` still runs the matmuls in bf16). :func:`disable_dropout` makes the
training policy's log-probs those of the model that generated the group (GRPO's ``disable_dropout``).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Literal, Sequence

import torch

from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.lora import LoraOptions, apply_finetuning, is_adapter_model, merge_adapter

PolicyMode = Literal["lora", "full"]


def build_policy(sft_model: torch.nn.Module, mode: PolicyMode, lora: LoraOptions | None, sid_token_ids: Sequence[int],
                 need_reference: bool) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """Turn the loaded SFT model into ``(policy, reference_copy)``.

    Returns:
        The policy to train, and a frozen full copy for the reference in ``full`` mode with
        ``need_reference`` (None otherwise: ``lora`` mode uses the adapter-off policy).
    """
    if mode not in ("lora", "full"):
        raise ConfigurationError(f"GRPO finetune mode must be 'lora' or 'full', got {mode!r}")
    if mode == "lora" and _is_half_precision(sft_model):
        sft_model = sft_model.float()  # merge and sync in float32 (see the module docstring)
    base = merge_adapter(sft_model)
    base.config.use_cache = True
    if mode == "lora":
        return apply_finetuning(base, "lora", lora or LoraOptions(), sid_token_ids), None
    reference = copy.deepcopy(base).eval().requires_grad_(False) if need_reference else None
    return apply_finetuning(base, "full", None, sid_token_ids), reference


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every ``nn.Dropout`` and every attention module's ``attention_dropout`` rate to 0; returns how many."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p:
            module.p, changed = 0.0, changed + 1
        if isinstance(getattr(module, "attention_dropout", None), float) and module.attention_dropout:
            module.attention_dropout, changed = 0.0, changed + 1
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "attention_dropout", 0.0):
        config.attention_dropout = 0.0
    return changed


def _is_half_precision(model: torch.nn.Module) -> bool:
    return any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters())


@contextlib.contextmanager
def reference_model(policy: torch.nn.Module, reference: torch.nn.Module | None) -> Iterator[torch.nn.Module]:
    """The model to run for reference log-probs: the frozen copy, or the policy with its adapter off."""
    if reference is not None:
        yield reference
    elif is_adapter_model(policy):
        with policy.disable_adapter():
            yield policy
    else:
        raise RuntimeError("no reference model: full fine-tuning keeps a frozen copy only when beta > 0")


@torch.no_grad()
def sync_reference(policy: torch.nn.Module, reference: torch.nn.Module | None, alpha: float) -> None:
    """``reference <- (1 - alpha) reference + alpha policy`` (TRL's SyncRefModel, with explicit alpha).

    With an adapter reference: the base absorbs ``alpha`` of every LoRA update (``W += alpha dW``,
    ``B *= 1 - alpha``, so the policy ``W + dW`` is unchanged) and the base SID rows move ``alpha`` of
    the way to the policy's rows.
    """
    if not 0.0 < alpha <= 1.0:
        raise ConfigurationError(f"ref_sync_alpha must be in (0, 1], got {alpha}")
    if reference is not None:
        for ref_param, param in zip(reference.parameters(), policy.parameters()):
            ref_param.lerp_(param.detach().to(ref_param.dtype), alpha)
        return
    synced_rows: set[tuple[int, str]] = set()  # tied embeddings share one base weight: move its rows once
    for module in policy.modules():
        if hasattr(module, "lora_B") and hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            for name in module.lora_B:
                weight = module.base_layer.weight
                weight += alpha * module.get_delta_weight(name).to(weight.dtype)
                module.lora_B[name].weight.mul_(1.0 - alpha)
        elif hasattr(module, "trainable_tokens_delta") and hasattr(module, "token_indices"):
            for name, delta in module.trainable_tokens_delta.items():
                weight = module.base_layer.weight
                if (id(weight), name) in synced_rows:
                    continue
                synced_rows.add((id(weight), name))
                index = torch.tensor(module.token_indices[name], device=delta.device)
                rows = weight.index_select(0, index)
                weight.index_copy_(0, index, rows.lerp(delta.to(rows.dtype), alpha))
                if name in getattr(module, "trainable_tokens_original", {}):
                    module.trainable_tokens_original[name].copy_(weight.index_select(0, index))

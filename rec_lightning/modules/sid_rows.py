"""Trainable SID rows at the cost of the rows used, not of the whole vocabulary (issue 27).

PEFT's ``TrainableTokensLayer`` (``trainable_token_indices``) rebuilds the whole ``[V, H]`` matrix on
every forward (``W.index_copy(0, sid_ids, delta)``) and its backward produces a dense ``[V, H]``
gradient before keeping the SID rows; with Qwen's 152k-row vocabulary that is two 0.5 GB tensors per
side per step. :func:`use_sid_rows_fast_path` gives those layers a forward with the same result:

- embedding: ``F.embedding(x, W)``, then the positions holding a SID token take their delta row
  (``[V] -> slot`` lookup and ``torch.where``: gradients reach the delta only at those positions);
- head (``nn.Linear``, tied or untied): ``F.linear(h, W)`` with the SID columns overwritten by
  ``F.linear(h, delta)`` (``[N, V]`` logits, no ``[V, H]`` copy and no ``[V, H]`` weight gradient).

Only the instances' ``forward_adapters`` is replaced; PEFT's classes, parameters (the
``trainable_tokens_delta`` names), saved adapter, ``merge``/``unmerge`` and ``disable_adapter()`` are
untouched. Disabled or merged adapters, several active adapters and embedding options that change the
result (``max_norm``, ``scale_grad_by_freq``, ``sparse``, a SID ``padding_idx``, a head with a bias)
run PEFT's own code. Plain torch: peft itself is imported only by ``lora.py``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def use_sid_rows_fast_path(model: torch.nn.Module, enabled: bool = True) -> int:
    """Give every PEFT trainable-tokens layer of ``model`` the fast forward (or PEFT's back).

    Args:
        model: a PEFT model, or any module holding PEFT ``TrainableTokensLayer`` instances.
        enabled: False restores PEFT's own forward (tests and benchmarks compare the two).

    Returns:
        The number of layers switched (the input embedding's and the head's: 2 for Qwen, tied or not).
    """
    switched = 0
    for module in model.modules():
        if not _is_trainable_tokens_layer(module) or has_sid_rows_fast_path(module) == enabled:
            continue
        if enabled:
            # an instance attribute shadows the class method PEFT's forward() calls; a partial of a
            # module-level function survives deepcopy and pickling
            module.forward_adapters = functools.partial(sid_rows_forward, module)
        else:
            del module.__dict__["forward_adapters"]
            module.__dict__.pop("_sid_lookup", None)
        switched += 1
    return switched


def has_sid_rows_fast_path(layer: torch.nn.Module) -> bool:
    """True when ``layer`` runs :func:`sid_rows_forward` instead of PEFT's ``forward_adapters``."""
    patched = layer.__dict__.get("forward_adapters")
    return isinstance(patched, functools.partial) and patched.func is sid_rows_forward


def sid_rows_forward(layer, x: torch.Tensor, active_adapters, *args, **kwargs) -> torch.Tensor:
    """PEFT's ``TrainableTokensLayer.forward_adapters`` without the ``[V, H]`` merged matrix.

    Args:
        layer: the trainable-tokens layer (its ``base_layer`` an ``nn.Embedding`` or a bias-free
            ``nn.Linear`` head).
        x: token ids ``[...]`` (embedding) or hidden states ``[..., H]`` (head).
        active_adapters: the adapter names PEFT passes; the fast path serves exactly one.

    Returns:
        Embeddings ``[..., H]`` or logits ``[..., V]``, equal to PEFT's (logits up to float rounding).
    """
    if (layer.disable_adapters or layer.merged or len(active_adapters) != 1 or args or kwargs
            or not _fast_path_applies(layer, active_adapters[0])):
        return type(layer).forward_adapters(layer, x, active_adapters, *args, **kwargs)
    name = active_adapters[0]
    base = layer.base_layer
    weight = base.weight  # [V, H], frozen
    delta = layer.trainable_tokens_delta[name].to(weight)  # [K, H], cast as PEFT's get_merged_weights does
    index, slot = _lookup(layer, name, weight.device)
    if isinstance(base, torch.nn.Embedding):
        result = F.embedding(x, weight, padding_idx=base.padding_idx)  # [..., H]
        token_slot = slot[x]  # [...], -1 for ordinary tokens
        rows = F.embedding(token_slot.clamp(min=0), delta)  # [..., H]; its backward beats delta[...]'s on CPU
        result = torch.where((token_slot >= 0).unsqueeze(-1), rows, result)
        embed_scale = layer._get_embed_scale()  # Gemma-style scaled embeddings, as PEFT applies it
        if embed_scale is not None:
            result = result * embed_scale.to(result.dtype)
        return result
    logits = F.linear(x, weight)  # [..., V]
    # in place: the matmul's backward needs its inputs, not its output
    return logits.index_copy_(-1, index, F.linear(x, delta))  # SID columns [..., K]


def _is_trainable_tokens_layer(module: torch.nn.Module) -> bool:
    cls = type(module)
    return cls.__name__ == "TrainableTokensLayer" and cls.__module__.startswith("peft.")


def _fast_path_applies(layer, name: str) -> bool:
    base = layer.base_layer
    if isinstance(base, torch.nn.Embedding):
        # these options change the result or the gradient (a SID padding_idx row gets none in PEFT)
        return (base.max_norm is None and not base.scale_grad_by_freq and not base.sparse
                and (base.padding_idx is None or base.padding_idx not in layer.token_indices[name]))
    return isinstance(base, torch.nn.Linear) and base.bias is None  # a bias: PEFT's own head path (<= 0.21 drops it)


def _lookup(layer, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index [K], slot [V])`` of adapter ``name``: the SID ids, and each id's delta row (-1: none)."""
    indices = layer.token_indices[name]
    cache = layer.__dict__.setdefault("_sid_lookup", {})
    cached = cache.get((name, str(device)))
    if cached is None or cached[0] is not indices:
        index = torch.tensor(indices, dtype=torch.long, device=device)
        slot = torch.full((layer.base_layer.weight.shape[0],), -1, dtype=torch.long, device=device)
        slot[index] = torch.arange(len(indices), device=device)
        cached = cache[(name, str(device))] = (indices, index, slot)
    return cached[1], cached[2]

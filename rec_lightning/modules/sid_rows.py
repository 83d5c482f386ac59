"""Trainable SID rows at the cost of the rows used, not of the whole vocabulary (issue 27).

PEFT's ``TrainableTokensLayer`` (``trainable_token_indices``) rebuilds the whole ``[V, H]`` matrix on
every forward (``W.index_copy(0, sid_ids, delta)``) and its backward produces a dense ``[V, H]``
gradient before keeping the SID rows; with Qwen's 152k-row vocabulary that is two 0.5 GB tensors per
side per step. :class:`SidRowsLayer` computes the same outputs from the base matrix and the delta:

- embedding: ``F.embedding(x, W)``, then the positions holding a SID token take their delta row
  (``[V] -> slot`` lookup and ``torch.where``: gradients reach the delta only at those positions);
- head (``nn.Linear``, tied or untied): ``F.linear(h, W)`` with the SID columns overwritten by
  ``F.linear(h, delta)`` (``[N, V]`` logits, no ``[V, H]`` copy and no ``[V, H]`` weight gradient).

Everything PEFT stores stays as it was (the ``trainable_tokens_delta`` parameters, their names, the
saved adapter, ``merge``/``unmerge``, ``disable_adapter()``); only the instances' class changes to this
subclass. Disabled or merged adapters, several active adapters and embedding options that change the
result (``max_norm``, ``scale_grad_by_freq``, ``sparse``, a SID ``padding_idx``, a head with a bias)
run PEFT's own code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.trainable_tokens import TrainableTokensLayer


class SidRowsLayer(TrainableTokensLayer):
    """A ``TrainableTokensLayer`` whose forward touches only the SID rows (same parameters and state)."""

    def forward_adapters(self, x: torch.Tensor, active_adapters, *args, **kwargs) -> torch.Tensor:
        if (self.disable_adapters or self.merged or len(active_adapters) != 1 or args or kwargs
                or not self._fast_path_applies(active_adapters[0])):
            return super().forward_adapters(x, active_adapters, *args, **kwargs)
        name = active_adapters[0]
        base = self.base_layer
        weight = base.weight  # [V, H], frozen
        delta = self.trainable_tokens_delta[name].to(weight)  # [K, H], as PEFT's get_merged_weights
        index, slot = self._lookup(name, weight.device)
        if isinstance(base, torch.nn.Embedding):
            result = F.embedding(x, weight, padding_idx=base.padding_idx)  # [..., H]
            token_slot = slot[x]  # [...], -1 for ordinary tokens
            rows = delta[token_slot.clamp(min=0)]  # [..., H]
            result = torch.where((token_slot >= 0).unsqueeze(-1), rows, result)
            embed_scale = self._get_embed_scale()
            if embed_scale is not None:
                result = result * embed_scale.to(result.dtype)
            return result
        logits = F.linear(x, weight)  # [..., V]
        # in place: the matmul's backward needs its inputs, not its output
        return logits.index_copy_(-1, index, F.linear(x, delta))  # SID columns: [..., K]

    def _fast_path_applies(self, name: str) -> bool:
        base = self.base_layer
        if isinstance(base, torch.nn.Embedding):
            return (base.max_norm is None and not base.scale_grad_by_freq and not base.sparse
                    and (base.padding_idx is None or base.padding_idx not in self.token_indices[name]))
        return isinstance(base, torch.nn.Linear) and base.bias is None

    def _lookup(self, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index [K], slot [V])`` for adapter ``name``: the SID ids and each id's row in the delta (-1: none)."""
        indices = self.token_indices[name]
        cache = self.__dict__.setdefault("_sid_lookup", {})
        key = (name, str(device))
        cached = cache.get(key)
        if cached is None or cached[0] is not indices:
            index = torch.tensor(indices, dtype=torch.long, device=device)
            slot = torch.full((self.base_layer.weight.shape[0],), -1, dtype=torch.long, device=device)
            slot[index] = torch.arange(len(indices), device=device)
            cached = cache[key] = (indices, index, slot)
        return cached[1], cached[2]


def use_sid_rows_fast_path(model: torch.nn.Module, enabled: bool = True) -> int:
    """Switch every PEFT trainable-tokens layer of ``model`` to :class:`SidRowsLayer` (or back).

    Args:
        model: a PEFT model (or any module holding ``TrainableTokensLayer`` instances).
        enabled: False restores PEFT's own class (tests and benchmarks compare the two).

    Returns:
        The number of layers switched.
    """
    target = SidRowsLayer if enabled else TrainableTokensLayer
    switched = 0
    for module in model.modules():
        # exactly PEFT's class or ours: a subclass someone else installed is left alone
        if type(module) in (TrainableTokensLayer, SidRowsLayer) and type(module) is not target:
            module.__class__ = target
            module.__dict__.pop("_sid_lookup", None)
            switched += 1
    return switched

"""GRPO under FSDP2 (Lightning's ``ModelParallelStrategy``): what :class:`~rec_lightning.modules.grpo.GRPOModule`
does differently when its policy is sharded (issue 30).

* The policy is sharded like SFT (:func:`~rec_lightning.modules.sharding.shard_model`: one unit per
  decoder layer + the root). In ``full`` mode the frozen reference copy is sharded the same way (its
  own units; it has no gradients and no optimizer state); in ``lora`` mode the reference is the same
  sharded model with its adapter off, so nothing more is held.
* Every forward of a sharded model is a collective, so every rank must make the same calls in the
  same order. The group generation runs ``trie.max_depth`` decoding steps whatever the data (the SID
  depth is the catalog's, shared by all ranks), and the training sampler gives every rank the same
  number of prompts per step (``EpochShuffleSampler`` pads the epoch to a multiple of the world size).
  ``dynamic_sampling: resample`` regenerates only where some rank still has a flat group, and a rank
  without one then regenerates a throw-away row (:func:`rows_to_regenerate`); ``drop`` changes only
  batch sizes, never the number of forwards.
* Generation, log-probs and the validation loss run through
  :func:`~rec_lightning.modules.sharding.run_sharded` (the shared-cache decoder and the loss call the
  decoder and the head directly, outside the root's ``forward``); the reference copy's root weights
  are freed again after each of its (gradient-free) forwards (:func:`release_reference`).
* ``.ckpt`` files are Lightning's distributed checkpoint folders (each rank writes its shards) holding every
  key, as SFT's do: ``GRPOModule.on_save_checkpoint`` drops the frozen weights only when unsharded, since a
  distributed load needs each key of the module. In ``full`` mode the frozen reference copy (synced towards
  the policy with ``ref_sync_steps``) is therefore restored from the folder on resume, not rebuilt from the
  SFT checkpoint; ``--ckpt_path`` takes the folder, and ``FinalCheckpoint(use_best=True)`` has every rank
  load its shards of the best one (:func:`~rec_lightning.modules.sharding.load_distributed_weights`).
* The final checkpoint (:func:`gathered_policy`) is gathered onto rank 0, which rebuilds the policy from the
  SFT checkpoint as :meth:`~rec_lightning.modules.grpo.GRPOModule.build` does, loads the gathered weights
  and writes the same merged folder as an unsharded run.
"""

from __future__ import annotations

import torch

from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.lora import merge_adapter
from rec_lightning.modules.sharding import ShardingOptions, gather_full_state, is_sharded, shard_model


def shard_policy(policy: torch.nn.Module, reference_copy: torch.nn.Module | None, mesh,
                 options: ShardingOptions, ref_sync_steps: int) -> int:
    """Shard the policy and (``full`` mode) the frozen reference copy over ``mesh``; returns the policy's unit count.

    Raises:
        ConfigurationError: reference sync with a LoRA policy (folding ``B @ A`` into sharded base weights
            is not supported yet).
    """
    if ref_sync_steps and reference_copy is None:
        raise ConfigurationError("ref_sync_steps with finetune: lora is not supported under sharding "
                                 "(ModelParallelStrategy) yet: set ref_sync_steps: 0, use finetune: full, "
                                 "or trainer.strategy: ddp (a LoRA policy fits one GPU)")
    units = 0 if is_sharded(policy) else shard_model(policy, mesh, options)
    if reference_copy is not None and not is_sharded(reference_copy):
        shard_model(reference_copy, mesh, options)
    return units


def release_reference(reference: torch.nn.Module, policy: torch.nn.Module) -> None:
    """Free the gathered root weights of a sharded reference copy after its forward.

    FSDP2 keeps a root unit's weights gathered after forward (for the backward that follows); the
    reference never runs backward, so they would stay gathered (for a large vocabulary, the embedding
    and head) until the next reference forward. The adapter-off policy (``reference is policy``) is left alone.
    """
    if reference is not policy and is_sharded(reference):
        reference.reshard()


def rows_to_regenerate(flat: torch.Tensor, strategy=None) -> torch.Tensor | None:
    """The prompts a ``resample`` round regenerates, or None when no rank has a flat group (stop).

    Args:
        flat: ``[B]`` bool, the prompts whose group rewards are all equal on this rank.
        strategy: the trainer's strategy when the policy is sharded over several processes (the decision
            is then taken together, with one all-reduce); None decides locally.

    Returns:
        ``[B]`` bool rows to regenerate. When sharded ranks disagree, a rank without a flat group gets row 0,
        to be generated and thrown away (:func:`is_throwaway`), so that every rank runs the same forwards.
    """
    local = bool(flat.any())
    if strategy is None:
        return flat if local else None
    anywhere = strategy.reduce(torch.tensor(float(local), device=flat.device), reduce_op="sum")
    if float(anywhere) == 0.0:
        return None
    if local:
        return flat
    rows = torch.zeros_like(flat)
    rows[0] = True
    return rows


def is_throwaway(flat: torch.Tensor) -> bool:
    """True when :func:`rows_to_regenerate` picked a row only to keep the sharded ranks in step."""
    return not bool(flat.any())


def gathered_policy(module) -> torch.nn.Module | None:
    """The sharded policy of a ``GRPOModule`` as a plain model with its adapter merged, on rank 0 (a collective).

    Every rank gathers (:func:`~rec_lightning.modules.sharding.gather_full_state`: the full state onto
    rank 0's CPU); rank 0 then rebuilds the policy from ``module.sft_checkpoint`` as ``GRPOModule.build``
    does (same mode, LoRA settings and SID rows, so the same state-dict names and dtypes), loads the
    gathered state into it (strict) and folds the adapter in, as ``merged_policy`` does unsharded.
    Other ranks get None. Rank 0 needs host memory for about twice the policy (the rebuilt copy and the
    gathered state); the frozen reference copy is not gathered.
    """
    from rec_lightning.modules.export import load_for_inference
    from rec_lightning.modules.reference import build_policy

    state = gather_full_state(module.model)  # [every key] full tensors on rank 0, {} elsewhere
    if torch.distributed.get_rank() != 0:
        return None
    sft_model, _, _ = load_for_inference(module.sft_checkpoint, catalog=module.catalog)
    sid_token_ids = module.tokenizer.convert_tokens_to_ids(module.catalog.sid_tokens)
    policy, _ = build_policy(sft_model, module.finetune, module.lora_options, sid_token_ids, need_reference=False)
    policy.load_state_dict(state, strict=True)
    return merge_adapter(policy)

"""GRPO's rollout machinery: the rewards a group is scored with, and what a group becomes before the update.

:meth:`GRPOModule.rollout <rec_lightning.modules.grpo.GRPOModule.rollout>` generates each prompt's group with
the policy; the functions here do the rest on trie item indices ``[B, G]``: each prompt's own target, the
reward functions (the model-backed ones built once per run), the scorer of a group against its target, the
``resample`` rounds for groups whose rewards are all equal, ``add_ground_truth``, the token ids of the
completions for the loss, and the metrics logged about the groups. The result is a :class:`Rollout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from rec_lightning.data.collate import unpad_histories
from rec_lightning.errors import ConfigurationError
from rec_lightning.generation.decoding import constrained_beam_search, constrained_sample
from rec_lightning.generation.trie import SIDTrie
from rec_lightning.modules.cf_reward import CollaborativeReward
from rec_lightning.modules.grpo_options import MODEL_REWARDS, GroupOptions
from rec_lightning.modules.grpo_sharding import is_throwaway, rows_to_regenerate
from rec_lightning.modules.sharding import run_sharded
from rec_lightning.modules.transition_reward import LogTransitionReward, TransitionReward
from rec_lightning.rl.losses import group_advantages
from rec_lightning.rl.rewards import REWARDS, SemanticReward, combine_rewards


@dataclass
class Rollout:
    """One micro-batch of prompts with their groups, rewards and (optionally) reference log-probs."""

    prompt_ids: torch.Tensor  # [B, P]
    prompt_mask: torch.Tensor  # [B, P]
    completions: torch.Tensor  # [B x G, C]
    completion_mask: torch.Tensor  # [B x G, C]
    advantages: torch.Tensor  # [B x G]
    ref_logp: torch.Tensor | None  # [B x G, C]
    old_logp: torch.Tensor | None = None  # [B x G, C], filled on the first pass when num_iterations > 1


# ------------------------------------------------------------------ rewards
def counts_train_split(reward_weights: dict[str, float]) -> bool:
    """Whether a weighted reward counts transitions on the train split (``transition``, ``transition_log``)."""
    return bool({"transition", "transition_log"} & set(reward_weights))


def build_model_rewards(reward_weights: dict[str, float], catalog, semantic_embeddings: str | None,
                        cf_checkpoint: str | None, train_records: Sequence[Any] | None, transition_decay: float,
                        transition_leave_one_out: bool) -> dict[str, Any]:
    """The weighted rewards backed by a model, a matrix or the train counts (:data:`MODEL_REWARDS`), built once.

    Args:
        reward_weights: reward name -> weight (``GRPOModule``'s ``rewards``).
        catalog: the data's ``ItemCatalog``.
        semantic_embeddings, cf_checkpoint, transition_decay, transition_leave_one_out: ``GRPOModule``'s
            arguments of the same names.
        train_records: ``datamodule.records("train")``, for the ``transition(_log)`` rewards only.

    Returns:
        Reward name -> callable, for the model-backed names in ``reward_weights``.
    """
    rewards: dict[str, Any] = {}
    if "semantic" in reward_weights:
        rewards["semantic"] = SemanticReward(semantic_embeddings, catalog)
    if "cf" in reward_weights:
        rewards["cf"] = CollaborativeReward(cf_checkpoint, catalog)
    if "transition" in reward_weights:
        rewards["transition"] = TransitionReward(
            train_records, catalog, transition_decay, leave_one_out=transition_leave_one_out)
    if "transition_log" in reward_weights:
        rewards["transition_log"] = LogTransitionReward(
            train_records, catalog, transition_decay, leave_one_out=transition_leave_one_out)
    return rewards


def reward_functions(reward_weights: dict[str, float], model_rewards: dict[str, Any]) -> dict:
    """Reward name -> function for every weighted reward: the built model-backed ones, the others from ``REWARDS``."""
    return {name: model_rewards[name] if name in MODEL_REWARDS else REWARDS[name] for name in reward_weights}


# ------------------------------------------------------------------ groups
def rollout_targets(item_to_key: torch.Tensor, target_item_ids: torch.Tensor, trie: SIDTrie,
                    group_size: int) -> torch.Tensor:
    """``[B]`` trie index of each prompt's own target (checked: a group fits the catalog, every prompt has one).

    Args:
        item_to_key: ``[max item id + 1]`` trie index of each item id's SID, -1 for ids not in the catalog.
        target_item_ids: ``[B]`` the batch's ``target_item_id``.
        trie: the catalog's trie.
        group_size: G.

    Raises:
        ConfigurationError: G exceeds the catalog's distinct SIDs, or a prompt has no target item.
    """
    if group_size > trie.num_items:
        raise ConfigurationError(f"group.size={group_size} exceeds the {trie.num_items} distinct SIDs of the catalog")
    targets = item_to_key[target_item_ids]  # [B] trie index of each prompt's own target
    if bool((targets < 0).any()):
        raise ConfigurationError("some prompts have no target item; GRPO needs tasks whose answer is a SID")
    return targets


def generate_groups(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, trie: SIDTrie,
                    group: GroupOptions, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, G]`` trie item indices of each prompt's group: the G beams of one constrained beam search (``beam``),
    or G constrained samples at ``group.temperature`` drawn with ``generator`` (``sample``)."""
    if group.mode == "beam":  # run_sharded: the shared-cache decoder calls the decoder and head itself
        return run_sharded(model, constrained_beam_search, model, prompt_ids, prompt_mask, trie, group.size).items
    return run_sharded(model, constrained_sample, model, prompt_ids, prompt_mask, trie, group.size,
                       group.temperature, generator).items


def group_scorer(rewards_fns: dict, reward_weights: dict[str, float], keys: Sequence[str], targets: torch.Tensor,
                 group_size: int, batch: dict):
    """``score(items [B, G])``: the combined rewards of every completion against its prompt's target.

    Args:
        rewards_fns: reward name -> function (:func:`reward_functions`).
        reward_weights: reward name -> weight.
        keys: the trie's SID strings, by trie index.
        targets: ``[B]`` trie index of each prompt's target (:func:`rollout_targets`).
        group_size: G.
        batch: the prompts' batch (its ``history_item_ids``, when present, go to the rewards that use them).
    """
    histories = unpad_histories(batch["history_item_ids"]) if "history_item_ids" in batch else None
    target_items = batch["target_item_id"].tolist()

    def score(items: torch.Tensor):
        completions = [keys[i] if i >= 0 else "" for i in items.flatten().tolist()]
        wanted = [keys[t] for t in targets.repeat_interleave(group_size).tolist()]
        return combine_rewards(rewards_fns, reward_weights, completions, wanted, group_size, histories,
                               target_items)

    return score


def resample_flat_groups(items: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, score,
                         generate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], group_size: int,
                         max_rounds: int, strategy=None) -> None:
    """Regenerate (in place) the groups whose rewards are all equal, up to ``max_rounds`` times.

    Args:
        items: ``[B, G]`` trie item indices, updated in place.
        prompt_ids, prompt_mask: ``[B, P]`` the prompts.
        score: the group scorer (:func:`group_scorer`).
        generate: ``(prompt_ids, prompt_mask) -> [b, G]`` items, the policy's group generation.
        group_size: G.
        max_rounds: ``group.max_resample_rounds``.
        strategy: the trainer's strategy when the policy is sharded over several processes (the ranks decide
            together, :func:`~rec_lightning.modules.grpo_sharding.rows_to_regenerate`); None decides locally.
    """
    for _ in range(max_rounds):
        _, flat = group_advantages(torch.tensor(score(items).total), group_size)
        redo = rows_to_regenerate(flat.to(items.device), strategy)
        if redo is None:
            break
        drawn = generate(prompt_ids[redo], prompt_mask[redo])
        if not is_throwaway(flat):
            items[redo] = drawn


def inject_ground_truth(items: torch.Tensor, targets: torch.Tensor) -> None:
    """Put each prompt's target in the last slot of its group (in place) where no sample hit it."""
    missing = ~(items == targets[:, None]).any(dim=1)  # [B]
    items[missing, -1] = targets[missing]


def completion_tokens(trie: SIDTrie, items: torch.Tensor, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[B x G, C]`` of the items' responses and their mask (up to and including the first EOS)."""
    completions = trie.responses(items, pad_token_id).flatten(0, 1)  # [BG, C]
    is_eos = completions == trie.eos_token_id
    completion_mask = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0  # up to and including the first EOS
    return completions, completion_mask


def rollout_metrics(items: torch.Tensor, targets: torch.Tensor, total: torch.Tensor, zero_variance: torch.Tensor,
                    per_function: dict[str, list[float]], group_size: int) -> dict[str, float]:
    """Reward, its spread, zero-variance groups, target hits (and mean rank), validity, per-function rewards."""
    hits = items == targets[:, None]  # [B, G]
    metrics = {
        "reward": total.mean().item(),
        "reward_std": total.view(-1, group_size).std(dim=1).mean().item(),
        "zero_variance_fraction": zero_variance.float().mean().item(),
        "target_hit_rate": hits.any(dim=1).float().mean().item(),
        "valid_fraction": (items >= 0).float().mean().item(),
        **{f"rewards/{name}": sum(values) / len(values) for name, values in per_function.items()},
    }
    if bool(hits.any()):
        metrics["target_rank"] = (hits.float().argmax(dim=1)[hits.any(dim=1)] + 1).float().mean().item()
    return metrics

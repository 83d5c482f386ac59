"""The option groups of :class:`~rec_lightning.modules.grpo.GRPOModule` and the checks that refuse contradictory
settings before any model loads: how each prompt's group is made (:class:`GroupOptions`), the objective
(:class:`GRPOLossOptions`), and the reward names the module accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rec_lightning.errors import ConfigurationError
from rec_lightning.rl.losses import LossType, RewardScaling
from rec_lightning.rl.rewards import RANK_AWARE, REWARDS

MODEL_REWARDS = ("semantic", "cf", "transition", "transition_log")  # rewards backed by a model, a matrix or the train counts


@dataclass
class GroupOptions:
    """How each prompt's group of G completions is made.

    Attributes:
        size: G, completions per prompt.
        mode: ``beam`` (the G beams of one constrained beam search, distinct items in rank order) or
            ``sample`` (G independent constrained samples at ``temperature``).
        temperature: sampling temperature (``sample`` mode; applied once, no hidden top-k).
        dynamic_sampling: ``off``; ``drop`` (leave groups whose rewards are all equal out of the loss);
            ``resample`` (``sample`` mode: draw such groups again, up to ``max_resample_rounds``).
        max_resample_rounds: extra draws for ``resample``.
        add_ground_truth: where the target is not in a group, it replaces the group's last member.
    """

    size: int = 16
    mode: Literal["beam", "sample"] = "beam"
    temperature: float = 1.0
    dynamic_sampling: Literal["off", "drop", "resample"] = "off"
    max_resample_rounds: int = 2
    add_ground_truth: bool = False


@dataclass
class GRPOLossOptions:
    """The GRPO objective (see :mod:`rec_lightning.rl.losses`).

    Attributes:
        beta: KL coefficient; 0 skips the reference forward entirely.
        loss_type: ``grpo`` (sequence mean), ``dapo`` (token mean), ``dr_grpo`` or ``gspo``.
        reward_scaling: advantage normalisation by ``group`` std, ``batch`` std, or ``none``.
        advantage_eps: added to the std.
        epsilon: lower clip range of the ratio to the rollout policy.
        epsilon_high: upper clip range (default: ``epsilon``).
        num_iterations: optimizer updates per rollout (1 = on-policy, as the original).
    """

    beta: float = 1e-3
    loss_type: LossType = "grpo"
    reward_scaling: RewardScaling = "group"
    advantage_eps: float = 1e-4
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1


def check_options(group: GroupOptions, loss: GRPOLossOptions, reward_weights: dict[str, float],
                  semantic_embeddings: str | None, cf_checkpoint: str | None, transition_decay: float,
                  accumulate_grad_batches: int) -> None:
    """Refuse settings that cannot work together (the arguments are ``GRPOModule``'s of the same names).

    Raises:
        ConfigurationError: an unknown reward, a model-backed reward without its file, a rank-aware reward on
            sampled groups, ``resample`` on beam groups, a group under 2, or a count under 1.
    """
    unknown = sorted(set(reward_weights) - set(REWARDS) - set(MODEL_REWARDS))
    if unknown:
        raise ConfigurationError(f"unknown reward(s) {unknown}; known: {sorted(REWARDS) + list(MODEL_REWARDS)}")
    if "semantic" in reward_weights and not semantic_embeddings:
        raise ConfigurationError("the semantic reward needs semantic_embeddings: a .npy file with one row per item id")
    if "cf" in reward_weights and not cf_checkpoint:
        raise ConfigurationError("the cf reward needs cf_checkpoint: a SASRec final_checkpoint/ trained on the same "
                                 "data (`python -m rec_lightning fit --config configs/sasrec.yaml`)")
    if not 0.0 <= transition_decay <= 1.0:
        raise ConfigurationError(f"transition_decay must lie in [0, 1] (e.g. 0.3), got {transition_decay}")
    if group.mode == "sample" and RANK_AWARE & set(reward_weights):
        raise ConfigurationError(f"rewards {sorted(RANK_AWARE & set(reward_weights))} use the beam rank, which sampled "
                                 "groups do not have: use group.mode=beam, or rewards rule/prefix/semantic")
    if group.dynamic_sampling == "resample" and group.mode != "sample":
        raise ConfigurationError("dynamic_sampling=resample needs group.mode=sample (beam search is deterministic); "
                                 "use dynamic_sampling=drop with beam groups")
    if group.size < 2:
        raise ConfigurationError(f"group.size must be at least 2 to compare completions, got {group.size}")
    if loss.num_iterations < 1 or accumulate_grad_batches < 1:
        raise ConfigurationError("loss.num_iterations and accumulate_grad_batches must be >= 1")

"""GRPO maths: group-normalised advantages, the k3 KL estimator, and the clipped policy loss.

Notation (per completion b, token t): ``logp`` policy log-prob, ``old`` the rollout policy's (equal
to ``logp`` in value on the first update of a rollout), ``ref`` the reference model's, ``m`` the
completion mask, ``A_b`` the advantage.

- KL (k3, Schulman): ``kl = exp(ref - logp) - (ref - logp) - 1`` (>= 0, unbiased for KL(pi||ref)).
- Token ratio ``rho = exp(logp - old)``; surrogate ``min(rho A, clip(rho, 1-eps, 1+eps_high) A)``;
  per-token loss ``l = -surrogate + beta kl``.
- Aggregation: ``grpo`` = mean over completions of the masked token mean (the original's default);
  ``dapo`` = masked token mean over the whole batch; ``dr_grpo`` = masked token sum / (B x
  max_completion_length), a constant normaliser (Dr. GRPO); ``gspo`` = sequence-level ratio
  ``exp(mean_t(logp - old))`` clipped per sequence, plus beta x the sequence's mean KL.
With one update per rollout (the original's only mode) rho = 1 and clipping never binds; with
several updates per rollout the ratio and clipping are real (the original had neither).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from rec_lightning.errors import ConfigurationError

LossType = Literal["grpo", "dapo", "dr_grpo", "gspo"]
RewardScaling = Literal["group", "batch", "none"]


def group_advantages(rewards: torch.Tensor, group_size: int, scale: RewardScaling = "group",
                     eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages ``(r - mean_group) / (std + eps)``; the std is unbiased (divides by G-1), as the original.

    Args:
        rewards: ``[B x G]`` total rewards, group after group.
        group_size: G.
        scale: ``group`` divides by each group's std, ``batch`` by the std of all rewards, ``none`` only centres.
        eps: added to the std (the original's 1e-4).

    Returns:
        ``(advantages [B x G], zero_variance [B])``; a group whose rewards are all equal has advantage 0
        (nothing to learn from it but the KL term) and is flagged in ``zero_variance``.
    """
    grouped = rewards.view(-1, group_size)  # [B, G]
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    zero_variance = (grouped.max(dim=1).values - grouped.min(dim=1).values) == 0  # [B]
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centered)
        advantages = centered / (std + eps)
    elif scale == "batch":
        advantages = centered / (rewards.std() + eps if rewards.numel() > 1 else eps)
    elif scale == "none":
        advantages = centered
    else:
        raise ConfigurationError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    advantages = advantages.masked_fill(zero_variance[:, None], 0.0)  # exact zeros, whatever eps
    return advantages.reshape(-1), zero_variance


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token ``exp(ref - logp) - (ref - logp) - 1``."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor  # scalar to backpropagate
    kl: torch.Tensor  # mean over completions of the masked-mean KL (0 when beta = 0)
    clip_fraction: torch.Tensor  # share of tokens (or sequences for gspo) where clipping bound


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)  # [B]


def policy_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, old_logp: torch.Tensor | None = None,
                ref_logp: torch.Tensor | None = None, beta: float = 0.0, epsilon: float = 0.2,
                epsilon_high: float | None = None, loss_type: LossType = "grpo",
                max_completion_length: int | None = None) -> PolicyLossOutput:
    """The GRPO objective to minimise.

    Args:
        logp: ``[B, T]`` per-token log-probs of the completions under the policy (with grad).
        advantages: ``[B]``.
        mask: ``[B, T]`` 1 on completion tokens.
        old_logp: ``[B, T]`` rollout log-probs; None means on-policy (``logp`` detached).
        ref_logp: ``[B, T]`` reference log-probs; needed when ``beta > 0``.
        beta: KL coefficient.
        epsilon, epsilon_high: clip range ``[1 - epsilon, 1 + epsilon_high]`` (epsilon_high defaults to epsilon).
        loss_type: ``grpo``, ``dapo``, ``dr_grpo`` or ``gspo`` (see the module docstring).
        max_completion_length: ``dr_grpo``'s normaliser (default: T).
    """
    mask = mask.to(logp.dtype)
    old = logp.detach() if old_logp is None else old_logp
    high = epsilon if epsilon_high is None else epsilon_high
    advantages = advantages.to(logp.dtype)[:, None]  # [B, 1]
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        kl = kl_k3(logp, ref_logp)  # [B, T]
    else:
        kl = torch.zeros_like(logp)
    if loss_type == "gspo":
        log_ratio = _masked_mean(logp - old, mask)  # [B]
        ratio = torch.exp(log_ratio)[:, None]  # [B, 1]
        clipped = ratio.clamp(1 - epsilon, 1 + high)
        surrogate = torch.minimum(ratio * advantages, clipped * advantages)[:, 0]  # [B]
        loss = (-surrogate + beta * _masked_mean(kl, mask)).mean()
        clip_fraction = ((ratio != clipped).to(logp.dtype)).mean()
        return PolicyLossOutput(loss, _masked_mean(kl, mask).mean().detach(), clip_fraction.detach())
    ratio = torch.exp(logp - old)  # [B, T]
    clipped = ratio.clamp(1 - epsilon, 1 + high)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages) + beta * kl  # [B, T]
    if loss_type == "grpo":
        loss = _masked_mean(per_token, mask).mean()
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        normaliser = logp.shape[0] * (max_completion_length or logp.shape[1])
        loss = (per_token * mask).sum() / normaliser
    else:
        raise ConfigurationError(f"loss_type must be grpo, dapo, dr_grpo or gspo, got {loss_type!r}")
    clip_fraction = ((ratio != clipped).to(logp.dtype) * mask).sum() / mask.sum().clamp(min=1.0)
    return PolicyLossOutput(loss, _masked_mean(kl, mask).mean().detach(), clip_fraction.detach())

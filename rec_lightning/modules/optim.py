"""AdamW with warmup then cosine (or linear) decay to a floor: the optimizer of every training module.

The original SFT ran linear decay to zero after 20 warmup steps; its cosine-with-floor schedule was
dead code (defect 14). Here the schedule is a choice, the floor is ``min_lr_ratio x lr``, and
biases and norm weights (1-D parameters) get no weight decay.

The decay follows whichever training budget runs out first: the step budget (``max_steps`` or
``max_epochs``) and, when the Trainer has ``max_time``, the wall-time budget (the share of
``max_time`` Lightning's Timer has used, which a resumed run restores). A run bounded only by
``max_time`` thus decays to the floor exactly when time is up, without guessing a step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

import torch

from rec_lightning.errors import ConfigurationError


@dataclass
class OptimizerOptions:
    """AdamW and learning-rate schedule settings.

    Attributes:
        lr: peak learning rate.
        weight_decay: decoupled weight decay on matrices (LoRA weights, SID rows, full weights).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: optimizer steps of linear warmup (the original used 20).
        warmup_ratio: warmup as a fraction of all optimizer steps; used instead of
            ``warmup_steps`` when > 0 (needs a step budget: with only ``max_time`` use ``warmup_steps``).
        schedule: ``cosine``, ``linear`` (to the floor) or ``constant`` after warmup.
        min_lr_ratio: the floor, as a fraction of ``lr`` (0 decays to zero).
        fused: torch's fused AdamW kernel (one kernel for all parameters); None uses it when every trainable
            parameter is on a GPU, and torch's default (for-each on GPU, a loop on CPU) otherwise.
    """

    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 20
    warmup_ratio: float = 0.0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    fused: bool | None = None

    def num_warmup_steps(self, total_steps: float) -> int:
        if self.warmup_ratio > 0:
            if math.isinf(total_steps):
                raise ConfigurationError("optimizer.warmup_ratio needs a step budget (trainer.max_steps or max_epochs); a run "
                                 "bounded only by trainer.max_time: set optimizer.warmup_steps instead")
            return round(self.warmup_ratio * total_steps)
        return self.warmup_steps


def lr_multiplier(step: int, warmup_steps: int, total_steps: float, schedule: str, min_lr_ratio: float,
                  time_fraction: float = 0.0) -> float:
    """Learning-rate factor at optimizer step ``step`` (0-based).

    Warmup: ``(step + 1) / warmup_steps``, so the first step already moves. Then, with
    ``progress = max((step - warmup) / (total - warmup), time_fraction)`` clipped to [0, 1], cosine gives
    ``floor + (1 - floor) * (1 + cos(pi * progress)) / 2`` and linear ``floor + (1 - floor) * (1 - progress)``.
    ``total_steps`` may be infinite (a run bounded by time only); ``time_fraction`` is the share of the
    wall-time budget used so far (0 without one).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    step_fraction = 0.0 if math.isinf(total_steps) else (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, max(step_fraction, time_fraction))
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    else:
        raise ConfigurationError(f"optimizer.schedule must be 'cosine', 'linear' or 'constant', got {schedule!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def build_optimizer(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], options: OptimizerOptions,
                    total_steps: float, time_fraction: Callable[[], float] | None = None) -> dict:
    """AdamW over the trainable parameters and its per-step scheduler, in Lightning's format.

    Args:
        named_parameters: e.g. ``module.named_parameters()``; frozen ones are skipped.
        options: the settings.
        total_steps: optimizer steps of the whole run (``trainer.estimated_stepping_batches``; may be inf).
        time_fraction: share of the wall-time budget used so far (:func:`time_budget_fraction`), or None.

    Raises:
        ValueError: no trainable parameters, or no budget at all (neither steps nor time).

    Returns:
        ``{"optimizer": AdamW, "lr_scheduler": {"scheduler": LambdaLR, "interval": "step"}}``.
    """
    decay, no_decay = [], []
    for _, parameter in named_parameters:
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    if not decay and not no_decay:
        raise ConfigurationError("no trainable parameters: check the fine-tuning mode")
    groups = [{"params": decay, "weight_decay": options.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    fused = options.fused
    if fused is None:
        fused = all(p.is_cuda for group in groups for p in group["params"])
    optimizer = torch.optim.AdamW(groups, lr=options.lr, betas=tuple(options.betas), eps=options.eps,
                                  **({"fused": True} if fused else {}))
    if math.isinf(total_steps) and time_fraction is None and options.schedule != "constant":
        raise ConfigurationError(f"the {options.schedule} learning-rate schedule needs a budget: set trainer.max_steps, "
                         "trainer.max_epochs or trainer.max_time (or optimizer.schedule: constant)")
    total_steps = total_steps if math.isinf(total_steps) else max(1, int(total_steps))
    warmup = options.num_warmup_steps(total_steps)

    def factor(step: int) -> float:
        used = time_fraction() if time_fraction is not None else 0.0
        return lr_multiplier(step, warmup, total_steps, options.schedule, options.min_lr_ratio, used)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def time_budget_fraction(trainer) -> Callable[[], float] | None:
    """The share of ``trainer.max_time`` used so far, as a callable, or None without a time budget.

    Reads Lightning's ``Timer`` callback (added by ``max_time``), whose elapsed time is saved in
    checkpoints, so a resumed run continues the schedule where it stopped.
    """
    from lightning.pytorch.callbacks import Timer

    timers = [callback for callback in getattr(trainer, "callbacks", []) if isinstance(callback, Timer)]
    if not timers or timers[0].time_remaining("train") is None:
        return None
    timer = timers[0]

    def fraction() -> float:
        elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train")
        return min(1.0, elapsed / max(elapsed + remaining, 1e-9))

    return fraction

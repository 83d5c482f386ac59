"""``GRPOModule``: refine an SFT model with group rewards and a KL penalty to the SFT reference.

What runs by default (the original's recipe, minionerec-reference.md section 4, with its defects fixed):
for each prompt, the group is the G = 16 items of one constrained beam search; the reward is
``ranking`` (1 for the target, a rank-aware penalty for the other beams when the target is among
them); advantages are ``(r - mean) / (std + 1e-4)`` per group (unbiased std); the loss is the
``grpo`` aggregation (per-completion token mean, then batch mean) of ``-A + beta * k3 KL`` with
beta = 1e-3; one optimizer update per rollout (so the policy ratio is 1: REINFORCE with a group
baseline, as the original).

Differences from the original code: each example carries its own target (no global prompt->target
dicts); the same prompt as SFT and evaluation; generation is our exact constrained beam search
(never unconstrained); the reference is the SFT model without a second copy of the base under LoRA
(see :mod:`rec_lightning.modules.reference`); ``gspo`` is real sequence-level clipping; with
``num_iterations > 1`` rollouts are reused with a clipped ratio to the rollout policy;
``add_ground_truth`` and dynamic sampling work per group, so repeated targets in a batch are fine;
``ranking`` rewards are refused for sampled groups (their order carries no rank). Differences from
the GRPO paper: beam groups are not samples, so the estimator is biased towards the beam list; that
is what MiniOneRec found to work for ranking metrics, and sampled groups are one option away.

Beside it: ``grpo_options`` (option groups), ``grpo_rollout`` (rewards, scoring, metrics), ``grpo_sharding`` (FSDP2).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from rec_lightning.errors import ConfigurationError
from rec_lightning.generation.logprobs import completion_logprobs
from rec_lightning.generation.trie import SIDTrie
from rec_lightning.modules.export import save_final_checkpoint
from rec_lightning.modules.grpo_options import GroupOptions, GRPOLossOptions, check_options
from rec_lightning.modules.grpo_rollout import (Rollout, build_model_rewards, completion_tokens, counts_train_split,
                                                generate_groups, group_scorer, inject_ground_truth,
                                                resample_flat_groups, reward_functions, rollout_metrics,
                                                rollout_targets)
from rec_lightning.modules.grpo_sharding import gathered_policy, release_reference, shard_policy
from rec_lightning.modules.inference import load_checkpoint
from rec_lightning.modules.lora import LoraOptions, is_adapter_model, merge_adapter
from rec_lightning.modules.optim import OptimizerOptions, build_optimizer, time_budget_fraction
from rec_lightning.modules.reference import (PolicyMode, build_policy, disable_dropout, reference_model,
                                             sync_reference)
from rec_lightning.modules.sft import _as, response_loss_sum
from rec_lightning.modules.sharding import ShardingOptions, is_sharded, run_sharded
from rec_lightning.prompts import NEXT_ITEM
from rec_lightning.rl.losses import group_advantages, policy_loss

__all__ = ["GRPOModule", "GroupOptions", "GRPOLossOptions", "Rollout", "disable_dropout"]


class GRPOModule(pl.LightningModule):
    """GRPO on top of an SFT ``final_checkpoint`` (LoRA adapter or full model).

    Args:
        sft_checkpoint: the SFT ``final_checkpoint/`` folder; ``data.tokenizer`` must point to it too.
        finetune: ``lora`` (fresh adapter on the merged SFT model; reference = adapter off) or ``full``.
        lora: LoRA settings for ``lora`` mode.
        group: how groups are generated.
        rewards: reward name -> weight; names: rule, ranking, ranking_only, prefix, semantic, cf, transition,
            transition_log.
        semantic_embeddings: ``.npy`` item embeddings (row = item id) for the ``semantic`` reward.
        cf_checkpoint: a SASRec ``final_checkpoint/`` (``fit --config configs/sasrec.yaml`` on the same data)
            for the ``cf`` reward: the SASRec probability of each completion after the user's history.
        transition_decay: recency decay of the ``transition`` reward, the transition baseline's probability of
            each completion after the user's history (:mod:`~rec_lightning.modules.transition_reward`), counted
            on the train split of the data module (choose the decay as the baseline's, on valid); also the decay of
            ``transition_log``, the log of ``evaluate --prior transition``'s prior: with ``loss.reward_scaling:
            none`` and ``loss.beta`` = 1 / W its optimum is the fused model of prior weight W.
        transition_leave_one_out: score each prompt with its own train transition (``last history item ->
            target``, once per user) and its target's popularity count taken out of the counts, the prior an unseen
            user gets; without it a train prompt's prior points at the answer SFT has already fitted.
        loss: the objective.
        optimizer: AdamW + schedule (the original: lr 1e-5, 3% warmup, cosine to 0).
        accumulate_grad_batches: micro-batches per optimizer step (this module optimises manually,
            so set it here, not on the Trainer). Prompts per step = data.batch_size x this x devices.
        max_grad_norm: gradient clipping (the original: 0.3).
        ref_sync_steps: every this many optimizer steps, ``ref <- (1 - alpha) ref + alpha policy``; 0 = never.
        ref_sync_alpha: that alpha.
        share_prompt: compute each prompt once per group in the update (same result, much faster).
        sampling_seed: seed of the sampling generator (plus the global rank).
        disable_dropout: set every dropout of the policy (attention, hidden, LoRA) to 0, so the
            log-probs of the update and of the KL term are those of the model that generated the
            group, as in the reference (TRL's ``disable_dropout``). Off: the model's own dropout.
        sharding: FSDP2 settings, used under ``trainer.strategy: ModelParallelStrategy``
            (:mod:`~rec_lightning.modules.grpo_sharding`); ignored otherwise.
    """

    def __init__(
        self,
        sft_checkpoint: str,
        finetune: PolicyMode = "lora",
        lora: LoraOptions = LoraOptions(),
        group: GroupOptions = GroupOptions(),
        rewards: dict[str, float] | None = None,
        semantic_embeddings: str | None = None,
        cf_checkpoint: str | None = None,
        transition_decay: float = 0.3,
        transition_leave_one_out: bool = False,
        loss: GRPOLossOptions = GRPOLossOptions(),
        optimizer: OptimizerOptions = OptimizerOptions(lr=1e-5, warmup_steps=0, warmup_ratio=0.03, min_lr_ratio=0.0),
        accumulate_grad_batches: int = 1,
        max_grad_norm: float = 0.3,
        ref_sync_steps: int = 0,
        ref_sync_alpha: float = 0.6,
        share_prompt: bool = True,
        sampling_seed: int = 0,
        disable_dropout: bool = False,
        sharding: ShardingOptions = ShardingOptions(),
    ) -> None:
        super().__init__()
        self.sft_checkpoint = sft_checkpoint
        self.finetune = finetune
        self.lora_options = _as(LoraOptions, lora)
        self.group = _as(GroupOptions, group)
        self.reward_weights = dict(rewards or {"ranking": 1.0})
        self.semantic_embeddings = semantic_embeddings
        self.cf_checkpoint = cf_checkpoint
        self.transition_decay = transition_decay
        self.transition_leave_one_out = transition_leave_one_out
        self.loss_options = _as(GRPOLossOptions, loss)
        self.optimizer_options = _as(OptimizerOptions, optimizer)
        self.accumulate = accumulate_grad_batches
        self.max_grad_norm = max_grad_norm
        self.ref_sync_steps = ref_sync_steps
        self.ref_sync_alpha = ref_sync_alpha
        self.share_prompt = share_prompt
        self.sampling_seed = sampling_seed
        self.disable_dropout = disable_dropout
        self.sharding_options = _as(ShardingOptions, sharding)
        check_options(self.group, self.loss_options, self.reward_weights, semantic_embeddings, cf_checkpoint,
                      transition_decay, accumulate_grad_batches)
        self.save_hyperparameters({
            "sft_checkpoint": sft_checkpoint, "finetune": finetune, "lora": dataclasses.asdict(self.lora_options),
            "group": dataclasses.asdict(self.group), "rewards": self.reward_weights,
            "semantic_embeddings": semantic_embeddings, "cf_checkpoint": cf_checkpoint,
            "transition_decay": transition_decay,
            "transition_leave_one_out": transition_leave_one_out, "loss": dataclasses.asdict(self.loss_options),
            "optimizer": dataclasses.asdict(self.optimizer_options), "accumulate_grad_batches": accumulate_grad_batches,
            "max_grad_norm": max_grad_norm, "ref_sync_steps": ref_sync_steps, "ref_sync_alpha": ref_sync_alpha,
            "share_prompt": share_prompt, "sampling_seed": sampling_seed, "disable_dropout": disable_dropout,
            "sharding": dataclasses.asdict(self.sharding_options),
        })
        self.automatic_optimization = False
        self.strict_loading = False
        self.model = None
        self.reference_copy = None
        self.tokenizer = None
        self.trie: SIDTrie | None = None
        self.catalog = None  # the SFT data's ItemCatalog, carried into the final checkpoint
        self.test_step_fn = None
        self.predict_step_fn = None
        self._buffer: list[Rollout] = []
        self._generator: torch.Generator | None = None
        self._sft_metadata: dict[str, Any] = {}

    # ------------------------------------------------------------------ model construction
    def configure_model(self) -> None:
        """Build the policy from the SFT checkpoint (once), and shard it under ``ModelParallelStrategy``."""
        if self.model is None:
            self._build_from_datamodule()
        if self.device_mesh is not None and not is_sharded(self.model):  # FSDP2 over the data-parallel ranks
            units = shard_policy(self.model, self.reference_copy, self.device_mesh, self.sharding_options,
                                 self.ref_sync_steps)
            rank_zero_info(f"GRPO: sharded with FSDP2 in {units} units over {self.trainer.world_size} processes")

    def _build_from_datamodule(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            raise RuntimeError("GRPOModule needs a RecDataModule (train_format='prompts') passed to Trainer.fit, or "
                               "call module.build(sft_model, tokenizer, catalog) first")
        loaded = load_checkpoint(self.sft_checkpoint, catalog=datamodule.catalog)  # checked against the SFT index
        model, tokenizer, metadata = loaded.model, loaded.tokenizer, loaded.metadata
        trained_on = loaded.settings.next_item_task
        if getattr(datamodule, "next_item_task", NEXT_ITEM) != trained_on:
            raise ConfigurationError(f"the SFT checkpoint was trained with next_item_task={trained_on!r}, but the data module "
                             f"uses {datamodule.next_item_task!r}: set data.next_item_task to {trained_on!r}, so GRPO "
                             "sees the prompt the SFT model learned")
        sid_tokens = datamodule.catalog.sid_tokens
        if datamodule.tokenizer.convert_tokens_to_ids(sid_tokens) != tokenizer.convert_tokens_to_ids(sid_tokens) or \
                datamodule.tokenizer.eos_token_id != tokenizer.eos_token_id:
            raise ConfigurationError(f"the data module's tokenizer differs from the SFT checkpoint's: set data.tokenizer to "
                             f"{self.sft_checkpoint}")
        held_out = (metadata or {}).get("holdout")
        if held_out:
            rank_zero_info(f"GRPO: the SFT model held out {held_out['fraction']:g} of the train rows (seed "
                           f"{held_out['seed']}, trained on the {held_out['train_on']} rows); this run trains on "
                           + _rows_described(datamodule))
        train = datamodule.records("train") if counts_train_split(self.reward_weights) else None
        self.build(model, tokenizer, datamodule.catalog, metadata, train_records=train)

    def build(self, sft_model, tokenizer, catalog, metadata: dict[str, Any] | None = None,
              train_records: Sequence[Any] | None = None) -> None:
        """Set up the policy, the reference and the trie from a loaded SFT model (also for notebooks).

        ``train_records`` (``datamodule.records("train")``) is needed by the ``transition(_log)`` rewards only.
        """
        if counts_train_split(self.reward_weights) and train_records is None:
            raise ConfigurationError("the transition reward counts transitions on the train split: pass "
                                     "train_records=datamodule.records('train') to build()")
        sid_token_ids = tokenizer.convert_tokens_to_ids(catalog.sid_tokens)
        self.model, self.reference_copy = build_policy(sft_model, self.finetune, self.lora_options, sid_token_ids,
                                                       need_reference=self.loss_options.beta > 0)
        self.model.train()  # loaded for inference in eval mode; LoRA dropout belongs to training
        if self.disable_dropout:
            disable_dropout(self.model)
        self.tokenizer = tokenizer
        self.catalog = catalog
        self._sft_metadata = dict(metadata or {})
        self.trie = SIDTrie.from_catalog(catalog, tokenizer.get_vocab(), tokenizer.eos_token_id)
        self.register_buffer("item_to_key", self.trie.catalog_item_index(catalog), persistent=False)
        self._model_rewards = build_model_rewards(self.reward_weights, catalog, self.semantic_embeddings,
                                                  self.cf_checkpoint, train_records, self.transition_decay,
                                                  self.transition_leave_one_out)

    # ------------------------------------------------------------------ rollout
    def _device_trie(self, device: torch.device) -> SIDTrie:
        if self.trie.device != device:
            self.trie = self.trie.to(device)  # moved once, then reused every step
        return self.trie

    def _generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """``[B, G]`` trie item indices of each prompt's group."""
        trie = self._device_trie(prompt_ids.device)
        if self.group.mode == "sample" and (self._generator is None or self._generator.device != prompt_ids.device):
            self._generator = torch.Generator(device=prompt_ids.device).manual_seed(self.sampling_seed + self.global_rank)
        return generate_groups(self.model, prompt_ids, prompt_mask, trie, self.group, self._generator)

    @torch.no_grad()
    def rollout(self, batch: dict) -> tuple[Rollout, dict[str, float]]:
        """Generate the groups, score them, and compute advantages (and reference log-probs)."""
        prompt_ids, prompt_mask = batch["input_ids"], batch["attention_mask"]
        group_size = self.group.size
        targets = rollout_targets(self.item_to_key, batch["target_item_id"], self.trie, group_size)  # [B]
        was_training = self.model.training
        self.model.eval()
        items = self._generate(prompt_ids, prompt_mask)  # [B, G]
        score = group_scorer(reward_functions(self.reward_weights, self._model_rewards), self.reward_weights,
                             self.trie.keys, targets, group_size, batch)
        if self.group.dynamic_sampling == "resample":
            sharded = is_sharded(self.model) and self.trainer.world_size > 1  # the ranks decide together
            resample_flat_groups(items, prompt_ids, prompt_mask, score, self._generate, group_size,
                                 self.group.max_resample_rounds, self.trainer.strategy if sharded else None)
        if self.group.add_ground_truth:
            inject_ground_truth(items, targets)
        self.model.train(was_training)
        if bool((items < 0).any()):
            raise RuntimeError("constrained decoding returned fewer items than the group size")
        result = score(items)
        total = torch.tensor(result.total, dtype=torch.float32, device=prompt_ids.device)  # [B x G]
        advantages, zero_variance = group_advantages(total, group_size, self.loss_options.reward_scaling,
                                                     self.loss_options.advantage_eps)
        metrics = rollout_metrics(items, targets, total, zero_variance, result.per_function, group_size)
        if self.group.dynamic_sampling == "drop" and bool(zero_variance.any()) and not bool(zero_variance.all()):
            keep = ~zero_variance
            prompt_ids, prompt_mask, items = prompt_ids[keep], prompt_mask[keep], items[keep]
            advantages = advantages.view(-1, group_size)[keep].flatten()
        completions, completion_mask = completion_tokens(self._device_trie(items.device), items,
                                                         self.tokenizer.pad_token_id)
        ref_logp = self._reference_logprobs(prompt_ids, prompt_mask, completions)
        return Rollout(prompt_ids, prompt_mask, completions, completion_mask, advantages, ref_logp), metrics

    def _reference_logprobs(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                            completions: torch.Tensor) -> torch.Tensor | None:
        """The reference model's completion log-probs, or None when ``beta`` is 0 (no KL term)."""
        if not self.loss_options.beta > 0:
            return None
        with reference_model(self.model, self.reference_copy) as reference:
            ref_logp = run_sharded(reference, completion_logprobs, reference, prompt_ids, prompt_mask, completions,
                                   self.group.size, self.share_prompt)
            release_reference(reference, self.model)
        return ref_logp

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        start = time.perf_counter()
        rollout, metrics = self.rollout(batch)
        metrics["generation_s"] = time.perf_counter() - start
        self._buffer.append(rollout)
        if len(self._buffer) == self.accumulate:
            metrics.update(self._update())
        shown = {"reward", "kl"}  # on the progress bar too: the two numbers a GRPO run is watched by
        for group, prog_bar in ((shown, True), (set(metrics) - shown, False)):
            values = {f"train/{k}": metrics[k] for k in metrics if k in group}
            if values:
                self.log_dict(values, on_step=True, on_epoch=False, prog_bar=prog_bar,
                              batch_size=batch["input_ids"].shape[0], sync_dist=False)

    def _update(self) -> dict[str, float]:
        """``num_iterations`` optimizer steps over the buffered rollouts."""
        start = time.perf_counter()
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        iterations = self.loss_options.num_iterations
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        tokens = 0
        for iteration in range(iterations):
            for rollout in self._buffer:
                out = self._loss(rollout, first_pass=iteration == 0)
                self.manual_backward(out.loss / len(self._buffer))
                stats["loss"] += out.loss.item() / (len(self._buffer) * iterations)
                stats["kl"] += out.kl.item() / (len(self._buffer) * iterations)
                stats["clip_fraction"] += out.clip_fraction.item() / (len(self._buffer) * iterations)
                tokens += rollout.prompt_mask.sum().item() + rollout.completion_mask.sum().item()
            if self.max_grad_norm > 0:
                self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if self.ref_sync_steps and self.global_step % self.ref_sync_steps == 0:
                sync_reference(self.model, self.reference_copy, self.ref_sync_alpha)
        self._buffer.clear()
        elapsed = time.perf_counter() - start
        return {**stats, "update_s": elapsed, "tokens_per_s": tokens / max(elapsed, 1e-9),
                "lr": optimizer.param_groups[0]["lr"]}

    def _loss(self, rollout: Rollout, first_pass: bool):
        logp = run_sharded(self.model, completion_logprobs, self.model, rollout.prompt_ids, rollout.prompt_mask,
                           rollout.completions, self.group.size, self.share_prompt)  # [B x G, C]
        if first_pass and self.loss_options.num_iterations > 1:
            rollout.old_logp = logp.detach()
        options = self.loss_options
        return policy_loss(logp, rollout.advantages, rollout.completion_mask, old_logp=rollout.old_logp,
                           ref_logp=rollout.ref_logp, beta=options.beta, epsilon=options.epsilon,
                           epsilon_high=options.epsilon_high, loss_type=options.loss_type,
                           max_completion_length=rollout.completions.shape[1])

    def configure_optimizers(self) -> dict:
        batches = self.trainer.estimated_stepping_batches  # micro-batches (manual optimization)
        steps = batches if math.isinf(batches) else max(1, int(batches) // self.accumulate) * self.loss_options.num_iterations
        return build_optimizer(self.model.named_parameters(), self.optimizer_options, steps,
                               time_budget_fraction(self.trainer))

    # ------------------------------------------------------------------ validation and test
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss_sum, count = run_sharded(self.model, response_loss_sum, self.model, batch["input_ids"],
                                      batch["attention_mask"], batch["labels"])
        self.log("val/loss", loss_sum / count.clamp(min=1), batch_size=int(count), sync_dist=True, prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> Any:
        if self.test_step_fn is None:
            raise RuntimeError("GRPOModule has no test step of its own: add the ranking evaluation callback or use "
                               "`python -m rec_lightning evaluate` on the final checkpoint")
        return self.test_step_fn(self, batch, batch_idx)

    def predict_step(self, batch: dict, batch_idx: int) -> Any:
        """Delegates to ``self.predict_step_fn`` (set by the ranking prediction writer, which ``predict`` adds)."""
        if self.predict_step_fn is None:
            raise ConfigurationError("GRPOModule ranks in predict through the RankingPredictionWriter callback, which "
                                     "`python -m rec_lightning predict` adds; in Python add "
                                     "rec_lightning.callbacks.predictions.RankingPredictionWriter() to the Trainer's "
                                     "callbacks (or use `python -m rec_lightning evaluate`)")
        return self.predict_step_fn(self, batch, batch_idx)

    # ------------------------------------------------------------------ checkpoints and export
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # class_path: LightningCLI's --ckpt_path re-parses the hyper-parameters as this class's arguments
        checkpoint["rec_lightning"] = {"class_path": f"{type(self).__module__}.{type(self).__qualname__}"}
        if not self.ref_sync_steps and not is_sharded(self.model):  # keep what trains; sharded: all (grpo_sharding)
            keep = {name for name, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def load_trainable_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state_dict, strict=False)

    def merged_policy(self) -> torch.nn.Module | None:
        """A plain model with the policy's adapter folded in (a copy; training can go on). Sharded: a collective,
        rank 0 gets the gathered policy (:func:`~rec_lightning.modules.grpo_sharding.gathered_policy`), others None."""
        import copy

        if is_sharded(self.model):
            return gathered_policy(self)
        return merge_adapter(copy.deepcopy(self.model)) if is_adapter_model(self.model) else self.model

    def save_final_checkpoint(self, directory: str | Path) -> Path:
        """Write the policy as a full model (the merged SFT + RL weights), tokenizer and metadata. Sharded: a
        collective; rank 0 writes the same folder as an unsharded run, other ranks return (then meet at a barrier)."""
        policy = self.merged_policy()
        if policy is None:  # a sharded rank other than 0
            return Path(directory)
        metadata = {**{k: v for k, v in self._sft_metadata.items() if k != "holdout"}, "stage": "grpo",
                    "sft_checkpoint": str(self.sft_checkpoint),
                    "grpo": {k: v for k, v in self.hparams.items() if k != "sft_checkpoint"}}
        if "holdout" in self._sft_metadata:  # the SFT stage's slice, not this run's rows
            metadata["sft_holdout"] = self._sft_metadata["holdout"]
        return save_final_checkpoint(policy, self.tokenizer, directory, metadata, catalog=self.catalog)


def _rows_described(datamodule) -> str:
    """Which train rows a data module trains on, in words (for the log)."""
    slice_ = getattr(datamodule, "holdout", None)
    if not slice_:
        return "every row"
    return f"the {slice_['train_on']} rows of holdout_fraction {slice_['fraction']:g} (seed {slice_['seed']})"

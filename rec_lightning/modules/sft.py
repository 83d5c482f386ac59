"""``SFTModule``: supervised fine-tuning of a causal LM on SID prompts, loss on the response only.

The model is built in :meth:`SFTModule.configure_model` from the data module's tokenizer and SID
tokens (or by hand with :meth:`SFTModule.build`), so LightningCLI, DDP and notebooks share one
path. Logits are computed only at response positions (prompts are ~95% of a next-item example's
tokens), which saves the full ``[B, L, V]`` logits tensor. Lightning ``.ckpt`` files keep only the
trainable weights (plus optimizer, scheduler and RNG states); the frozen base is rebuilt
deterministically, so resuming from an end-of-epoch checkpoint reproduces an uninterrupted run.
Under sharding (``ModelParallelStrategy``) a ``.ckpt`` is a folder of per-rank shards that holds every
weight (Lightning's distributed load needs each key of the model), and the final checkpoint is
gathered onto rank 0 (:meth:`SFTModule.save_final_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from rec_lightning.data.dataset import IGNORE_INDEX
from rec_lightning.data.tokenizer import add_sid_tokens as add_sid_tokens_to_tokenizer
from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.backbone import BackboneOptions, add_sid_tokens, build_backbone
from rec_lightning.modules.continued import continues_checkpoint
from rec_lightning.modules.export import CheckpointMismatchError, build_metadata, save_final_checkpoint
from rec_lightning.modules.lora import FinetuneMode, LoraOptions, apply_finetuning, count_parameters, unwrap_base
from rec_lightning.modules.optim import OptimizerOptions, build_optimizer, time_budget_fraction
from rec_lightning.modules.sft_loss import LossOptions, sid_level_token_weights
from rec_lightning.modules.sharding import ShardingOptions, gather_full_state, is_sharded, run_sharded, shard_model
from rec_lightning.prompts import NEXT_ITEM

#: ``test_step(module, batch, batch_idx)`` hook; the ranking evaluation registers one (see ``test_step``).
TestStepFn = Callable[["SFTModule", dict, int], Any]


def _as(cls, value):
    """A dataclass instance from an instance, a dict (checkpoint hyper-parameters) or None (defaults)."""
    if value is None:
        return cls()
    if isinstance(value, dict):
        return cls(**value)
    return dataclasses.replace(value)


def response_loss_sum(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      labels: torch.Tensor, position_ids: torch.Tensor | None = None, label_smoothing: float = 0.0,
                      token_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over response tokens, and their count (or summed weight).

    Runs the decoder on the whole sequence but the output head only where a label follows
    (position ``t`` predicts ``labels[t + 1]``).

    Args:
        model: a ``transformers`` causal LM or a PEFT wrapper of one.
        input_ids, attention_mask, labels: ``[B, L]``; labels are -100 on the prompt and padding.
        position_ids: ``[B, L]`` for a packed batch (:mod:`rec_lightning.data.packing`): each example's
            positions start at 0 and the model masks attention across examples; ``attention_mask`` is then
            ignored (it only marks real tokens).
        label_smoothing: ``F.cross_entropy``'s (0: plain).
        token_weights: ``[V]`` weight per target token id (:func:`~rec_lightning.modules.sft_loss.sid_level_token_weights`);
            each token's loss is multiplied by its target's weight.

    Returns:
        ``(loss_sum, num_tokens)``: float32 scalar and long scalar; with ``token_weights``, ``num_tokens`` is the
        float32 sum of the weights (so ``loss_sum / num_tokens`` is the weighted mean).
    """
    base = unwrap_base(model)
    decoder = base.get_decoder()
    if position_ids is not None:  # packed: the block-diagonal causal mask comes from the position-id resets
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state  # [B, L, H]
    else:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]  # [B, L-1]
    keep = targets != IGNORE_INDEX  # [B, L-1]
    selected = hidden[:, :-1][keep]  # [N, H]
    logits = base.get_output_embeddings()(selected)  # [N, V]
    kept_targets = targets[keep]  # [N]
    if token_weights is None:
        return F.cross_entropy(logits.float(), kept_targets, reduction="sum", label_smoothing=label_smoothing), keep.sum()
    per_token = F.cross_entropy(logits.float(), kept_targets, reduction="none", label_smoothing=label_smoothing)  # [N]
    weights = token_weights.to(per_token.device)[kept_targets]  # [N]
    return (per_token * weights).sum(), weights.sum()


class SFTModule(pl.LightningModule):
    """Supervised fine-tuning (SFT) with LoRA (+ trainable SID rows), full fine-tuning or freeze_lm.

    Args:
        backbone: where the LM comes from (hub id, local folder, or a config for from-scratch).
        finetune: ``lora`` (LoRA + SID rows), ``full`` (every weight) or ``freeze_lm`` (SID rows only).
        lora: LoRA settings (``lora`` mode).
        optimizer: AdamW + schedule. Effective batch per optimizer step = data.batch_size x
            trainer.accumulate_grad_batches x devices x nodes (the original: 16 x 8 x 8 = 1024).
        loss: training-loss settings (label smoothing, per-SID-level weights; :mod:`rec_lightning.modules.sft_loss`).
        sharding: FSDP2 settings, used under ``trainer.strategy: ModelParallelStrategy`` (see
            :mod:`~rec_lightning.modules.sharding`); ignored otherwise.
    """

    def __init__(
        self,
        backbone: BackboneOptions = BackboneOptions(),
        finetune: FinetuneMode = "lora",
        lora: LoraOptions = LoraOptions(),
        optimizer: OptimizerOptions = OptimizerOptions(),
        loss: LossOptions = LossOptions(),
        sharding: ShardingOptions = ShardingOptions(),
    ) -> None:
        super().__init__()
        self.backbone_options = _as(BackboneOptions, backbone)
        self.finetune = finetune
        self.lora_options = _as(LoraOptions, lora)
        self.optimizer_options = _as(OptimizerOptions, optimizer)
        self.loss_options = _as(LossOptions, loss)
        self.loss_options.check()
        self.sharding_options = _as(ShardingOptions, sharding)
        # plain dicts, so checkpoints load with torch.load(weights_only=True)
        hparams = {"backbone": dataclasses.asdict(self.backbone_options), "finetune": finetune,
                   "lora": dataclasses.asdict(self.lora_options), "optimizer": dataclasses.asdict(self.optimizer_options),
                   "sharding": dataclasses.asdict(self.sharding_options)}
        if not self.loss_options.is_plain:  # absent when plain: checkpoints of earlier versions read the same
            hparams["loss"] = {"label_smoothing": self.loss_options.label_smoothing,
                               "level_weights": None if self.loss_options.level_weights is None
                               else list(self.loss_options.level_weights)}
        self.save_hyperparameters(hparams)
        self.token_weights: torch.Tensor | None = None  # [V] from loss.level_weights, set by build()
        self.strict_loading = False  # checkpoints hold only the trainable weights; on_load_checkpoint checks them
        self.model = None
        self.tokenizer = None
        self.sid_tokens: list[str] = []
        self.sid_token_ids: list[int] = []
        self.embedding_rows = 0
        self.sid_index_checksum: str | None = None
        self.catalog = None  # the data's ItemCatalog, carried in the final checkpoint (item_catalog.json)
        self.test_step_fn: TestStepFn | None = None
        self.predict_step_fn: TestStepFn | None = None
        self.data_settings: dict[str, Any] = {}
        self._val_loss_sum = torch.zeros((), dtype=torch.float64)
        self._val_tokens = torch.zeros((), dtype=torch.float64)
        self._last_step_start: float | None = None
        self._last_tokens: torch.Tensor | None = None

    # ------------------------------------------------------------------ model construction
    def configure_model(self) -> None:
        """Build the model from the attached data module (once), and shard it under ``ModelParallelStrategy``."""
        if self.model is None:
            self._build_from_datamodule()
        if self.device_mesh is not None and not is_sharded(self.model):  # FSDP2 over the data-parallel ranks
            units = shard_model(self.model, self.device_mesh, self.sharding_options)
            rank_zero_info(f"SFT: sharded with FSDP2 in {units} units over {self.trainer.world_size} processes")

    def _build_from_datamodule(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            raise RuntimeError("SFTModule needs a data module with .tokenizer and .catalog to build its model: "
                               "pass datamodule=RecDataModule(...) to Trainer.fit, or call module.build(tokenizer, "
                               "sid_tokens) first")
        self.build(datamodule.tokenizer, datamodule.catalog.sid_tokens, datamodule.catalog.checksum(),
                   catalog=datamodule.catalog)
        # recorded in the final checkpoint, so evaluation renders the same prompts
        self.data_settings = {"category": datamodule.category, "category_name": datamodule.category_name,
                              "max_length": datamodule.max_length,
                              "next_item_task": getattr(datamodule, "next_item_task", NEXT_ITEM)}
        if getattr(datamodule, "holdout", None):  # the train rows this model never saw (GRPO's later prompts)
            self.data_settings["holdout"] = datamodule.holdout

    def build(self, tokenizer, sid_tokens: list[str], sid_index_checksum: str | None = None, catalog=None) -> None:
        """Load or build the LM, add the SID rows and apply the fine-tuning mode.

        Args:
            tokenizer: the data's tokenizer (SID tokens are added if missing).
            sid_tokens: e.g. ``catalog.sid_tokens``.
            sid_index_checksum: ``catalog.checksum()``, recorded in the final checkpoint.
            catalog: the data's ``ItemCatalog``, carried in the final checkpoint (``item_catalog.json``) so
                inference needs no data folder; its checksum is used when ``sid_index_checksum`` is None.
        """
        if self.backbone_options.from_scratch:  # the config's vocabulary covers the SID tokens: random rows like all
            add_sid_tokens_to_tokenizer(tokenizer, sid_tokens)
        checksum = sid_index_checksum if sid_index_checksum is not None or catalog is None else catalog.checksum()
        continued = continues_checkpoint(self.backbone_options, tokenizer, sid_tokens, checksum)
        if continued and self.finetune != "full":  # an adapter's loader rebuilds the base with fresh SID rows
            raise ConfigurationError(
                f"finetune {self.finetune!r} on the rec_lightning checkpoint {self.backbone_options.model_name_or_path}: "
                "fine-tuning a checkpoint again is supported with finetune: full (its adapter could not be reloaded "
                "onto the same rows). Fix: set model.init_args.finetune: full")
        base = build_backbone(self.backbone_options, tokenizer)
        report = add_sid_tokens(base, tokenizer, sid_tokens, keep_existing_sid_rows=self.backbone_options.from_scratch,
                                keep_existing_rows=continued)
        self.model = apply_finetuning(base, self.finetune, self.lora_options, report.sid_token_ids)
        trainable, total = count_parameters(self.model)
        rank_zero_info(f"SFT: fine-tuning mode {self.finetune}, {trainable:,} trainable parameters of {total:,} "
                       f"({100.0 * trainable / total:.3f}%); {len(report.sid_token_ids)} SID tokens, embedding rows "
                       f"{report.old_num_rows} -> {report.new_num_rows}")
        self.tokenizer = tokenizer
        self.sid_tokens = list(sid_tokens)
        self.sid_token_ids = report.sid_token_ids
        self.embedding_rows = report.new_num_rows
        self.token_weights = sid_level_token_weights(self.loss_options.level_weights, report.new_num_rows,
                                                     self.sid_tokens, self.sid_token_ids)
        self.sid_index_checksum = checksum
        self.catalog = catalog

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits ``[B, L, V]`` (for inspection; training uses response positions only)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    # ------------------------------------------------------------------ steps
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_step_start is not None and self._last_tokens is not None:
            # tokens of the previous batch over the wall time of its whole step (data, forward, backward, optimizer)
            # a tensor: no host sync each step (the logger reads it every log_every_n_steps)
            rate = self._last_tokens.float() / max(now - self._last_step_start, 1e-9)
            self.log("train/tokens_per_s", rate, on_step=True, on_epoch=False, sync_dist=True, reduce_fx="sum")
        self._last_step_start = now

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.token_weights is not None and self.token_weights.device != self.device:
            self.token_weights = self.token_weights.to(self.device)
        loss_sum, num_tokens = run_sharded(self.model, response_loss_sum, self.model, batch["input_ids"],
                                           batch["attention_mask"], batch["labels"], batch.get("position_ids"),
                                           self.loss_options.label_smoothing, self.token_weights)
        loss = loss_sum / (num_tokens.clamp(min=1e-12) if num_tokens.is_floating_point() else num_tokens.clamp(min=1))
        mask = batch["attention_mask"]
        self._last_tokens = mask.sum()  # read at the next step start: no extra host sync here
        batch_size = len(batch["index"]) if "index" in batch else mask.shape[0]  # examples (a packed batch has fewer rows)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size, sync_dist=True)
        self.log("train/padding_fraction", 1.0 - mask.float().mean(), on_step=True, on_epoch=False,
                 batch_size=batch_size, sync_dist=True)
        if self._trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                     prog_bar=True, batch_size=batch_size)
        return loss

    def on_train_epoch_start(self) -> None:
        self._last_step_start = None  # validation time between epochs is not training throughput

    def on_validation_epoch_start(self) -> None:
        self._val_loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._val_tokens = torch.zeros((), dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss_sum, num_tokens = run_sharded(self.model, response_loss_sum, self.model, batch["input_ids"],
                                           batch["attention_mask"], batch["labels"], batch.get("position_ids"))
        self._val_loss_sum += loss_sum.double()
        self._val_tokens += num_tokens.double()

    def on_validation_epoch_end(self) -> None:
        # token-weighted mean over the whole validation set, exact under DDP (sums, then one all-reduce)
        totals = torch.stack([self._val_loss_sum, self._val_tokens])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum") if self.trainer.world_size > 1 else totals
        self._last_step_start = None
        if totals[1] > 0:
            self.log("val/loss", (totals[0] / totals[1]).float(), prog_bar=True, sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> Any:
        """Delegates to ``self.test_step_fn`` (set by the ranking evaluation), else raises."""
        if self.test_step_fn is None:
            raise RuntimeError("SFTModule has no test step of its own: add the ranking evaluation callback "
                               "(rec_lightning.callbacks.ranking.RankingEvaluation) or use "
                               "`python -m rec_lightning evaluate`")
        return self.test_step_fn(self, batch, batch_idx)

    def predict_step(self, batch: dict, batch_idx: int) -> Any:
        """Delegates to ``self.predict_step_fn`` (set by the ranking prediction writer, which ``predict`` adds)."""
        if self.predict_step_fn is None:
            raise ConfigurationError("SFTModule ranks in predict through the RankingPredictionWriter callback, which "
                                     "`python -m rec_lightning predict` adds; in Python add "
                                     "rec_lightning.callbacks.predictions.RankingPredictionWriter() to the Trainer's "
                                     "callbacks (or use `python -m rec_lightning evaluate`)")
        return self.predict_step_fn(self, batch, batch_idx)

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> dict:
        total = self.trainer.estimated_stepping_batches
        return build_optimizer(self.model.named_parameters(), self.optimizer_options, total,
                               time_budget_fraction(self.trainer))

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        micro = getattr(datamodule, "batch_size", None)
        if micro is not None:
            effective = micro * self.trainer.accumulate_grad_batches * self.trainer.world_size
            rank_zero_info(f"SFT: effective batch {effective} = micro-batch {micro} x accumulation "
                           f"{self.trainer.accumulate_grad_batches} x {self.trainer.world_size} devices")

    # ------------------------------------------------------------------ checkpoints
    def trainable_state_keys(self) -> set[str]:
        """State-dict keys of the trainable parameters (what ``.ckpt`` files hold)."""
        return {name for name, parameter in self.named_parameters() if parameter.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if not is_sharded(self.model):  # sharded: every key, each rank its shards (a distributed load needs them all)
            keep = self.trainable_state_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        # class_path: LightningCLI's --ckpt_path re-parses the hyper-parameters as this class's arguments
        checkpoint["rec_lightning"] = {"sid_token_ids": list(self.sid_token_ids), "rng": _rng_states(),
                                       "class_path": f"{type(self).__module__}.{type(self).__qualname__}"}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.model is None:
            raise RuntimeError("build the model before loading a checkpoint into SFTModule: resume with "
                               "Trainer.fit(module, datamodule, ckpt_path=...), or call module.build(tokenizer, "
                               "sid_tokens) and then load_state_dict")
        # sharded: a distributed checkpoint arrives without "state_dict", the strategy has loaded every key already
        sharded = is_sharded(self.model) and "state_dict" not in checkpoint
        expected = self.trainable_state_keys()
        found = expected if sharded else set(checkpoint["state_dict"])
        if expected != found:
            missing, unexpected = sorted(expected - found), sorted(found - expected)
            raise CheckpointMismatchError(f"the checkpoint does not fit this model ({self.finetune} mode): missing "
                               f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                               f"{'...' if len(unexpected) > 3 else ''}. Fix: resume with the same model and "
                               "finetune settings (the config saved next to the checkpoint)")
        saved = checkpoint.get("rec_lightning", {})
        if saved.get("sid_token_ids", self.sid_token_ids) != self.sid_token_ids:
            raise CheckpointMismatchError("the checkpoint's SID token ids differ from this tokenizer's: resume with the same "
                               "data (index.json) and tokenizer")
        if "rng" in saved:
            _set_rng_states(saved["rng"])

    def load_trainable_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy trainable weights (e.g. from the best ``.ckpt``) into the model."""
        keep = self.trainable_state_keys()
        missing = keep - set(state_dict)
        if missing:
            raise RuntimeError(f"state dict lacks {len(missing)} trainable weights, e.g. {sorted(missing)[:3]}")
        self.load_state_dict({k: v for k, v in state_dict.items() if k in keep}, strict=False)

    # ------------------------------------------------------------------ export
    def final_checkpoint_metadata(self) -> dict[str, Any]:
        finetune = {"mode": self.finetune, "lora": dataclasses.asdict(self.lora_options)}
        return build_metadata(self.backbone_options, finetune, self.tokenizer, self.sid_tokens, self.sid_token_ids,
                              self.embedding_rows, self.sid_index_checksum, stage="sft", **self.data_settings)

    def save_final_checkpoint(self, directory: str | Path) -> Path:
        """Write the PEFT adapter (or full model), tokenizer, ``rec_lightning.json`` and the item catalog to ``directory``.

        Sharded (``ModelParallelStrategy``): a collective, every rank calls it. The full state is gathered
        onto rank 0's CPU, loaded into an unsharded copy of the model built as :meth:`build` builds it, and
        written by rank 0 only, in the same format as an unsharded run; other ranks return at once (callers
        then meet at a barrier). Rank 0 needs host memory for about twice the float32 model.
        """
        model = self.model
        if is_sharded(model):
            state = gather_full_state(model)  # [every key] full tensors on rank 0, {} elsewhere
            if torch.distributed.get_rank() != 0:
                return Path(directory)
            model = self._unsharded_copy(state)
        return save_final_checkpoint(model, self.tokenizer, directory, self.final_checkpoint_metadata(),
                                     catalog=self.catalog)

    def _unsharded_copy(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """A plain (unsharded) model built like :meth:`build`'s, holding ``state`` (every key, strict)."""
        base = build_backbone(self.backbone_options, self.tokenizer)
        add_sid_tokens(base, self.tokenizer, self.sid_tokens, keep_existing_sid_rows=self.backbone_options.from_scratch)
        model = apply_finetuning(base, self.finetune, self.lora_options, self.sid_token_ids)
        model.load_state_dict(state, strict=True)
        return model


def _rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain types and tensors (loadable with weights_only=True)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])

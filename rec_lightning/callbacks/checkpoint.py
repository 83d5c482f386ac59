"""``ModelCheckpoint`` whose ``last.ckpt`` is the latest state, whatever the monitored metric did.

Lightning 2.6 writes ``last.ckpt`` at a validation (or epoch end) only when a top-k checkpoint is written at the
same step. With a monitor and ``save_top_k: 1`` (every recipe here) ``last.ckpt`` is therefore a copy of the *best*
checkpoint, not the last one: a run resumed from it with ``--ckpt_path .../last.ckpt`` silently restarts from the
best step and loses everything after it, and nothing shows the state the run ended in. This subclass keeps
Lightning's behaviour for the top-k files and writes ``last.ckpt`` at every checkpoint event, as Lightning did
before 2.6. Drop-in: ``class_path: rec_lightning.callbacks.checkpoint.ModelCheckpoint`` with the same arguments.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint``; with ``save_last`` its ``last.ckpt`` follows every validation and epoch end."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)

    def _save_latest(self, trainer: pl.Trainer) -> None:
        # skipped when the parent already saved at this step (then last.ckpt was written with the top-k file),
        # during sanity checks, outside fit and with fast_dev_run
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

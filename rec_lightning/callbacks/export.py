"""``FinalCheckpoint``: at the end of fit, write ``OUTPUT/final_checkpoint/`` from the best (or last) weights.

The folder holds the PEFT adapter (or the full model), the extended tokenizer and
``rec_lightning.json`` (see :mod:`rec_lightning.modules.export`). With ``use_best`` the trainable
weights of the best ``.ckpt`` of the trainer's ``ModelCheckpoint`` are loaded first (the original's
``load_best_model_at_end``). It runs in ``on_fit_end``, after every ``.ckpt`` is written, so the
best weights never leak into ``last.ckpt``.

Under sharding (``ModelParallelStrategy``) every rank takes part: the best ``.ckpt`` is a folder of
shards that each rank reads its part of (rank 0's best: a monitored metric not synced across ranks, such as
GRPO's ``train/reward``, could make each rank's ``ModelCheckpoint`` name another), and the module gathers the full weights onto rank 0, which
alone writes the folder (the same files as an unsharded run); the other ranks wait at a barrier.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from rec_lightning.errors import OutputExistsError
from rec_lightning.modules.sharding import is_sharded, load_distributed_weights

log = logging.getLogger(__name__)


class FinalCheckpoint(pl.Callback):
    """Export the trained model when ``fit`` ends.

    Args:
        dirpath: output folder; default ``<trainer.default_root_dir>/final_checkpoint``.
        use_best: load the best checkpoint of the trainer's ``ModelCheckpoint`` (by its ``monitor``)
            before exporting; with no best checkpoint the final weights are exported.
        overwrite: replace a ``final_checkpoint/`` that exists when fit starts (default: refuse, unless
            the run resumes from a checkpoint).
    """

    def __init__(self, dirpath: str | None = None, use_best: bool = True, overwrite: bool = False) -> None:
        self.dirpath = dirpath
        self.use_best = use_best
        self.overwrite = overwrite
        self.written: Path | None = None

    def output_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "final_checkpoint"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check_output(trainer, resuming=trainer.ckpt_path is not None)

    def check_output(self, trainer: pl.Trainer, resuming: bool) -> None:
        """Refuse, before training, to replace a final checkpoint another run wrote (a resumed run may).

        Raises:
            OutputExistsError: the folder exists, is not empty, and neither ``resuming`` nor ``overwrite``.
        """
        target = self.output_dir(trainer)
        if self.overwrite or resuming or not target.exists():
            return
        if target.is_dir() and not any(target.iterdir()):
            return
        raise OutputExistsError(f"{target} already holds a final checkpoint from an earlier run; this run would "
                                "replace it when it ends. Fix: set another --trainer.default_root_dir, move the old "
                                "folder away, resume that run with --ckpt_path, or set FinalCheckpoint(overwrite=true)")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "save_final_checkpoint"):
            raise TypeError(f"{type(pl_module).__name__} has no save_final_checkpoint(directory); FinalCheckpoint "
                            "works with SFTModule and the other rec_lightning training modules")
        best = self._best_checkpoint(trainer)
        model = getattr(pl_module, "model", None)
        sharded = isinstance(model, torch.nn.Module) and is_sharded(model)
        if sharded and trainer.world_size > 1:  # ranks may rank a per-rank metric differently: all load rank 0's pick
            best = trainer.strategy.broadcast(best, src=0)
        if best is not None:
            log.info("final checkpoint: loading the best weights from %s", best)
            if sharded:  # a folder of shards: every rank loads its own
                load_distributed_weights(pl_module, best)
            else:
                state = torch.load(best, map_location=pl_module.device, weights_only=True)["state_dict"]
                pl_module.load_trainable_state(state)
        if sharded or trainer.is_global_zero:  # sharded: a collective gather, then rank 0 writes
            written = pl_module.save_final_checkpoint(self.output_dir(trainer))
            if trainer.is_global_zero:
                self.written = written
                rank_zero_info(f"final checkpoint written to {self.written}")
        trainer.strategy.barrier("final_checkpoint")

    def _best_checkpoint(self, trainer: pl.Trainer) -> str | None:
        callback = trainer.checkpoint_callback
        if not self.use_best or callback is None or getattr(callback, "monitor", None) is None:
            return None
        path = getattr(callback, "best_model_path", "")
        return path if path and Path(path).exists() else None

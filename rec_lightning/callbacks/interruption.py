"""``InterruptionCheckpoint``: an interrupted ``fit`` saves a checkpoint, says how to resume, exits 143.

Lightning turns SIGTERM into a graceful stop (``SIGTERMException``, a ``SystemExit`` with no code),
so a killed job would exit 0 and ``fit && evaluate`` would go on as if training had finished.
This callback saves a resumable checkpoint (``interrupted.ckpt`` beside the trainer's other
``.ckpt`` files), logs where it is and the exact command that resumes it, and gives the exception
exit code 143 (128 + SIGTERM, what a shell reports for a process killed by SIGTERM).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

#: Exit code of a run stopped by SIGTERM (128 + 15).
SIGTERM_EXIT_CODE = 143
CHECKPOINT_NAME = "interrupted.ckpt"


def resume_command(argv: list[str], ckpt_path: str | Path) -> str:
    """The command line ``argv`` (``fit ...``) with ``--ckpt_path`` set to ``ckpt_path``, shell-quoted."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if arg.startswith("--ckpt_path="):
            continue
        kept.append(arg)
    return shlex.join(["python", "-m", "rec_lightning", *kept, "--ckpt_path", str(ckpt_path)])


class InterruptionCheckpoint(pl.Callback):
    """On SIGTERM during ``fit``: save ``interrupted.ckpt``, print how to resume, exit with code 143.

    Args:
        dirpath: where to write the checkpoint; default: the ``ModelCheckpoint``'s folder, else
            ``trainer.default_root_dir``.
        argv: the command line to repeat in the resume hint (default: ``sys.argv[1:]``).
    """

    def __init__(self, dirpath: str | None = None, argv: list[str] | None = None) -> None:
        self.dirpath = dirpath
        self.argv = argv
        self.saved: Path | None = None

    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath) / CHECKPOINT_NAME
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or trainer.default_root_dir
        return Path(folder) / CHECKPOINT_NAME

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        path = self.checkpoint_path(trainer)
        staging = path.with_name(f".{path.name}.partial")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(staging)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            if path.is_dir():  # a sharded run's checkpoint is a folder (os.replace cannot replace a non-empty one)
                shutil.rmtree(path)
            os.replace(staging, path)
            command = resume_command(self.argv if self.argv is not None else sys.argv[1:], path)
            message = (f"training was interrupted by SIGTERM at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                       f"a checkpoint was saved to {path}. No final_checkpoint/ was written. Resume with:\n  {command}")
            log.warning(message)
        self.saved = path
        exception.code = SIGTERM_EXIT_CODE

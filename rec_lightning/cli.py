"""Command line: LightningCLI for the Trainer commands, and the non-Trainer commands.

``fit``, ``validate``, ``test`` and ``predict`` go to :class:`lightning.pytorch.cli.LightningCLI`
with any LightningModule (``model.class_path``) and :class:`~rec_lightning.data.RecDataModule`.
Every other command lives in its own module under :mod:`rec_lightning.commands`, which exposes
``main(argv)``; this file only dispatches to it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Sequence

TRAINER_COMMANDS = {
    "fit": "train a model (SFT or GRPO) from a config",
    "validate": "run validation (loss and ranking metrics) on a checkpoint",
    "test": "evaluate on the test split through the Trainer",
    "predict": "run prediction through the Trainer",
}

# command name -> (module under rec_lightning.commands, one-line help)
COMMANDS = {
    "make-demo-data": ("demo_data", "write the embedded synthetic data set (MiniOneRec layout)"),
    "download": ("download", "fetch a category's published MiniOneRec files, verified"),
    "check-data": ("check_data", "validate a data folder and print its statistics"),
    "export": ("export", "export a final_checkpoint as an adapter or a merged HF model"),
    "evaluate": ("evaluate", "constrained beam search evaluation of a final checkpoint"),
    "report": ("report", "compare evaluation results (tables, cases, charts)"),
    "recommend": ("recommend", "top-K items with titles for given histories, from a final checkpoint"),
    "embed-items": ("embed_items", "embed item text with an HF encoder (for SID construction)"),
    "build-sids": ("build_sids", "quantise item embeddings into collision-free SIDs"),
}


def _available_commands() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(f"rec_lightning.commands.{module}") is not None:
            found[name] = (module, help_text)
    return found


def _usage() -> str:
    lines = ["usage: python -m rec_lightning COMMAND [options]", "", "Trainer commands (LightningCLI; --help on each):"]
    lines += [f"  {name:<16}{text}" for name, text in TRAINER_COMMANDS.items()]
    lines += ["", "Other commands:"]
    lines += [f"  {name:<16}{text}" for name, (_, text) in _available_commands().items()]
    lines += ["", "Example: python -m rec_lightning fit --config configs/quickstart.yaml"]
    return "\n".join(lines)


def run_lightning_cli(args: Sequence[str] | None) -> None:
    """Run LightningCLI with any LightningModule and :class:`RecDataModule` (or a subclass).

    ``args=None`` lets LightningCLI read ``sys.argv`` itself (no warning about both being set).
    """
    from lightning.pytorch.cli import LightningCLI

    from rec_lightning.data.datamodule import RecDataModule

    LightningCLI(
        model_class=None,
        datamodule_class=RecDataModule,
        subclass_mode_data=True,
        args=None if args is None else list(args),
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m rec_lightning`` and the ``rec-lightning`` script."""
    from_sys_argv = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rec_lightning").setLevel(logging.INFO)  # our progress lines, not every library's
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    if command in TRAINER_COMMANDS:
        run_lightning_cli(None if from_sys_argv else [command, *rest])
        return
    available = _available_commands()
    if command not in available:
        print(f"unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(f"rec_lightning.commands.{available[command][0]}")
    module.main(rest)

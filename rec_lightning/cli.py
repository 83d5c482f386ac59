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
import os
import sys
from typing import Sequence

TRACEBACK_FLAG = "--traceback"
TRACEBACK_ENV = "REC_LIGHTNING_TRACEBACK"
SIGTERM_EXIT_CODE = 143

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
    "prepare": ("prepare", "raw reviews + metadata (Amazon 2014/2018/2023, CSV) -> a data folder"),
    "check-data": ("check_data", "validate a data folder and print its statistics"),
    "export": ("export", "export a final_checkpoint as an adapter or a merged HF model"),
    "evaluate": ("evaluate", "constrained beam search evaluation of a final checkpoint"),
    "report": ("report", "compare evaluation results (tables, cases, charts)"),
    "recommend": ("recommend", "top-K items with titles for given histories, from a final checkpoint"),
    "embed-items": ("embed_items", "embed item text with an HF encoder (for SID construction)"),
    "build-sids": ("build_sids", "quantise item embeddings into collision-free SIDs"),
    "baseline": ("baseline", "popularity, transition or SASRec baseline, scored like evaluate"),
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
    lines += ["", "Errors print as a sentence with the fix (exit code 1); add --traceback (or set "
              f"{TRACEBACK_ENV}=1) to see where they came from.",
              "Example: python -m rec_lightning fit --config configs/quickstart.yaml"]
    return "\n".join(lines)


def run_lightning_cli(args: Sequence[str] | None) -> None:
    """Run LightningCLI (see :mod:`rec_lightning.commands.trainer`); ``args=None`` reads ``sys.argv``."""
    from rec_lightning.commands.trainer import run_lightning_cli as run

    run(args)


def library_error(error: BaseException) -> BaseException | None:
    """The :class:`RecLightningError` behind ``error`` (itself, or one it wraps), else None."""
    from rec_lightning.errors import RecLightningError

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, RecLightningError):
            return error
        seen.add(id(error))
        # an explicit cause (`raise X from ours`), or the error being handled when X was raised, unless hidden
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def _wants_traceback(argv: list[str]) -> bool:
    return TRACEBACK_FLAG in argv or os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0", "false", "no")


def _is_sigterm(error: BaseException) -> bool:
    """Lightning's ``SIGTERMException``, tested without importing Lightning (a command that never imported it
    cannot have raised it, and importing it costs seconds on every error of a light command)."""
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return exceptions is not None and isinstance(error, exceptions.SIGTERMException)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m rec_lightning`` and the ``rec-lightning`` script.

    The library's own errors (:class:`~rec_lightning.errors.RecLightningError`, also when raised inside
    ``fit`` and wrapped by Lightning) print as their message, which ends with the fix, and exit 1;
    ``--traceback`` anywhere on the line, or ``REC_LIGHTNING_TRACEBACK=1``, shows the traceback instead.
    A run stopped by SIGTERM exits 143.
    """
    from_sys_argv = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = _wants_traceback(argv)
    if TRACEBACK_FLAG in argv:
        argv = [a for a in argv if a != TRACEBACK_FLAG]
        if from_sys_argv:
            sys.argv[1:] = argv  # LightningCLI reads sys.argv itself
    try:
        _dispatch(argv, from_sys_argv)
    except BaseException as err:  # noqa: BLE001 - re-raised unless it is ours
        if _is_sigterm(err):
            raise SystemExit(err.code or SIGTERM_EXIT_CODE) from None
        if isinstance(err, SystemExit):  # argparse usage errors and commands' own messages keep their exit code
            raise
        found = library_error(err)
        if found is None or show_traceback:
            raise
        print(f"error: {found}", file=sys.stderr)
        print(f"(run again with {TRACEBACK_FLAG} or {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None


def _dispatch(argv: list[str], from_sys_argv: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rec_lightning").setLevel(logging.INFO)  # our progress lines, not every library's
    # `import lightning` gives the "lightning" logger its own console handler and leaves it propagating,
    # so with the root handler above every Lightning message printed twice; keep only Lightning's own.
    logging.getLogger("lightning").propagate = False
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

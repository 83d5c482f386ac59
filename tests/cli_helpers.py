"""Helpers for tests that drive ``python -m rec_lightning`` in a subprocess, the way users run it.

``SignalAtStep`` is a callback the subprocess imports (``tests/`` is put on ``PYTHONPATH``): it sends a
real signal (SIGKILL, SIGTERM) to its own process after a given optimizer step, which makes
"killed mid-epoch" reproducible without racing a timer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
QUICKSTART = REPO / "configs" / "quickstart.yaml"

#: A short quickstart: no validation, last.ckpt every 2 steps, final weights (not best) exported.
SHORT_RUN_YAML = """\
trainer:
  max_steps: {max_steps}
  max_epochs: 1
  limit_val_batches: 0
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: run
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args:
      save_dir: run
      name: logs
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        dirpath: run/checkpoints
        every_n_train_steps: 2
        save_last: true
    - class_path: rec_lightning.callbacks.export.FinalCheckpoint
      init_args:
        use_best: false
"""


def cli_env(cache: Path | None = None, **extra: str) -> dict[str, str]:
    """The subprocess environment: offline hub and wandb, ``tests/`` importable, no traceback switch, and the
    run's one ``REC_LIGHTNING_CACHE`` (conftest's ``session_cache``, inherited) unless ``cache`` is given."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(TESTS), os.environ.get("PYTHONPATH")]))}
    env.pop("REC_LIGHTNING_TRACEBACK", None)
    if cache is not None:
        env["REC_LIGHTNING_CACHE"] = str(cache)
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path = REPO, cache: Path | None = None, timeout: int = 600,
            env: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """``python -m rec_lightning ARGS`` in ``cwd`` (every CLI test's one runner); returns the finished process.

    ``check=True`` asserts exit code 0 (with the output in the message); otherwise exit codes are the caller's.
    """
    result = subprocess.run([sys.executable, "-m", "rec_lightning", *args], cwd=cwd, env=env or cli_env(cache),
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, describe(result)
    return result


def run_in_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``rec_lightning.cli.main(ARGS)`` in this process (the entry point behind ``python -m rec_lightning``), as a
    finished-process record: for the many variants of one error, after a real subprocess has checked the command
    once (exit code and output as the user sees them), in ``cwd`` (the test's folder: a run's relative paths must
    not land in the repository). Logging is not captured, printed messages are."""
    import contextlib
    import io

    from rec_lightning.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    previous = os.getcwd()
    os.chdir(cwd or previous)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if stop.code is not None and not isinstance(stop.code, int):
                    print(stop.code, file=err)
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["rec_lightning", *args], code, out.getvalue(), err.getvalue())


#: what conftest's ``lora_run`` adds to the quickstart LoRA config (a test repeating that run passes the same)
LORA_RUN_EXTRA = ("--data.packing", "true", "--trainer.log_every_n_steps", "1")


def write_short_run_config(folder: Path, max_steps: int = 8) -> Path:
    path = folder / "short_run.yaml"
    path.write_text(SHORT_RUN_YAML.format(max_steps=max_steps))
    return path


def short_fit_args(config: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(QUICKSTART), "--config", str(config), *extra]


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"


def assert_clean_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit code 1, every phrase in stderr, and no Python traceback."""
    assert result.returncode == 1, describe(result)
    assert "Traceback (most recent call last)" not in result.stderr, describe(result)
    for phrase in phrases:
        assert phrase in result.stderr, f"{phrase!r} not in stderr\n{describe(result)}"


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): a data-loss test compares before and after."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class SignalAtStep(pl.Callback):
    """Send ``signal_name`` to this process at the end of optimizer step ``step`` (a test fault injector)."""

    def __init__(self, step: int, signal_name: str = "SIGKILL") -> None:
        self.step = step
        self.signal_name = signal_name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal_name))

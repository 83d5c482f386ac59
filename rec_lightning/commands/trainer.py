"""``fit``, ``validate``, ``test``, ``predict``: LightningCLI with checks that run before any work starts.

:class:`RecLightningCLI` is :class:`lightning.pytorch.cli.LightningCLI` with any LightningModule
(``model.class_path``) and :class:`~rec_lightning.data.datamodule.RecDataModule`, plus:

* ``--ckpt_path`` works for every rec_lightning module: LightningCLI re-parses a checkpoint's
  hyper-parameters as the model's arguments, and ours are stored as plain dicts (loadable with
  ``torch.load(weights_only=True)``), so they are given the class path recorded in the checkpoint
  (``checkpoint["rec_lightning"]["class_path"]``, else the config's ``model.class_path``). A sharded
  (``ModelParallelStrategy``) run's ``.ckpt`` is a folder of shards: it is accepted when it is a
  Lightning distributed checkpoint (``meta.pt`` + the shard index), else refused naming the folder.
* a recipe that asks for a GPU on a machine without one fails before anything is built (no empty
  logger run), with the fix;
* ``fit`` always has :class:`~rec_lightning.callbacks.interruption.InterruptionCheckpoint`, so
  SIGTERM saves a checkpoint and exits 143 instead of 0;
* ``predict`` ranks every test row like ``evaluate`` and writes the rankings into the run folder
  (:class:`~rec_lightning.callbacks.predictions.RankingPredictionWriter`, added when the config has none);
* every subcommand's loggers' hyper-parameters are the full resolved config (trainer, seed, data, model, as in
  ``config.yaml``), not the module's and data module's ``__init__`` arguments plus LightningCLI's
  internal ``_instantiator``;
* everything a run writes follows ``trainer.default_root_dir``: a logger whose ``save_dir`` is not given
  (the shipped configs give none) writes under it (:func:`follow_default_root_dir`);
* the progress bar prints the learning rate in scientific notation
  (:class:`~rec_lightning.callbacks.progress.LearningRateProgressBar`);
* the usage line says ``python -m rec_lightning fit``, ``--help`` lists the rec_lightning modules and
  data modules as known subclasses (so ``--model SFTModule`` works by short name), it says where the
  optimizer lives (:data:`OPTIMIZER_NOTE`), and an unknown key gets the nearest valid one.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from rec_lightning.commands.arguments import PROG, RecParserStyle
from rec_lightning.errors import ConfigurationError, CorruptFileError

GPU_ACCELERATORS = ("gpu", "cuda")

#: Shown in ``fit --help``: why there is no ``--optimizer`` / ``--lr_scheduler``.
OPTIMIZER_NOTE = (
    "Optimizer and learning-rate schedule are typed options of the module, not LightningCLI's --optimizer / "
    "--lr_scheduler: set them with --model.optimizer.lr, --model.optimizer.schedule (cosine | linear | constant), "
    "--model.optimizer.warmup_steps, --model.optimizer.min_lr_ratio, --model.optimizer.weight_decay. The module "
    "builds AdamW itself because it chooses the parameter groups (no weight decay on biases and norms; under LoRA "
    "only the adapter and SID rows) and the schedule follows the run's step or time budget; GRPOModule also steps "
    "it manually. One typed block keeps every recipe's optimizer in one checked place (see --model.help SFTModule).")

#: Imported before the parser is built, so jsonargparse lists them as known subclasses and resolves short names.
KNOWN_CLASSES = ("rec_lightning.modules.sft", "rec_lightning.modules.grpo", "rec_lightning.modules.sasrec",
                 "rec_lightning.data.item_sequences", "rec_lightning.callbacks.predictions")


def checkpoint_model_arguments(ckpt_path: str | Path, config_class_path: str | None) -> dict[str, Any] | None:
    """The ``model`` config LightningCLI should take from a ``.ckpt``: ``{class_path, init_args}``, or None.

    Raises:
        CorruptFileError: the file is not a readable checkpoint.
        ConfigurationError: the checkpoint was written by another module class than the config names.
    """
    fix = ("Fix: pass a .ckpt file written by this run (e.g. OUTPUT/logs/version_0/checkpoints/last.ckpt); a file "
           "cut short by a crash cannot be resumed, use an older one")
    if Path(ckpt_path).is_dir():  # a sharded run's .ckpt: shards + meta.pt (the hyper-parameters and loop states)
        from rec_lightning.modules.sharding import DISTRIBUTED_CHECKPOINT_META

        check_distributed_checkpoint(ckpt_path)
        ckpt_path = Path(ckpt_path) / DISTRIBUTED_CHECKPOINT_META
    if not zipfile.is_zipfile(ckpt_path):  # torch.load can hang on arbitrary bytes instead of failing
        raise CorruptFileError(f"{ckpt_path}: not a readable Lightning checkpoint (not a torch zip archive). {fix}")
    try:
        checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise CorruptFileError(f"{ckpt_path}: not a readable Lightning checkpoint ({type(err).__name__}: "
                               f"{first_line}). {fix}") from err
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    if not hparams:
        return None
    saved_class = (checkpoint.get("rec_lightning") or {}).get("class_path") or hparams.pop("_class_path", None)
    class_path = saved_class or config_class_path
    if class_path is None:
        return None
    if saved_class and config_class_path and _short(saved_class) != _short(config_class_path):
        raise ConfigurationError(f"{ckpt_path} was written by {saved_class}, but the config's model is "
                                 f"{config_class_path}. Fix: pass the config of the run that wrote the checkpoint "
                                 "(saved beside it as config.yaml)")
    return {"class_path": class_path, "init_args": hparams}


def check_distributed_checkpoint(path: str | Path) -> None:
    """Raise unless the folder ``path`` is a distributed checkpoint written by a sharded (``ModelParallelStrategy``) run.

    Raises:
        ConfigurationError: naming the folder, what a distributed checkpoint holds, and the fix.
    """
    from rec_lightning.modules.sharding import (DISTRIBUTED_CHECKPOINT_INDEX, DISTRIBUTED_CHECKPOINT_META,
                                                is_distributed_checkpoint)

    if not is_distributed_checkpoint(path):
        raise ConfigurationError(
            f"--ckpt_path {path}: a folder, but not a Lightning distributed checkpoint (it lacks "
            f"{DISTRIBUTED_CHECKPOINT_META} or the shard index {DISTRIBUTED_CHECKPOINT_INDEX}). Fix: pass a .ckpt file, "
            "or the .ckpt folder a sharded (ModelParallelStrategy) run wrote, e.g. "
            "OUTPUT/logs/version_0/checkpoints/last.ckpt; a folder cut short by a crash cannot be resumed, use an older one")


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def check_manual_optimization(model, trainer) -> None:
    """Point a manually optimised module (GRPO) to its own clipping and accumulation options.

    Raises:
        ConfigurationError: ``trainer.gradient_clip_val`` or ``trainer.accumulate_grad_batches`` is set.
    """
    if model.automatic_optimization:
        return
    name = type(model).__name__
    if trainer.gradient_clip_val:
        raise ConfigurationError(f"{name} steps its optimizer itself, so --trainer.gradient_clip_val "
                                 f"{trainer.gradient_clip_val} would not apply (Lightning refuses it). Fix: drop it and "
                                 f"set --model.max_grad_norm {trainer.gradient_clip_val} (clips the total norm "
                                 "before each step; 0 turns clipping off)")
    if trainer.accumulate_grad_batches != 1:
        raise ConfigurationError(f"{name} steps its optimizer itself, so --trainer.accumulate_grad_batches would not "
                                 f"apply. Fix: drop it and set --model.accumulate_grad_batches "
                                 f"{trainer.accumulate_grad_batches}")


def resolved_config(config: dict[str, Any]) -> dict[str, Any]:
    """A subcommand's resolved config as logger hyper-parameters: no ``config`` file list, no ``_instantiator``."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k != "_instantiator"}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean({k: v for k, v in config.items() if k != "config"})


def follow_default_root_dir(trainer_config: Any) -> None:
    """Set each configured logger's ``save_dir`` to ``trainer.default_root_dir`` where the config leaves it unset
    (``None``, or the logger class's own default such as WandbLogger's ``"."``), in place."""
    import importlib
    import inspect

    from jsonargparse import Namespace

    root, loggers = trainer_config.get("default_root_dir"), trainer_config.get("logger")
    if root is None or not loggers or loggers is True:
        return
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if init_args is None or "save_dir" not in init_args:
            continue
        module, _, name = logger["class_path"].rpartition(".")  # parsing has already imported the class
        parameter = inspect.signature(getattr(importlib.import_module(module), name)).parameters["save_dir"]
        if init_args["save_dir"] in (None, parameter.default):
            init_args["save_dir"] = str(root)


class RecArgumentParser(RecParserStyle, LightningArgumentParser):
    """LightningCLI's parser: usage ``python -m rec_lightning ...`` (also in the parsers jsonargparse builds for
    ``--model.help CLASS``), no abbreviated options (``--trainer.max_step`` is an error, not ``max_steps``), one
    default per option in ``--help``, and errors for an unknown key end with the nearest valid key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # a parser built while another parses (jsonargparse's ``--model.help CLASS``) shows that one's usage
        kwargs.setdefault("prog", RecArgumentParser._parsing[-1] if RecArgumentParser._parsing else PROG)
        super().__init__(*args, **kwargs)

    #: ``prog`` of the parsers parsing now, innermost last (``python -m rec_lightning fit`` inside ``fit``)
    _parsing: list[str] = []

    def _parse_known_args(self, *args: Any, **kwargs: Any) -> Any:  # records self.prog, see above
        RecArgumentParser._parsing.append(self.prog.replace(" [options]", ""))
        try:
            return super()._parse_known_args(*args, **kwargs)
        finally:
            RecArgumentParser._parsing.pop()


class RecLightningCLI(LightningCLI):
    """LightningCLI for rec_lightning's modules (see the module docstring for what it adds)."""

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        from lightning.pytorch.callbacks import ProgressBar

        from rec_lightning.callbacks.progress import LearningRateProgressBar

        given = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, LearningRateProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def log_resolved_config(self) -> None:
        """Give every logger the resolved config as its hyper-parameters (instead of Lightning's default)."""
        import yaml

        if not self.trainer.loggers:
            return
        dumped = self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False)
        hparams = resolved_config(yaml.safe_load(dumped))
        self.model._log_hyperparams = False  # Lightning would log the __init__ arguments and _instantiator
        if self.datamodule is not None:
            self.datamodule._log_hyperparams = False
        for logger in self.trainer.loggers:
            logger.log_hyperparams(hparams)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """LightningCLI's parsing, with each logger's unset ``save_dir`` set to ``default_root_dir`` before the
        config is validated (a logger whose ``save_dir`` is required, such as CSVLogger, may leave it out)."""
        from jsonargparse import Namespace

        if isinstance(args, (dict, Namespace)):
            config = parser.parse_object(args, _skip_validation=True)
        else:
            config = parser.parse_args(args, _skip_validation=True)
        subcommand = config.get("subcommand")
        trainer = (config.get(subcommand) or {}).get("trainer") if subcommand else config.get("trainer")
        if trainer is not None:
            follow_default_root_dir(trainer)
        try:
            parser.validate(config)
        except Exception as error:  # noqa: BLE001 - reported like any parse error (usage, message, exit 2)
            parser.error(str(error), error)
        self.config = config

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path:
            return
        if not Path(ckpt_path).exists():
            raise ConfigurationError(f"--ckpt_path {ckpt_path}: no such checkpoint file. Fix: pass an existing .ckpt "
                                     "(the ModelCheckpoint folder, e.g. OUTPUT/logs/version_0/checkpoints/last.ckpt)")
        model = self.config[subcommand].get("model")
        config_class_path = getattr(model, "class_path", None) if model is not None else None
        arguments = checkpoint_model_arguments(ckpt_path, config_class_path)
        if arguments is None:
            return
        try:
            self.config = self.parser.parse_object({subcommand: {"model": arguments}}, self.config)
        except SystemExit:
            sys.stderr.write(f"the hyper-parameters stored in {ckpt_path} do not parse as {arguments['class_path']}'s "
                             "arguments (written by another version?)\n")
            raise

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        trainer = self.config[subcommand].get("trainer") if subcommand else self.config.get("trainer")
        accelerator = str(getattr(trainer, "accelerator", None) or (trainer or {}).get("accelerator", "auto"))
        if accelerator.lower() in GPU_ACCELERATORS and not torch.cuda.is_available():
            raise ConfigurationError(f"this recipe needs a GPU (trainer.accelerator: {accelerator}), and this machine "
                                     "has none that torch can use. Fix: add `--trainer.accelerator cpu "
                                     "--trainer.precision 32-true` (slow for large models) or start from "
                                     "configs/quickstart.yaml")

    def before_fit(self) -> None:
        from rec_lightning.callbacks.interruption import InterruptionCheckpoint

        from rec_lightning.callbacks.export import FinalCheckpoint

        check_manual_optimization(self.model, self.trainer)
        resuming = bool(self.config_init[self.subcommand].get("ckpt_path"))
        for callback in self.trainer.callbacks:  # before LightningCLI writes config.yaml into the run folder
            if isinstance(callback, FinalCheckpoint):
                callback.check_output(self.trainer, resuming)

        if not any(isinstance(c, InterruptionCheckpoint) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(InterruptionCheckpoint())
        self.log_resolved_config()

    def before_validate(self) -> None:
        self.log_resolved_config()

    def before_test(self) -> None:
        self.log_resolved_config()

    def before_predict(self) -> None:
        """Modules that rank in predict get :class:`RankingPredictionWriter` (added when the config has none)."""
        from rec_lightning.callbacks.predictions import RankingPredictionWriter

        if hasattr(self.model, "predict_step_fn") and not any(isinstance(c, RankingPredictionWriter)
                                                              for c in self.trainer.callbacks):
            self.trainer.callbacks.append(RankingPredictionWriter())
        self.log_resolved_config()


def run_lightning_cli(args: Sequence[str] | None) -> None:
    """Run :class:`RecLightningCLI`; ``args=None`` lets it read ``sys.argv`` itself."""
    import importlib

    from rec_lightning.data.datamodule import RecDataModule

    for module in KNOWN_CLASSES:
        importlib.import_module(module)
    RecLightningCLI(
        model_class=None,
        datamodule_class=RecDataModule,
        subclass_mode_data=True,
        args=None if args is None else list(args),
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_class=RecArgumentParser,
        parser_kwargs={"prog": PROG, **{name: {"description": OPTIMIZER_NOTE} for name in ("fit", "validate", "test",
                                                                                        "predict")}},
    )

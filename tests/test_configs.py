"""Every YAML in configs/ parses against the real signatures (like litgpt's config-hub test).

A LightningCLI config names ``model.class_path``; an override file (``sft_7b.yaml``) does not and is
parsed after its base, found by name (``sft_7b.yaml`` -> ``sft.yaml``). Parsing checks every key and
type; the model and data module are then instantiated (cheap: models are built in ``configure_model``).
No model is downloaded and no Trainer runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rec_lightning.commands.trainer import RecLightningCLI
from rec_lightning.data.datamodule import RecDataModule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAINER_KEYS = {"trainer", "model", "data", "seed_everything", "optimizer", "lr_scheduler", "ckpt_path"}


class _ParseOnlyCLI(RecLightningCLI):
    """Parses and validates as ``python -m rec_lightning fit`` does (loggers' unset ``save_dir`` follows
    ``default_root_dir``), instantiates nothing (``accelerator: gpu`` configs parse on CPU)."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def _config_chain(path: Path) -> list[Path]:
    content = yaml.safe_load(path.read_text()) or {}
    if "class_path" in (content.get("model") or {}):
        return [path]
    base = CONFIGS / (path.stem.split("_", 1)[0] + ".yaml")
    assert base.exists() and base != path, f"{path.name} has no model.class_path and no base config {base.name}"
    return _config_chain(base) + [path]


def _is_trainer_config(path: Path) -> bool:
    content = yaml.safe_load(path.read_text()) or {}
    return isinstance(content, dict) and set(content) <= TRAINER_KEYS


YAMLS = sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_config_parses_against_signatures(path: Path) -> None:
    if not _is_trainer_config(path):
        pytest.skip(f"{path.name} is not a LightningCLI config (top-level keys outside {sorted(TRAINER_KEYS)})")
    args = [arg for config in _config_chain(path) for arg in ("--config", str(config))]
    cli = _ParseOnlyCLI(model_class=None, datamodule_class=RecDataModule, subclass_mode_data=True, run=False,
                        args=args, auto_configure_optimizers=False)
    init = cli.parser.instantiate_classes(cli.config)
    model, data = init["model"], init["data"]
    assert type(model).__name__.endswith("Module")
    assert isinstance(data, RecDataModule)


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_print_config_through_the_real_cli(path: Path, capsys) -> None:
    if not _is_trainer_config(path):
        pytest.skip(f"{path.name} is not a LightningCLI config")
    from rec_lightning.cli import main

    args = [arg for config in _config_chain(path) for arg in ("--config", str(config))]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] and printed["data"]["class_path"].endswith(("RecDataModule", "ItemSequenceDataModule"))


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    """The check has teeth: a misspelled option fails to parse."""
    broken = tmp_path / "broken.yaml"
    text = (CONFIGS / "quickstart.yaml").read_text().replace("finetune: full", "finetune_mode: full")
    broken.write_text(text)
    with pytest.raises(SystemExit):
        _ParseOnlyCLI(model_class=None, datamodule_class=RecDataModule, subclass_mode_data=True, run=False,
                      args=["--config", str(broken)], auto_configure_optimizers=False)


def test_sft_variants_override_what_they_say() -> None:
    def parsed(*names: str):
        args = [a for n in names for a in ("--config", str(CONFIGS / n))]
        cli = _ParseOnlyCLI(model_class=None, datamodule_class=RecDataModule, subclass_mode_data=True, run=False,
                            args=args, auto_configure_optimizers=False)
        return cli.config

    base = parsed("sft.yaml")
    model = base.model.init_args
    assert model.backbone.model_name_or_path == "Qwen/Qwen2.5-3B-Instruct"
    assert (model.finetune, model.lora.r, model.lora.alpha, model.lora.dropout) == ("lora", 16, 32, 0.05)
    # effective batch 1024 = 32 micro x 32 accumulation x 1 device
    assert base.data.init_args.batch_size * base.trainer.accumulate_grad_batches == 1024
    assert base.trainer.precision == "bf16-mixed"
    seven = parsed("sft.yaml", "sft_7b.yaml")
    seven_model = seven.model.init_args.backbone.model_name_or_path
    assert seven_model == seven.data.init_args.tokenizer == "Qwen/Qwen2.5-7B-Instruct"
    assert seven.data.init_args.batch_size * seven.trainer.accumulate_grad_batches == 1024
    full = parsed("sft.yaml", "sft_full.yaml")
    assert full.model.init_args.finetune == "full" and full.model.init_args.backbone.dtype == "float32"
    assert full.data.init_args.batch_size * full.trainer.accumulate_grad_batches == 1024
    assert parsed("sft.yaml", "sft_freeze_lm.yaml").model.init_args.finetune == "freeze_lm"
    for size in ("0.5", "1.5"):
        config = parsed("sft.yaml", f"sft_{size}b.yaml")
        assert config.model.init_args.backbone.model_name_or_path == f"Qwen/Qwen2.5-{size}B-Instruct"
        assert config.data.init_args.tokenizer == f"Qwen/Qwen2.5-{size}B-Instruct"


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_every_logger_writes_under_default_root_dir(path: Path, tmp_path: Path) -> None:
    """``--trainer.default_root_dir RUN`` moves each shipped config's logger too: no config names a log folder of
    its own, and a logger's unset ``save_dir`` becomes the root (CSVLogger, whose save_dir is required, included)."""
    if not _is_trainer_config(path):
        pytest.skip(f"{path.name} is not a LightningCLI config")
    assert "save_dir" not in path.read_text(), f"{path.name} names a logger folder; leave it to default_root_dir"
    root = str(tmp_path / "RUN")
    args = [arg for config in _config_chain(path) for arg in ("--config", str(config))]
    cli = _ParseOnlyCLI(model_class=None, datamodule_class=RecDataModule, subclass_mode_data=True, run=False,
                        args=[*args, "--trainer.default_root_dir", root], auto_configure_optimizers=False)
    loggers = cli.config.trainer.logger
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if hasattr(logger, "init_args") and "save_dir" in logger.init_args:
            assert logger.init_args.save_dir == root, (path.name, logger.class_path)
    explicit = _ParseOnlyCLI(model_class=None, datamodule_class=RecDataModule, subclass_mode_data=True, run=False,
                             args=[*args, "--trainer.default_root_dir", root, "--trainer.logger.init_args.save_dir",
                                   "elsewhere"], auto_configure_optimizers=False) if loggers else None
    if explicit is not None:  # a save_dir the user gives is kept
        given = explicit.config.trainer.logger
        assert (given[0] if isinstance(given, list) else given).init_args.save_dir == "elsewhere"


def test_sft_loss_options_parse_from_the_command_line(capsys) -> None:
    from rec_lightning.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.init_args.loss.level_weights", "[2, 1, 1]",
              "--model.init_args.loss.label_smoothing", "0.1", "--print_config"])
    assert exit_info.value.code in (0, None)
    loss = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["loss"]
    assert loss == {"label_smoothing": 0.1, "level_weights": [2.0, 1.0, 1.0]}

"""In-process fits of the quickstart's model (configs/quickstart.yaml) for fixtures that need a trained checkpoint
without the CLI's start-up (the CLI path has its own shared runs in conftest: ``sft_run``, ``lora_run``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fit_quickstart_model(root: Path, data_dir: Path, max_steps: int, **data_options):
    """Train the quickstart's SFT model ``max_steps`` steps on ``data_dir`` (seed 0, CPU, no validation) and write its
    final checkpoint to ``root/final_checkpoint``: returns (checkpoint path, the fitted data module)."""
    import lightning.pytorch as pl
    import yaml

    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.modules.sft import SFTModule

    model_args = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())["model"]["init_args"]
    datamodule = RecDataModule(data_dir=str(data_dir), batch_size=16, cache_dir=str(root / "cache"), **data_options)
    pl.seed_everything(0)
    module = SFTModule(**model_args)
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(root))
    trainer.fit(module, datamodule=datamodule)
    return module.save_final_checkpoint(root / "final_checkpoint"), datamodule

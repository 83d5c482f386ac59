"""Shared fixtures: offline hub, deterministic seeds, the demo data set, the real data (if present)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "Amazon"
REAL_CATEGORY = "Industrial_and_Scientific"
requires_real_data = pytest.mark.skipif(not (REAL_DATA / "index").is_dir(), reason=f"real data not found at {REAL_DATA}")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo data set (seed 0, 500 users), generated once per session."""
    from rec_lightning.data.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "data", seed=0)


@pytest.fixture(scope="session")
def demo_datamodule(demo_dir, tmp_path_factory):
    """A RecDataModule on the demo data with a trained tokenizer, set up for fit."""
    from rec_lightning.data.datamodule import RecDataModule

    datamodule = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", batch_size=8, max_length=256,
                               cache_dir=str(tmp_path_factory.mktemp("cache")))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


@pytest.fixture(scope="session")
def quickstart_trained(tmp_path_factory):
    """The quickstart's model (configs/quickstart.yaml) trained 20 steps on a 40-user demo shop: its final
    checkpoint, the data folder and the test split's generation examples (shared by the evaluate, report and
    recommend tests; read-only for them)."""
    import lightning.pytorch as pl
    import yaml

    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.data.demo import make_demo_data
    from rec_lightning.modules.sft import SFTModule

    root = tmp_path_factory.mktemp("quick")
    data_dir = make_demo_data(root / "data", seed=0, num_users=40)
    model_args = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())["model"]["init_args"]
    datamodule = RecDataModule(data_dir=str(data_dir), category="Demo_Shop", batch_size=16, max_length=256,
                               cache_dir=str(root / "cache"))
    pl.seed_everything(0)
    module = SFTModule(**model_args)
    trainer = pl.Trainer(accelerator="cpu", max_steps=20, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root))
    trainer.fit(module, datamodule=datamodule)
    checkpoint = module.save_final_checkpoint(root / "final_checkpoint")
    return checkpoint, data_dir, datamodule.generation_examples("test")

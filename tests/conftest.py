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

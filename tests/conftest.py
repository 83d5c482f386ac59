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


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """One ``REC_LIGHTNING_CACHE`` for the whole test run, in this process and every ``python -m rec_lightning``
    subprocess (they inherit the environment): the demo data and each data set's tokenizer (cached by content
    hash) are built once per run, and no test writes into the user's ``~/.cache/rec_lightning``."""
    folder = tmp_path_factory.mktemp("rec_lightning_cache")
    previous = os.environ.get("REC_LIGHTNING_CACHE")
    os.environ["REC_LIGHTNING_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("REC_LIGHTNING_CACHE", None)
    else:
        os.environ["REC_LIGHTNING_CACHE"] = previous


@pytest.fixture(scope="session")
def cache(session_cache) -> Path:
    """The run's cache folder (``session_cache``), under the name the CLI tests pass to ``run_cli``."""
    return session_cache


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, session_cache) -> Path:
    """An 8-step quickstart SFT run through ``python -m rec_lightning fit`` (SHORT_RUN_YAML: no validation,
    ``last.ckpt`` every 2 steps), trained once per test run: the folder holding ``run/final_checkpoint`` and
    ``run/checkpoints/last.ckpt``. Read-only for its users; a test that changes it copies it first."""
    from cli_helpers import describe, run_cli, short_fit_args, write_short_run_config

    folder = tmp_path_factory.mktemp("sft_run")
    result = run_cli(*short_fit_args(write_short_run_config(folder)), cwd=folder)
    assert result.returncode == 0, describe(result)
    (folder / "cli_output.txt").write_text(result.stdout + result.stderr)
    return folder


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory, session_cache) -> Path:
    """configs/quickstart_lora.yaml for 4 steps through the CLI (same short-run settings as ``sft_run``, packed
    batches, metrics logged every step): the folder holding ``run/final_checkpoint`` (an adapter, ``base/`` and a
    card), ``run/checkpoints/last.ckpt`` and ``run/logs``."""
    from cli_helpers import LORA_RUN_EXTRA, QUICKSTART, describe, run_cli, write_short_run_config

    folder = tmp_path_factory.mktemp("lora_run")
    short = write_short_run_config(folder, max_steps=4)
    result = run_cli("fit", "--config", str(QUICKSTART), "--config", str(REPO_ROOT / "configs" / "quickstart_lora.yaml"),
                     "--config", str(short), *LORA_RUN_EXTRA, cwd=folder)
    assert result.returncode == 0, describe(result)
    (folder / "cli_output.txt").write_text(result.stdout + result.stderr)
    return folder


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
def quickstart_evaluated(quickstart_trained, tmp_path_factory):
    """``python -m rec_lightning evaluate`` of ``quickstart_trained`` on the demo test split (10 beams, batches of
    8, CPU), run once per test run: (output folder, records, metrics, stdout). Read-only for its users."""
    import json

    from cli_helpers import run_cli

    checkpoint, data_dir, _ = quickstart_trained
    output = tmp_path_factory.mktemp("quickstart_evaluated")
    result = run_cli("evaluate", "--checkpoint", str(checkpoint), "--data_dir", str(data_dir), "--category", "Demo_Shop",
                     "--split", "test", "--num_beams", "10", "--output", str(output), "--accelerator", "cpu",
                     "--batch_size", "8", timeout=300, check=True)
    records = json.loads((output / "eval_results.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    return output, records, metrics, result.stdout


@pytest.fixture(scope="session")
def quickstart_trained(tmp_path_factory):
    """The quickstart's model (configs/quickstart.yaml) trained 20 steps on a 40-user demo shop: its final
    checkpoint, the data folder and the test split's generation examples (shared by the evaluate, report and
    recommend tests; read-only for them)."""
    from fitting import fit_quickstart_model

    from rec_lightning.data.demo import make_demo_data

    root = tmp_path_factory.mktemp("quick")
    data_dir = make_demo_data(root / "data", seed=0, num_users=40)
    checkpoint, datamodule = fit_quickstart_model(root, data_dir, max_steps=20, category="Demo_Shop", max_length=256)
    return checkpoint, data_dir, datamodule.generation_examples("test")

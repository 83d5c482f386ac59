"""GRPO through ``python -m rec_lightning fit``: a SIGTERM-interrupted run resumed with ``--ckpt_path`` ends with the
uninterrupted run's trainable weights, Trainer options GRPO cannot honour point to the module's own, and
configs/grpo_fsdp.yaml runs GRPO sharded (FSDP2) on two CPU processes.

The GRPO runs start from conftest's shared ``sft_run`` (the quickstart SFT checkpoint), with
configs/grpo_quickstart.yaml cut to 4 steps and no validation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from cli_helpers import REPO, assert_clean_error, describe, run_cli

GRPO_QUICKSTART = REPO / "configs" / "grpo_quickstart.yaml"


def grpo_args(sft_run: Path, root: Path, *extra: str) -> list[str]:
    sft = sft_run / "run" / "final_checkpoint"
    return ["fit", "--config", str(GRPO_QUICKSTART), "--model.init_args.sft_checkpoint", str(sft),
            "--data.init_args.tokenizer", str(sft), "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root), *extra]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, sft_run) -> Path:
    """The uninterrupted 4-step GRPO run: ``<folder>/run/final_checkpoint``."""
    folder = tmp_path_factory.mktemp("grpo_run")
    run_cli(*grpo_args(sft_run, folder / "run"), cwd=folder, check=True)
    return folder


def trainable_weights(run: Path) -> dict:
    """The final checkpoint's saved weights (the merged policy for GRPO's LoRA mode)."""
    (weights,) = (run / "final_checkpoint").glob("*.safetensors")
    return load_file(str(weights))


@pytest.mark.slow  # 36 s: three GRPO fits (an uninterrupted one, a stopped one, its resume)
def test_sigterm_then_resume_reproduces_the_uninterrupted_grpo_run(tmp_path, sft_run, grpo_run):
    stopped = run_cli(*grpo_args(sft_run, tmp_path / "run", "--trainer.callbacks+=cli_helpers.SignalAtStep",
                                 "--trainer.callbacks.step=2", "--trainer.callbacks.signal_name=SIGTERM"), cwd=tmp_path)
    assert stopped.returncode == 143, describe(stopped)
    (saved,) = (tmp_path / "run").rglob("interrupted.ckpt")
    assert not (tmp_path / "run" / "final_checkpoint").exists()
    resumed = run_cli(*grpo_args(sft_run, tmp_path / "run", "--ckpt_path", str(saved)), cwd=tmp_path)
    assert resumed.returncode == 0, describe(resumed)
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr
    expected, got = trainable_weights(grpo_run / "run"), trainable_weights(tmp_path / "run")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not (expected[name] == got[name]).all()]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"


def test_grpo_gradient_clip_val_points_to_the_modules_option(tmp_path, sft_run):
    result = run_cli(*grpo_args(sft_run, tmp_path / "run", "--trainer.gradient_clip_val", "0.5"), cwd=tmp_path)
    assert_clean_error(result, "GRPOModule steps its optimizer itself, so --trainer.gradient_clip_val 0.5",
                       "set --model.max_grad_norm 0.5")
    assert not (tmp_path / "run" / "final_checkpoint").exists()


GRPO_FSDP_OVERLAY = """\
trainer:
  accelerator: cpu
  devices: 2
  val_check_interval: 2
  log_every_n_steps: 1
  limit_val_batches: 2
  strategy:
    init_args:
      data_parallel_size: 2
  callbacks:
    - class_path: rec_lightning.callbacks.ranking.RankingEvaluation
      init_args:
        num_beams: 5
        ks: [1, 5]
        limit: 5                   # rank 0 ranks 3 rows, rank 1 2 rows + 1 masked padding row
        batch_size: 2
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        monitor: val/ndcg@5          # summed over ranks: the same on each
        mode: max
        save_top_k: 1
        save_last: true
    - class_path: rec_lightning.callbacks.export.FinalCheckpoint
      init_args:
        use_best: true             # every rank loads its shards of the best .ckpt folder
model:
  init_args:
    group:
      size: 4
data:
  init_args:
    batch_size: 2
"""


@pytest.mark.slow  # 20 s (plus the shared SFT run): two spawned CPU processes
def test_grpo_fsdp2_two_cpu_processes_through_the_cli(tmp_path, sft_run):
    """configs/grpo_fsdp.yaml over the quickstart GRPO on two CPU processes (full mode, sharded reference copy):
    generation, reference log-probs, updates, validation loss and ranking run sharded without a rank hanging, and
    the final checkpoint is gathered."""
    import csv
    import json

    (tmp_path / "fsdp.yaml").write_text(GRPO_FSDP_OVERLAY)
    result = run_cli(*grpo_args(sft_run, tmp_path / "run", "--config", str(REPO / "configs" / "grpo_fsdp.yaml"),
                                "--config", "fsdp.yaml"), cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    log = result.stdout + result.stderr
    assert "GRPO: sharded with FSDP2 in" in log and "units over 2 processes" in log, log[-3000:]
    (metrics,) = (tmp_path / "run" / "logs").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    for name in ("train/reward", "train/kl", "val/loss", "val/hr@5"):
        assert any(row.get(name) for row in rows), (name, rows[:2])
    metadata = json.loads((tmp_path / "run" / "final_checkpoint" / "rec_lightning.json").read_text())
    assert (metadata["format"], metadata["stage"]) == ("full", "grpo")  # gathered onto rank 0, merged as under DDP
    from rec_lightning.modules.sharding import is_distributed_checkpoint

    folders = list((tmp_path / "run" / "logs").glob("version_*/checkpoints/*.ckpt"))
    assert any(f.name == "last.ckpt" for f in folders) and len(folders) == 2, folders  # the best + last
    assert all(is_distributed_checkpoint(folder) for folder in folders), folders

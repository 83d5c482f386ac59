"""Checkpoints of sharded GRPO runs (FSDP2, ModelParallelStrategy) on two CPU processes (gloo).

Two forked workers (as in ``test_grpo_sharding.py``) train the ``full`` policy, whose frozen reference copy is
sharded too and synced towards the policy after every step (``ref_sync_steps: 1``), on 2 of 4 prompts each:

* run 1: 2 GRPO steps, a distributed ``.ckpt`` folder after each (every key: the policy, the synced
  reference copy, the optimizer states), ``ModelCheckpoint`` monitoring ``train/reward``, and
  ``FinalCheckpoint(use_best=True)``: each rank loads its shards of the best folder, then the policy is gathered
  (``train/reward`` is each rank's own: rank 0's choice of best is the one every rank loads);
* run 2: a fresh module resumes from the folder of step 1 and trains step 2: its policy *and* reference copy
  (restored from the folder, not rebuilt from the SFT checkpoint) must equal run 1's.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
import test_grpo_sharding
from test_grpo_sharding import _free_port, _module, _trainable

from rec_lightning.modules.sharding import is_distributed_checkpoint, load_distributed_weights

MODE = "full"
setups = test_grpo_sharding.setups  # the fixture: per mode, the SFT final checkpoint, its RL data and 4 prompts


def _fit(module, rows, max_steps: int, callbacks=(), ckpt_path=None):
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import ModelParallelStrategy

    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", precision="32-true", logger=False,
                         enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=list(callbacks), devices=2,
                         strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1))
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(rows, batch_size=2), ckpt_path=ckpt_path)
    return trainer


def _worker(rank: int, port: int, out_dir: str, setups) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from rec_lightning.callbacks.export import FinalCheckpoint

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "NODE_RANK": "0",
                       "LOCAL_RANK": str(rank), "RANK": str(rank)})
    torch.set_num_threads(1)
    rows = setups[MODE][2]
    per_step = {}

    class Recording(pl.Callback):  # the gathered weights after each step (a collective: every rank runs it)
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            per_step[trainer.global_step] = _trainable(pl_module)

    module = _module(MODE, setups)
    saving = ModelCheckpoint(dirpath=f"{out_dir}/ckpts", every_n_train_steps=1, save_top_k=-1, monitor="train/reward",
                             mode="max")
    final = FinalCheckpoint(dirpath=f"{out_dir}/final", use_best=True)
    _fit(module, rows, 2, [Recording(), saving, final])
    best = saving.best_model_path
    resumed = _module(MODE, setups)
    _fit(resumed, rows, 2, ckpt_path=f"{out_dir}/ckpts/epoch=0-step=1.ckpt")
    after_resume = _trainable(resumed)
    load_distributed_weights(resumed, f"{out_dir}/ckpts/epoch=0-step=1.ckpt")  # FinalCheckpoint(use_best)'s loader
    reloaded = _trainable(resumed)
    if rank == 0:
        torch.save({"steps": per_step, "resumed": after_resume, "reloaded": reloaded, "best": best},
                   f"{out_dir}/weights.pt")


@pytest.mark.slow  # ~30 s: two forked CPU processes, 2 + 1 GRPO steps
def test_sharded_grpo_checkpoints_resume_with_the_reference_copy(setups, tmp_path):
    from rec_lightning.modules.export import load_for_inference

    mp.start_processes(_worker, args=(_free_port(), str(tmp_path), setups), nprocs=2, join=True, start_method="fork")
    step1 = tmp_path / "ckpts" / "epoch=0-step=1.ckpt"
    assert is_distributed_checkpoint(step1) and is_distributed_checkpoint(tmp_path / "ckpts" / "epoch=1-step=2.ckpt")
    saved = torch.load(tmp_path / "weights.pt")
    steps = saved["steps"]
    assert sorted(steps) == [1, 2]
    assert any(name.startswith("reference.") for name in steps[2])
    for name, weight in steps[2].items():  # resume after step 1 + step 2 = the uninterrupted run, reference included
        torch.testing.assert_close(saved["resumed"][name], weight, rtol=0, atol=1e-6, msg=name)
    moved = [n for n, w in steps[2].items() if not torch.equal(w, steps[1][n])]
    assert any(n.startswith("reference.") for n in moved) and any(not n.startswith("reference.") for n in moved)
    for name, weight in steps[1].items():  # load_distributed_weights: the step-1 folder's policy and reference
        torch.testing.assert_close(saved["reloaded"][name], weight, rtol=0, atol=0, msg=name)
    # FinalCheckpoint(use_best=True): the best folder's policy, gathered and merged into a full model
    best_step = 1 if saved["best"].endswith("step=1.ckpt") else 2
    assert saved["best"].endswith(f"step={best_step}.ckpt"), saved["best"]
    final, _, metadata = load_for_inference(tmp_path / "final", catalog=setups[MODE][1].catalog)
    assert (metadata["format"], metadata["stage"]) == ("full", "grpo")
    replay = _module(MODE, setups)
    policy = {k: v for k, v in steps[best_step].items() if not k.startswith("reference.")}
    assert not replay.model.load_state_dict(policy, strict=False).unexpected_keys
    batch = next(iter(torch.utils.data.DataLoader(setups[MODE][2], batch_size=4)))
    with torch.no_grad():
        got, expected = (m.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                         for m in (final, replay.merged_policy()))
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(got[mask], expected[mask], rtol=0, atol=1e-5)

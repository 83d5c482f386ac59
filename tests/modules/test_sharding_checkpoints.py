"""Checkpoints of sharded (FSDP2, ModelParallelStrategy) runs on two CPU processes (gloo) against one process.

Two forked workers (as in ``test_sharding.py``) train the tiny model on 4 rows, rank r on rows r and r + 2:

* run 1 (full fine-tuning): 2 optimizer steps, a distributed ``.ckpt`` folder after each, and the
  gathered ``final_checkpoint/`` at the end;
* run 2: a fresh module resumes from the folder of step 1 and trains step 2: its weights must equal run 1's;
* run 3 (LoRA): 2 steps and its gathered adapter checkpoint.

The final checkpoints must reload with ``load_for_inference`` to the logits of one process trained on
the same 4 rows for the same steps, and constrained beam search on the sharded model (through
``run_sharded``, on the shared prompt cache, which must see through FSDP2's class) must rank as that
process's model does.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from test_sharding import _free_port, _module, _rows, _trainable

from rec_lightning.errors import ConfigurationError
from rec_lightning.commands.trainer import check_distributed_checkpoint, checkpoint_model_arguments
from rec_lightning.modules.sharding import (is_distributed_checkpoint, is_sharded, load_distributed_weights,
                                            run_sharded)


def _seeded(mode: str):
    """``_module(mode)`` from a fixed RNG state (LoRA's random init must not depend on what ran before)."""
    torch.manual_seed(0)
    return _module(mode)


def _decode(model, rows, sid_token_ids: list[int], eos: int):
    """Constrained beam search (4 beams, shared prompt cache) over every 3-level SID, prompts = the 4 rows."""
    from rec_lightning.generation.decoding import constrained_beam_search
    from rec_lightning.generation.trie import SIDTrie

    sequences = [[a, b, c] for a in sid_token_ids[:4] for b in sid_token_ids[4:8] for c in sid_token_ids[8:]]
    trie = SIDTrie.from_sequences(sequences, eos)
    batch = next(iter(torch.utils.data.DataLoader(rows, batch_size=4)))
    model.eval()
    return run_sharded(model, constrained_beam_search, model, batch["input_ids"], batch["attention_mask"], trie, 4,
                       prompt_cache="shared")


def _fit(module, rows, batch_size: int, max_steps: int, callbacks=(), ckpt_path=None, **trainer_args) -> None:
    import lightning.pytorch as pl

    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", precision="32-true", logger=False,
                         enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=list(callbacks), **trainer_args)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(rows, batch_size=batch_size), ckpt_path=ckpt_path)


def _worker(rank: int, port: int, out_dir: str) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import ModelParallelStrategy

    from rec_lightning.callbacks.export import FinalCheckpoint

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "NODE_RANK": "0",
                       "LOCAL_RANK": str(rank), "RANK": str(rank)})
    torch.set_num_threads(1)

    def sharded():
        return {"devices": 2, "strategy": ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)}

    module = _seeded("full")
    saving = ModelCheckpoint(dirpath=f"{out_dir}/ckpts", every_n_train_steps=1, save_top_k=-1)
    _fit(module, _rows(module), 2, 2, [saving, FinalCheckpoint(dirpath=f"{out_dir}/final_full", use_best=False)],
         **sharded())
    assert is_sharded(module.model)
    uninterrupted = _trainable(module)  # collective
    decoded = _decode(module.model, _rows(module), module.sid_token_ids, module.tokenizer.eos_token_id)
    resumed = _seeded("full")
    _fit(resumed, _rows(resumed), 2, 2, ckpt_path=f"{out_dir}/ckpts/epoch=0-step=1.ckpt", **sharded())
    after_resume = _trainable(resumed)
    load_distributed_weights(resumed, f"{out_dir}/ckpts/epoch=0-step=1.ckpt")  # FinalCheckpoint(use_best)'s loader
    reloaded = _trainable(resumed)
    lora = _seeded("lora")
    _fit(lora, _rows(lora), 2, 2, [FinalCheckpoint(dirpath=f"{out_dir}/final_lora", use_best=False)], **sharded())
    if rank == 0:
        torch.save({"uninterrupted": uninterrupted, "resumed": after_resume, "reloaded": reloaded,
                    "items": decoded.items, "scores": decoded.scores},
                   f"{out_dir}/weights.pt")


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_sharded_checkpoints_resume_and_gather_the_final_checkpoint(tmp_path):
    from rec_lightning.modules.export import load_for_inference

    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    step1 = tmp_path / "ckpts" / "epoch=0-step=1.ckpt"
    assert is_distributed_checkpoint(step1) and not is_distributed_checkpoint(tmp_path)
    weights = torch.load(tmp_path / "weights.pt")
    for name, weight in weights["uninterrupted"].items():  # resume after step 1 + step 2 = the uninterrupted run
        torch.testing.assert_close(weights["resumed"][name], weight, rtol=0, atol=1e-7, msg=name)
    assert any(not torch.equal(weights["reloaded"][n], w) for n, w in weights["uninterrupted"].items())
    for mode in ("full", "lora"):
        single = _seeded(mode)
        rows = _rows(single)
        _fit(single, rows, 4, 2, devices=1)
        batch = next(iter(torch.utils.data.DataLoader(rows, batch_size=4)))
        model, _, metadata = load_for_inference(tmp_path / f"final_{mode}")
        assert metadata["format"] == ("full" if mode == "full" else "adapter"), metadata["format"]
        torch.testing.assert_close(_logits(model, batch), _logits(single.model, batch), rtol=0, atol=1e-5, msg=mode)
        if mode == "full":
            expected = _decode(single.model, rows, single.sid_token_ids, single.tokenizer.eos_token_id)
            assert torch.equal(weights["items"], expected.items)
            torch.testing.assert_close(weights["scores"], expected.scores, rtol=0, atol=1e-4)
    # --ckpt_path accepts the folder: the module's class and hyper-parameters come from its meta.pt
    arguments = checkpoint_model_arguments(step1, "rec_lightning.modules.sft.SFTModule")
    assert arguments["class_path"] == "rec_lightning.modules.sft.SFTModule"
    assert arguments["init_args"]["finetune"] == "full"
    with pytest.raises(ConfigurationError, match=f"--ckpt_path {tmp_path}: a folder, but not a Lightning distributed"):
        check_distributed_checkpoint(tmp_path)


def test_load_distributed_weights_names_a_folder_that_is_not_one(tmp_path):
    with pytest.raises(ConfigurationError, match=str(tmp_path)):
        load_distributed_weights(torch.nn.Linear(2, 2), tmp_path)

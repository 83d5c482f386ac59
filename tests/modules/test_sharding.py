"""FSDP2 under Lightning's ModelParallelStrategy on two CPU processes (gloo) against one process.

Two forked workers each run ``Trainer(strategy=ModelParallelStrategy(data_parallel_size=2), devices=2)``
(``LOCAL_RANK`` etc. in the environment, so Lightning joins the processes instead of launching them)
for one optimizer step on a 4-row batch: rank r gets rows r and r + 2. Every row has 4 response
tokens, so the mean of the two ranks' token-mean losses is the 4-row loss, and FSDP2's averaged
gradients are the 4-row gradient: the updated weights must equal one process's step on all 4 rows.
The same runs count each process's bytes of parameters, gradients and AdamW moments (local shards):
sharded over two processes, each holds about half of what one process holds.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from tiny_lm import SID_TOKENS, make_tokenizer, sample_batch, tiny_options

from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.lora import LoraOptions
from rec_lightning.modules.optim import OptimizerOptions
from rec_lightning.modules.sharding import ShardingOptions, is_sharded, mixed_precision_policy, run_sharded
from rec_lightning.modules.sft import SFTModule

#: fine-tuning modes; "full+ac" is full fine-tuning with activation checkpointing (backbone.gradient_checkpointing)
MODES = ("full", "full+ac", "lora", "freeze_lm")


def _module(name: str) -> SFTModule:
    mode, checkpointing = name.removesuffix("+ac"), name.endswith("+ac")
    torch.manual_seed(0)  # LoRA's A matrices come from the global RNG: the same init in the workers and here
    backbone = tiny_options(tied=mode != "freeze_lm", gradient_checkpointing=checkpointing)  # freeze_lm: untied head
    module = SFTModule(backbone=backbone, finetune=mode,
                       lora=LoraOptions(r=4, alpha=8, dropout=0.0),
                       optimizer=OptimizerOptions(lr=1e-2, warmup_steps=0, schedule="constant"))
    module.build(make_tokenizer(), SID_TOKENS)
    return module


def _rows(module: SFTModule) -> list[dict[str, torch.Tensor]]:
    batch = sample_batch(module.tokenizer, module.sid_token_ids, batch_size=4, seed=3)  # [4, L] each
    return [{key: value[i] for key, value in batch.items()} for i in range(4)]


def _local_bytes(tensor: torch.Tensor) -> int:
    """Bytes this process holds of ``tensor``: its local shard for a DTensor."""
    from torch.distributed.tensor import DTensor

    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def _fit_one_step(module: SFTModule, rows, batch_size: int, state_bytes: dict | None = None,
                  **trainer_args) -> list[float]:
    """One optimizer step; fills ``state_bytes`` with this process's parameter, gradient and AdamW-moment bytes."""
    import lightning.pytorch as pl

    losses: list[float] = []
    state_bytes = {} if state_bytes is None else state_bytes

    class Losses(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # gradients reduced, not yet freed
            parameters = list(pl_module.model.parameters())
            state_bytes["parameters"] = sum(_local_bytes(p) for p in parameters)
            state_bytes["gradients"] = sum(_local_bytes(p.grad) for p in parameters if p.grad is not None)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))
            states = trainer.optimizers[0].state.values()
            state_bytes["optimizer"] = sum(_local_bytes(s[k]) for s in states for k in ("exp_avg", "exp_avg_sq"))

    trainer = pl.Trainer(max_steps=1, accelerator="cpu", precision="32-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[Losses()], **trainer_args)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(rows, batch_size=batch_size))
    return losses


def _trainable(module: SFTModule) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for name, p in module.model.named_parameters() if p.requires_grad}


def _worker(rank: int, port: int, out_dir: str) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "NODE_RANK": "0",
                       "LOCAL_RANK": str(rank), "RANK": str(rank)})
    torch.set_num_threads(1)
    results = {}
    for mode in MODES:
        module = _module(mode)
        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        state_bytes = {}
        losses = _fit_one_step(module, _rows(module), 2, state_bytes, devices=2, strategy=strategy)
        assert is_sharded(module.model)
        weights = _trainable(module)  # collective: every rank gathers
        results[mode] = losses
        results[f"{mode}/bytes"] = state_bytes
        if rank == 0:
            torch.save(weights, f"{out_dir}/{mode}.pt")
    with open(f"{out_dir}/losses{rank}.json", "w") as handle:
        json.dump(results, handle)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_fsdp2_step_equals_one_process(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    per_rank = [json.loads((tmp_path / f"losses{rank}.json").read_text()) for rank in range(2)]
    for mode in MODES:
        module = _module(mode)
        before = _trainable(module)
        single_bytes = {}
        single = _fit_one_step(module, _rows(module), 4, single_bytes, devices=1)
        expected = _trainable(module)
        if mode == "full":  # memory: each of 2 processes holds about half of the parameter + gradient + AdamW bytes
            # measured (float32, 28,960 parameters): one process 115,840 B parameters + 115,840 gradients + 231,680
            # AdamW moments = 463,360 B; each of 2 processes 57,920 + 57,920 + 115,840 = 231,680 B (ratio 0.500)
            assert set(single_bytes) == {"parameters", "gradients", "optimizer"} and single_bytes["optimizer"] > 0
            total = sum(single_bytes.values())
            for rank in range(2):
                ratio = sum(per_rank[rank][f"{mode}/bytes"].values()) / total
                assert 0.45 <= ratio <= 0.6, (rank, per_rank[rank][f"{mode}/bytes"], single_bytes)
        sharded = torch.load(tmp_path / f"{mode}.pt")
        assert sorted(sharded) == sorted(expected), mode
        # equal response tokens per rank: the 4-row token mean is the mean of the two ranks' means
        assert (per_rank[0][mode][0] + per_rank[1][mode][0]) / 2 == pytest.approx(single[0], rel=1e-5), mode
        moved = 0
        for name, weight in expected.items():
            # atol 2e-5 = lr x 2e-3: AdamW's first step is lr x g / (|g| + eps), so an element whose gradient is
            # ~1e-7 turns the reductions' float rounding (two processes vs one) into ~1e-5 (measured on an AVX-512
            # AMD EPYC: 1 of 1,024 o_proj elements, 1.0e-5); a wrong shard or a missing reduction moves ~lr
            torch.testing.assert_close(sharded[name], weight, rtol=1e-4, atol=2e-5, msg=f"{mode}: {name}")
            moved += not torch.equal(weight, before[name])
        assert moved > 0, mode


def test_run_sharded_calls_plain_function_without_sharding():
    model = torch.nn.Linear(2, 2)
    assert run_sharded(model, lambda x, y: x + y, 2, y=3) == 5


def test_mixed_precision_policy_is_float32_on_cpu_and_bf16_on_gpu():
    assert mixed_precision_policy("cpu").param_dtype is None
    gpu = mixed_precision_policy("cuda")
    assert (gpu.param_dtype, gpu.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert mixed_precision_policy("cuda", "fp32").param_dtype is None
    with pytest.raises(ConfigurationError, match="sharding.mixed_precision"):
        mixed_precision_policy("cpu", "fp16")
    assert ShardingOptions().mixed_precision == "auto"

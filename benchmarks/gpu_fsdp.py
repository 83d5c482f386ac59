"""Benchmark: full fine-tuning SFT steps under DDP and under FSDP2 on every visible GPU, against the memory plan.

Usage: python benchmarks/gpu_fsdp.py [--layers 8] [--batch_size 4] [--length 512] [--steps 5] [--smoke]

For a multi-GPU machine; it has not been run on GPUs yet (the development machine has none, and the device
tool lends one GPU at a time: DDP and FSDP2 over one process say little). For each strategy it launches
``torch.distributed.run`` (torchrun) with one process per visible GPU; each process builds the same
randomly initialised Qwen2.5-1.5B-shaped model from a config (hidden 1536, MLP 8960, 12 query / 2 KV heads,
vocabulary 151,936, tied head; ``--layers`` of its 28 decoder layers; no download) in float32, with
activation checkpointing per layer, and trains every weight with AdamW for ``--warmup`` + ``--steps`` steps
on random tokens (``--batch_size`` rows of ``--length`` tokens per GPU, the loss on the last
``--response`` tokens of each row, as the SFT loss runs the head on response positions only):

  ddp     torch DDP, bf16 autocast over float32 weights (what ``strategy: ddp`` + ``bf16-mixed`` runs)
  fsdp2   ``rec_lightning.modules.sharding.shard_model``: each layer, then the root, ``fully_shard``-ed;
          bf16 compute, float32 gradient reduction and master weights (what ``configs/sft_fsdp.yaml`` runs)

It prints, per strategy: GPUs, tokens/s over all GPUs, peak memory per GPU (the largest rank's
``max_memory_allocated``), and ``rec_lightning.modules.memory_plan``'s prediction for the same shape and
micro-batch. ``--smoke`` runs the same code on the CPU with 2 gloo processes, a tiny shape and float32
(peak memory is then the process's peak RSS, which the plan does not model); under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QWEN25_15B = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
              "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
              "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}
TINY = {**QWEN25_15B, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1024}
STRATEGIES = ("ddp", "fsdp2")


def model_shape(config: dict, name: str = "Qwen2.5-1.5B shape"):
    """The memory plan's :class:`ModelShape` of a Qwen2 config dict."""
    from rec_lightning.modules.memory_plan import ModelShape

    return ModelShape(f"{name}, {config['num_hidden_layers']} layers", config["hidden_size"],
                      config["intermediate_size"], config["num_hidden_layers"], config["num_attention_heads"],
                      config["num_key_value_heads"], config["vocab_size"], config["tie_word_embeddings"])


# ---------------------------------------------------------------------- one process (launched by torchrun)
def worker(args: argparse.Namespace) -> None:
    """Train ``args.warmup + args.steps`` steps under ``args.strategy``; rank 0 writes the result JSON."""
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, Qwen2Config

    from rec_lightning.modules.backbone import enable_activation_checkpointing
    from rec_lightning.modules.sharding import ShardingOptions, run_sharded, shard_model

    cuda = not args.smoke
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    config = json.loads(args.config)
    torch.manual_seed(0)  # the same weights on every rank
    with device:
        model = AutoModelForCausalLM.from_config(Qwen2Config(**config), dtype=torch.float32,
                                                 attn_implementation="sdpa")
    model.config.use_cache = False
    enable_activation_checkpointing(model)
    model.train()

    def loss_fn(inner, input_ids):  # decoder, then the head on the last ``response`` positions only
        hidden = inner.model(input_ids=input_ids).last_hidden_state[:, -args.response - 1:-1]
        logits = inner.lm_head(hidden).float()
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), input_ids[:, -args.response:].flatten())

    if args.strategy == "ddp":
        class Loss(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids):
                return loss_fn(self.inner, input_ids)

        wrapped = torch.nn.parallel.DistributedDataParallel(Loss(model), device_ids=[device.index] if cuda else None)

        def step_loss(input_ids):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                return wrapped(input_ids)
    else:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("data_parallel",))
        shard_model(model, mesh, ShardingOptions(mixed_precision="auto"))

        def step_loss(input_ids):
            return run_sharded(model, loss_fn, model, input_ids)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(1 + rank)  # each rank its own micro-batch
    batches = [torch.randint(0, config["vocab_size"], (args.batch_size, args.length), generator=generator).to(device)
               for _ in range(args.warmup + args.steps)]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for step, input_ids in enumerate(batches):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize(device)
            dist.barrier()
            start = time.perf_counter()
        loss = step_loss(input_ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize(device)
    dist.barrier()
    seconds = time.perf_counter() - start
    if cuda:
        peak = float(torch.cuda.max_memory_allocated(device))
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # kB on Linux
    peak_max = torch.tensor([peak], dtype=torch.float64, device=device)
    dist.all_reduce(peak_max, op=dist.ReduceOp.MAX)
    if rank == 0:
        tokens = args.batch_size * args.length * world * args.steps
        Path(args.result).write_text(json.dumps({
            "strategy": args.strategy, "gpus": world, "tokens_per_s": tokens / seconds, "peak_bytes": peak_max.item(),
            "device": torch.cuda.get_device_name(device) if cuda else "CPU (gloo)", "loss": loss.item()}))
    dist.barrier()  # tear down together: a gloo peer that closes its connection first can abort the other (SIGABRT)
    dist.destroy_process_group()


# ---------------------------------------------------------------------- the launcher and the table
def launch(strategy: str, processes: int, args: argparse.Namespace, config: dict) -> dict | str:
    """Run :func:`worker` under torchrun on ``processes`` processes; its result, or the error's last lines."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   str(Path(__file__).resolve()), "--worker", "--strategy", strategy, "--result", str(result),
                   "--config", json.dumps(config), "--batch_size", str(args.batch_size), "--length", str(args.length),
                   "--response", str(args.response), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.smoke:
            command.append("--smoke")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if args.smoke:
            env["OMP_NUM_THREADS"] = "1"
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
        if done.returncode != 0 or not result.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-8:]
            return f"failed (exit {done.returncode}): " + " / ".join(tail)
        return json.loads(result.read_text())


def planned_gb(strategy: str, gpus: int, args: argparse.Namespace, config: dict) -> float:
    """The memory plan's GB per GPU for this shape and micro-batch (full SFT, activation checkpointing)."""
    from rec_lightning.modules.memory_plan import GB, Workload, memory_plan

    work = Workload(micro_batch=args.batch_size, tokens_per_example=args.length, response_tokens=args.response,
                    checkpointing=True)
    return memory_plan(model_shape(config), "full", "sft", strategy, gpus, work=work).total / GB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="decoder layers of the 1.5B shape (28: the whole model)")
    parser.add_argument("--batch_size", type=int, default=4, help="rows per GPU per step")
    parser.add_argument("--length", type=int, default=512, help="tokens per row")
    parser.add_argument("--response", type=int, default=16, help="response tokens per row (where the head runs)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--gpus", type=int, default=0, help="processes (0: every visible GPU)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per strategy")
    parser.add_argument("--smoke", action="store_true", help="CPU, 2 gloo processes, a tiny shape: checks the script")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.response >= args.length:
        parser.error(f"--response ({args.response}) must be shorter than --length ({args.length})")
    if args.smoke:
        args.batch_size, args.length, args.response, args.steps, args.warmup = 2, 32, 4, 2, 1
        config, processes = {**TINY, "num_hidden_layers": 2}, 2
    else:
        import torch

        if not torch.cuda.is_available():
            sys.exit("gpu_fsdp.py needs CUDA GPUs (two or more to compare strategies); --smoke checks it on the CPU")
        processes = args.gpus or torch.cuda.device_count()
        if args.layers < 1 or args.layers > 28:
            parser.error(f"--layers must be 1 to 28 (Qwen2.5-1.5B has 28), got {args.layers}")
        config = {**QWEN25_15B, "num_hidden_layers": args.layers}
    shape = model_shape(config, "tiny Qwen2 (smoke)" if args.smoke else "Qwen2.5-1.5B shape")
    print(f"{shape.name}: {shape.parameters / 1e6:,.1f}M parameters, full fine-tuning, activation checkpointing, "
          f"{args.batch_size} x {args.length} tokens per GPU, {args.warmup} warm-up + {args.steps} timed steps")
    rows, device = [], "n/a"
    for strategy in STRATEGIES:
        result = launch(strategy, processes, args, config)
        plan = planned_gb(strategy, processes, args, config)
        if isinstance(result, str):
            rows.append(f"| {strategy} | {processes} | {result} | | {plan:.3g} |")
            continue
        peak = "peak RSS" if args.smoke else "peak"
        rows.append(f"| {strategy} | {result['gpus']} | {result['tokens_per_s']:,.0f} | "
                    f"{result['peak_bytes'] / 1e9:.2f} GB ({peak}) | {plan:.3g} |")
        device = result["device"]
    print(f"\ndevice: {device}\n")
    print("| strategy | GPUs | tokens/s | peak memory per GPU | planned GB per GPU |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if any("failed" in row for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

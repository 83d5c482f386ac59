"""Benchmark: one GRPO step split into generation (rollout) and update, with peak memory.

Compares, in the same run:
  * reference = the policy with its LoRA adapter off (ours) vs a full frozen reference copy;
  * the update with each prompt computed once per group (``share_prompt``) vs repeated G times.

CPU (default): the quickstart-sized tiny Qwen2 on real Industrial prompts (or demo prompts).
GPU (``--model 1.5b``): a randomly initialised model of Qwen2.5-1.5B's shape in bf16 with LoRA r16 on
all projections + trainable SID rows (vocabulary padded to Qwen's 151,936 + SID rows).

Usage: python benchmarks/grpo.py [--model tiny|1.5b] [--prompts 4] [--group 16] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REAL = Path(__file__).resolve().parents[2] / "shared/data/Amazon"

QWEN_1_5B = {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
             "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
             "rope_theta": 1000000.0, "tie_word_embeddings": True}
TINY = {"model_type": "qwen2", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024, "tie_word_embeddings": True}


def data_module(args):
    from rec_lightning.data.datamodule import RecDataModule

    real = Path(args.data_dir).joinpath("index").is_dir()
    dm = RecDataModule(data_dir=args.data_dir if real else None, category="Industrial_and_Scientific" if real else None,
                       train_format="prompts", batch_size=args.prompts, max_length=512, seed=0)
    dm.setup("fit")
    return dm, ("Industrial train prompts" if real else "demo prompts")


def sft_model(args, dm, device):
    """A 'SFT' model to start from: random weights of the chosen shape with the SID rows."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(QWEN_1_5B if args.model == "1.5b" else TINY)
    tokenizer = dm.tokenizer
    rows = max(len(tokenizer), 151936 + 576 if args.model == "1.5b" else 0)
    rows = -(-rows // 64) * 64
    model_type = config.pop("model_type")
    cfg = AutoConfig.for_model(model_type, vocab_size=rows, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id, **config)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def run_variant(args, dm, device, reference: str, share_prompt: bool):
    from rec_lightning.modules.grpo import GRPOModule

    module = GRPOModule("benchmark", finetune="lora", group={"size": args.group}, loss={"beta": 1e-3},
                        share_prompt=share_prompt)
    base = sft_model(args, dm, device)
    module.build(base, dm.tokenizer, dm.catalog)
    if reference == "full copy":  # the usual way: a second, frozen copy of the whole model
        module.reference_copy = sft_model(args, dm, device).requires_grad_(False)
    module.to(device)
    optimizer = torch.optim.AdamW([p for p in module.model.parameters() if p.requires_grad], lr=1e-5)
    loader = iter(dm.train_dataloader())
    gen, upd = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for step in range(args.steps + 1):  # the first step warms up and is not timed
        batch = {k: v.to(device) for k, v in next(loader).items()}
        sync(device)
        start = time.perf_counter()
        with autocast:
            rollout, _ = module.rollout(batch)
        sync(device)
        middle = time.perf_counter()
        with autocast:
            loss = module._loss(rollout, first_pass=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if step:
            gen.append(middle - start)
            upd.append(time.perf_counter() - middle)
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    del module, optimizer
    return statistics.median(gen), statistics.median(upd), peak


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "1.5b"], default="tiny")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (x group = completions)")
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--data_dir", default=str(REAL), help="Industrial data (demo prompts if absent)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.model == "1.5b" and device.type != "cuda":
        print("no CUDA device: the 1.5B benchmark needs a GPU")
        return
    dm, source = data_module(args)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    print(f"device: {name}; model: {args.model} ({'bf16' if device.type == 'cuda' else 'fp32'}), LoRA r16 all "
          f"projections + SID rows; {args.prompts} {source} x G={args.group} beam groups; median of {args.steps} steps")
    memory = "peak GPU memory (GiB)" if device.type == "cuda" else "peak RSS so far (GiB)"
    print(f"{'reference':<14}{'share_prompt':<14}{'generation s':>14}{'update s':>10}{memory:>26}")
    variants = [("adapter off", True), ("adapter off", False), ("full copy", True)]
    for reference, share in variants:
        gen, upd, peak = run_variant(args, dm, device, reference, share)
        print(f"{reference:<14}{str(share):<14}{gen:>14.3f}{upd:>10.3f}{peak:>26.2f}")
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

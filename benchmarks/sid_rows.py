"""Benchmark: what training the SID rows costs per LoRA step, PEFT's trainable tokens vs our fast path (issue 27).

Usage: python benchmarks/sid_rows.py [--steps 3] [--batch_size 8] [--length 256] [--untied]

A 2-layer Qwen2 with the real vocabulary (152,256 rows: Qwen2.5's tokens + SID tokens, padded to 64)
and Qwen2.5-0.5B's width (hidden 896, intermediate 4864, 14 heads / 2 KV heads, tied embeddings),
random weights, float32; LoRA r16 (alpha 32, dropout 0.05) on every projection; 768 SID rows (3 levels
x 256 codes) at the end of the vocabulary. Each step: ``response_loss_sum`` forward (head on the 5
response tokens per row only), backward, AdamW, on a random micro-batch of ``batch_size`` x ``length``
tokens (a quarter of the prompt tokens are SIDs, like item histories; the 5 response tokens are SIDs).
Rows (the same base weights), interleaved step by step in a rotating order after one warm-up step:
  LoRA only                 plain ``LoraConfig``, SID rows frozen (the cost to match)
  LoRA only + input grads   the same, with the embedding output requiring grad
                            (``enable_input_require_grads``): the backward through the first layer's
                            input projections that training any input-side row needs
  + SID rows, PEFT          ``trainable_token_indices``: PEFT rebuilds the [V, H] matrix every forward
  + SID rows, fast path     the same adapter with :mod:`rec_lightning.modules.sid_rows`
Reported: the fastest timed step of each row (the one least disturbed by other jobs on a shared
machine) and its ratio to LoRA only (issue 27's target: the SID-row step within 1.05x), the median,
and every step. With 2 layers the first layer's input gradient is a large share of the backward; in the
24-layer Qwen2.5-0.5B it is about 1/24 of it. About 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

VOCAB_ROWS = 152_256
NUM_SID_ROWS = 768
RESPONSE_TOKENS = 5
QWEN25_05B_WIDTH = {"hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
                    "num_key_value_heads": 2, "num_hidden_layers": 2, "max_position_embeddings": 1024}


def build_model(tied: bool, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("qwen2", vocab_size=VOCAB_ROWS, tie_word_embeddings=tied, **QWEN25_05B_WIDTH)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.use_cache = False
    return model.train()


def make_batches(num: int, batch_size: int, length: int, sid_ids: torch.Tensor) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(num):
        ids = torch.randint(0, VOCAB_ROWS - NUM_SID_ROWS, (batch_size, length), generator=generator)
        history = torch.rand(batch_size, length, generator=generator) < 0.25
        random_sids = sid_ids[torch.randint(0, len(sid_ids), (batch_size, length), generator=generator)]
        ids = torch.where(history, random_sids, ids)
        ids[:, -RESPONSE_TOKENS:] = random_sids[:, -RESPONSE_TOKENS:]
        labels = torch.full_like(ids, -100)
        labels[:, -RESPONSE_TOKENS:] = ids[:, -RESPONSE_TOKENS:]
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return batches


def measure_rotating(models: list, batches: list[dict], loss_fn, warmup: int = 1) -> list[list[float]]:
    """Seconds of each timed step (forward, backward, AdamW) per model.

    Like ``sft_throughput.measure_interleaved``, step i of every model runs before step i + 1; the
    order rotates each step, so load from other processes on a shared machine hits every model alike.
    """
    optimizers = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m in models]
    seconds: list[list[float]] = [[] for _ in models]
    for step, batch in enumerate(batches):
        for k in range(len(models)):
            i = (k + step) % len(models)
            start = time.perf_counter()
            loss = loss_fn(models[i], batch)
            optimizers[i].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[i].step()
            if step >= warmup:
                seconds[i].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per row")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--untied", action="store_true", help="an untied head (its SID rows train too)")
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model

    from rec_lightning.modules.lora import ALL_PROJECTIONS, LoraOptions, apply_finetuning
    from rec_lightning.modules.sft import response_loss_sum
    from rec_lightning.modules.sid_rows import use_sid_rows_fast_path

    started = time.perf_counter()
    tied = not args.untied
    sid_ids = torch.arange(VOCAB_ROWS - NUM_SID_ROWS, VOCAB_ROWS)
    lora = LoraOptions(r=16, alpha=32, dropout=0.05, target_modules="all")
    base = build_model(tied)
    plain_lora = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(ALL_PROJECTIONS), task_type="CAUSAL_LM")
    models = []
    for variant in ("lora only", "input grads", "peft", "fast"):
        torch.manual_seed(0)
        if variant in ("lora only", "input grads"):
            model = get_peft_model(copy.deepcopy(base), plain_lora)
            if variant == "input grads":
                model.enable_input_require_grads()
        else:
            model = apply_finetuning(copy.deepcopy(base), "lora", lora, sid_ids.tolist())
            if variant == "peft":
                assert use_sid_rows_fast_path(model, enabled=False) == 2  # embedding + head
        models.append(model)
    del base
    batches = make_batches(args.steps + 1, args.batch_size, args.length, sid_ids)
    setup_s = time.perf_counter() - started

    def loss_fn(model, batch):
        loss_sum, count = response_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        return loss_sum / count

    seconds = measure_rotating(models, batches, loss_fn)
    names = ["LoRA only (SID rows frozen)", "LoRA only + input grads", "+ SID rows, PEFT", "+ SID rows, fast path"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: Qwen2 2 layers, hidden 896, vocab {VOCAB_ROWS:,}, {'tied' if tied else 'untied'} head, float32; "
          f"LoRA r16 all projections; {NUM_SID_ROWS} SID rows; micro-batch {args.batch_size} x {args.length}, "
          f"{RESPONSE_TOKENS} response tokens; {args.steps} timed steps per row (setup {setup_s:.0f} s)\n")
    print(f"{'variant':<30}{'fastest s/step':>15}{'vs LoRA only':>14}{'median':>8}   steps (s)")
    reference = min(seconds[0])
    for name, times in zip(names, seconds):
        print(f"{name:<30}{min(times):>15.3f}{min(times) / reference:>13.3f}x{statistics.median(times):>8.2f}   "
              f"{' '.join(f'{t:.2f}' for t in times)}")

if __name__ == "__main__":
    main()

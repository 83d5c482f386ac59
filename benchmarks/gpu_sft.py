"""Benchmark: SFT step throughput, model FLOPs utilisation and peak memory on one GPU.

Usage: python benchmarks/gpu_sft.py [--steps 10] [--batch_size 32] [--peak_tflops auto]

A randomly initialised model with Qwen2.5-1.5B's shape (28 layers, hidden 1536, MLP 8960, 12 query /
2 KV heads, tied embeddings, 151,665 tokens + 560 SID tokens -> 152,256 rows), bf16 weights,
``bf16-mixed``-style autocast, LoRA r 16 on every q/k/v/o/gate/up/down projection + the SID rows
(float32 trainable weights, AdamW). No download. Micro-batch 32, right-padded, lengths drawn like the
SFT mix (prompt 120-390 tokens, mean ~256; response 5 tokens for SID tasks, 24 for title tasks).
Rows, each 3 warm-up + ``--steps`` timed steps of forward + backward + AdamW:
  reference   Hugging Face ``model(labels=...)``: full [B, L, V] logits (the original's loss)
  ours        ``response_loss_sum``: output head only at response positions
  ours + ckpt the same with activation checkpointing
FLOPs per real token (model FLOPs, the usual 6N convention even though the frozen base computes no
weight gradients): 6 x N_blocks + 12 x layers x hidden x mean length (attention, PaLM appendix B)
+ 6 x vocab x hidden x (response tokens / tokens) (the head only runs there in ``ours``; the
reference row is charged the same useful FLOPs, so its MFU shows the waste). MFU = FLOPs/s / peak.
Exits with a message when CUDA is absent. Runs in well under 3 minutes on an H100.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

QWEN25_15B = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
              "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "vocab_size": 151936}
BASE_TOKENS, NUM_SID_TOKENS = 151665, 560
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def peak_tflops(name: str, override: str) -> float:
    if override != "auto":
        return float(override)
    for key, value in PEAK_BF16_TFLOPS.items():
        if all(part in name for part in key.split()):
            return value
    return float("nan")


def make_batches(num_batches: int, batch_size: int, vocab: int, sid_ids: torch.Tensor, device) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(num_batches):
        prompts = torch.randint(120, 391, (batch_size,), generator=generator)
        responses = torch.where(torch.rand(batch_size, generator=generator) < 0.6, 5, 24)
        length = int((prompts + responses).max())
        input_ids = torch.randint(0, vocab, (batch_size, length), generator=generator)
        attention_mask = torch.zeros(batch_size, length, dtype=torch.long)
        labels = torch.full((batch_size, length), -100, dtype=torch.long)
        for row in range(batch_size):
            p, r = int(prompts[row]), int(responses[row])
            attention_mask[row, : p + r] = 1
            if r == 5:  # 3 SID tokens, newline-free, EOS
                input_ids[row, p: p + 3] = sid_ids[torch.randint(0, len(sid_ids), (3,), generator=generator)]
            labels[row, p: p + r] = input_ids[row, p: p + r]
        batches.append({"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
                        "labels": labels.to(device)})
    return batches


def build_model(device, checkpointing: bool, shape: dict):
    from transformers import AutoModelForCausalLM, Qwen2Config

    from rec_lightning.modules.backbone import enable_activation_checkpointing
    from rec_lightning.modules.lora import LoraOptions, apply_finetuning

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**shape), dtype=torch.bfloat16,
                                                 attn_implementation="sdpa")
    rows = -(-(BASE_TOKENS + NUM_SID_TOKENS) // 64) * 64
    model.resize_token_embeddings(rows, mean_resizing=False)
    model.config.use_cache = False
    if checkpointing:
        enable_activation_checkpointing(model)
    sid_ids = list(range(BASE_TOKENS, BASE_TOKENS + NUM_SID_TOKENS))
    model = apply_finetuning(model, "lora", LoraOptions(r=16, alpha=32, dropout=0.05, target_modules="all"), sid_ids)
    model.train()
    return model, torch.tensor(sid_ids), rows


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(model, batches, loss_fn, warmup: int, device) -> tuple[float, int, int, float]:
    """(seconds, real tokens, response tokens, peak GiB) over the timed steps."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens = responses = 0
    for step, batch in enumerate(batches):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            tokens += int(batch["attention_mask"].sum())
            responses += int((batch["labels"] != -100).sum())
    _sync(device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return time.perf_counter() - start, tokens, responses, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--peak_tflops", default="auto", help="dense bf16 peak of the GPU (auto: by name)")
    parser.add_argument("--smoke_test_cpu", action="store_true",
                        help="check the script on CPU with a 2-layer model of the same width (numbers meaningless)")
    args = parser.parse_args()
    shape = dict(QWEN25_15B)
    if args.smoke_test_cpu:
        device, name = torch.device("cpu"), "CPU smoke test"
        shape.update(num_hidden_layers=2, intermediate_size=512)
    elif not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (nothing measured)")
        return
    else:
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
    from rec_lightning.modules.sft import response_loss_sum

    peak = peak_tflops(name, args.peak_tflops)

    def reference_loss(model, batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def our_loss(model, batch):
        loss_sum, count = response_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        return loss_sum / count

    rows = []
    warmup = 3
    for label, loss_fn, checkpointing in (("reference (full logits)", reference_loss, False),
                                          ("ours", our_loss, False), ("ours + activation ckpt", our_loss, True)):
        model, sid_ids, vocab = build_model(device, checkpointing, shape)
        batches = make_batches(warmup + args.steps, args.batch_size, BASE_TOKENS, sid_ids, device)
        try:
            seconds, tokens, responses, peak_gib = run(model, batches, loss_fn, warmup, device)
        except torch.cuda.OutOfMemoryError:
            rows.append((label, None))
        else:
            rows.append((label, (seconds, tokens, responses, peak_gib)))
        blocks = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and "lora_" not in n)
        mean_length = sum(int(b["attention_mask"].sum()) for b in batches) / (len(batches) * args.batch_size)
        del model, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()

    cfg = shape
    print(f"GPU: {name} ({peak:.0f} TFLOPS bf16 dense peak), torch {torch.__version__}")
    print(f"model: Qwen2.5-1.5B shape ({cfg['num_hidden_layers']} layers), random init, bf16 weights + autocast; "
          f"LoRA r16 all projections + {NUM_SID_TOKENS} SID rows; {blocks / 1e9:.3f} B block params, "
          f"vocab rows {vocab}")
    print(f"batch: {args.batch_size} x mean {mean_length:.0f} real tokens (right padded), {warmup} warm-up + "
          f"{args.steps} timed steps per row\n")
    print(f"{'variant':<26}{'tokens/s':>10}{'s/step':>8}{'MFU':>7}{'peak GiB':>10}")
    for label, result in rows:
        if result is None:
            print(f"{label:<26}{'out of memory':>35}")
            continue
        seconds, tokens, responses, peak_gib = result
        per_token = (6 * blocks + 12 * cfg["num_hidden_layers"] * cfg["hidden_size"] * mean_length
                     + 6 * vocab * cfg["hidden_size"] * responses / tokens)
        rate = tokens / seconds
        mfu = rate * per_token / (peak * 1e12)
        print(f"{label:<26}{rate:>10.0f}{seconds / args.steps:>8.3f}{mfu:>7.1%}{peak_gib:>10.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Benchmark: SFT step throughput, model FLOPs utilisation and peak memory on one GPU.

Usage: python benchmarks/gpu_sft.py [--steps 10] [--batch_size 32] [--peak_tflops auto]

A randomly initialised model with Qwen2.5-1.5B's shape (28 layers, hidden 1536, MLP 8960, 12 query /
2 KV heads, tied embeddings, 151,665 tokens + 560 SID tokens -> 152,256 rows), bf16 weights,
``bf16-mixed``-style autocast, LoRA r 16 on every q/k/v/o/gate/up/down projection + the SID rows
(float32 trainable weights, AdamW). No download. Micro-batch 32, right-padded, lengths drawn like the
SFT mix (prompt 120-390 tokens, mean ~256; response 5 tokens for SID tasks, 24 for title tasks).
Rows, each 3 warm-up + ``--steps`` timed steps of forward + backward + AdamW, the same examples in
the same micro-batches (random composition):
  reference                  Hugging Face ``model(labels=...)``: full [B, L, V] logits (the original's loss)
  ours                       ``response_loss_sum``: output head only at response positions, padded batches
  ours + packing             each micro-batch packed (rec_lightning.data.packing, rows up to 1,024 tokens)
  ours + packing + fused     the same with ``AdamW(fused=True)``
  ours + packing + ckpt      the same with activation checkpointing
  ours + packing, no SID rows  LoRA alone: what the trainable SID rows cost
MFU over useful (real, non-padding) tokens, two FLOP conventions (printed with the table): the usual
6N (charges weight gradients the frozen base never computes, and non-causal attention) and the exact
count for LoRA (4N for frozen weights, 6N for LoRA's, causal attention per example). The reference row
is charged the same useful FLOPs, so its MFU shows the waste. MFU = FLOPs/s / peak.
Exits with a message when CUDA is absent (``--smoke_test_cpu`` checks the script on CPU). About 3 minutes on
an H100.
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


def make_items(num_batches: int, batch_size: int, vocab: int, sid_ids: torch.Tensor) -> list[list[dict]]:
    """Per batch, ``batch_size`` examples with the SFT mix's lengths, as the data module's items."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(num_batches):
        prompts = torch.randint(120, 391, (batch_size,), generator=generator)
        responses = torch.where(torch.rand(batch_size, generator=generator) < 0.6, 5, 24)
        items = []
        for row in range(batch_size):
            p, r = int(prompts[row]), int(responses[row])
            ids = torch.randint(0, vocab, (p + r,), generator=generator)
            if r == 5:  # 3 SID tokens, EOS
                ids[p: p + 3] = sid_ids[torch.randint(0, len(sid_ids), (3,), generator=generator)]
            ids = ids.tolist()
            items.append({"input_ids": ids, "labels": [-100] * p + ids[p:], "index": row, "target_item_id": 0})
        batches.append(items)
    return batches


def collate(items_per_batch: list[list[dict]], packed: bool, device) -> list[dict]:
    """Padded (to the longest) or packed batches (rec_lightning.data.packing, rows up to 1,024 tokens) on ``device``."""
    from rec_lightning.data.collate import Collator
    from rec_lightning.data.packing import PackingCollator

    collator = PackingCollator(0, max_pack_length=1024) if packed else Collator(0)
    batches = []
    for items in items_per_batch:
        batch = collator(items)
        batches.append({k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels", "position_ids")
                        if k in batch})
    return batches


def causal_context(batches: list[dict]) -> float:
    """Mean over real tokens of how many keys each attends to (its position in its example + 1)."""
    total = count = 0
    for batch in batches:
        mask = batch["attention_mask"].bool()
        positions = batch["position_ids"] if "position_ids" in batch else mask.long().cumsum(-1) - 1
        total += int((positions + 1)[mask].sum())
        count += int(mask.sum())
    return total / count


def build_model(device, checkpointing: bool, shape: dict, sid_rows: bool = True):
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
    options = LoraOptions(r=16, alpha=32, dropout=0.05, target_modules="all")
    if sid_rows:
        model = apply_finetuning(model, "lora", options, sid_ids)
    else:  # LoRA alone: the cost of the trainable SID rows is the difference to the row with them
        from peft import LoraConfig, get_peft_model

        from rec_lightning.modules.lora import resolve_target_modules

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                                 target_modules=resolve_target_modules(model, "all")))
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
    model.train()
    return model, torch.tensor(sid_ids), rows


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(model, batches, loss_fn, warmup: int, device, fused: bool) -> tuple[float, int, int, float]:
    """(seconds, real tokens, response tokens, peak GiB) over the timed steps."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  **({"fused": True} if fused else {}))
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
        loss_sum, count = response_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                            batch.get("position_ids"))
        return loss_sum / count

    rows = []
    warmup = 3
    variants = [  # label, loss, packed, activation checkpointing, SID rows, fused AdamW
        ("reference (full logits)", reference_loss, False, False, True, False),
        ("ours", our_loss, False, False, True, False),
        ("ours + packing", our_loss, True, False, True, False),
        ("ours + packing + fused AdamW", our_loss, True, False, True, True),
        ("ours + packing + ckpt", our_loss, True, True, True, True),
        ("ours + packing, no SID rows", our_loss, True, False, False, True),
    ]
    items = None
    for label, loss_fn, packed, checkpointing, sid_rows, fused in variants:
        model, sid_ids, vocab = build_model(device, checkpointing, shape, sid_rows)
        items = items or make_items(warmup + args.steps, args.batch_size, BASE_TOKENS, sid_ids)
        batches = collate(items, packed, device)
        try:
            seconds, tokens, responses, peak_gib = run(model, batches, loss_fn, warmup, device, fused)
        except torch.cuda.OutOfMemoryError:
            rows.append((label, None))
        else:
            positions = sum(b["attention_mask"].numel() for b in batches[warmup:])
            rows.append((label, (seconds, tokens, responses, peak_gib, tokens / positions, causal_context(batches))))
        blocks = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and "lora_" not in n)
        lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        mean_length = sum(len(i["input_ids"]) for b in items for i in b) / (len(items) * args.batch_size)
        del model, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()

    cfg = shape
    print(f"GPU: {name} ({peak:.0f} TFLOPS bf16 dense peak), torch {torch.__version__}")
    print(f"model: Qwen2.5-1.5B shape ({cfg['num_hidden_layers']} layers), random init, bf16 weights + autocast; "
          f"LoRA r16 all projections + {NUM_SID_TOKENS} SID rows; {blocks / 1e9:.3f} B block params, "
          f"vocab rows {vocab}")
    print(f"batch: {args.batch_size} examples x mean {mean_length:.0f} real tokens (right padded, or packed), {warmup} warm-up + "
          f"{args.steps} timed steps per row\n")
    layers, hidden = cfg["num_hidden_layers"], cfg["hidden_size"]
    print("FLOPs per real token: '6N' = 6 x block params + 12 x layers x hidden x mean length (PaLM, non-causal)"
          " + 6 x vocab x hidden x response share;\n  'exact' = 4 x frozen block params (forward + input"
          " gradient, no weight gradient) + 6 x LoRA params + 12 x layers x hidden x mean causal context (keys"
          " each token attends to) + 4 x vocab x hidden x response share (frozen head); useful tokens only\n")
    print(f"{'variant':<30}{'tokens/s':>10}{'s/step':>8}{'real':>7}{'MFU 6N':>8}{'MFU exact':>10}{'peak GiB':>10}")
    for label, result in rows:
        if result is None:
            print(f"{label:<30}{'out of memory':>35}")
            continue
        seconds, tokens, responses, peak_gib, real_share, context = result
        share = responses / tokens
        six_n = 6 * blocks + 12 * layers * hidden * mean_length + 6 * vocab * hidden * share
        exact = 4 * blocks + 6 * lora + 12 * layers * hidden * context + 4 * vocab * hidden * share
        rate = tokens / seconds
        print(f"{label:<30}{rate:>10.0f}{seconds / args.steps:>8.3f}{real_share:>7.0%}"
              f"{rate * six_n / (peak * 1e12):>8.1%}{rate * exact / (peak * 1e12):>10.1%}{peak_gib:>10.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

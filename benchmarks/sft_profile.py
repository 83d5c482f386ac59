"""Benchmark: where the time and memory of one LoRA + SID-rows SFT step go (torch.profiler, op groups).

Usage: python benchmarks/sft_profile.py [--shape 0.5b|1.5b] [--batch_size 8] [--trace out.json] [--smoke]

A randomly initialised 2-layer Qwen2 with Qwen2.5-0.5B's width (hidden 896, MLP 4864, 14 query / 2 KV
heads, tied embeddings; ``--shape 1.5b``: 1536 / 8960 / 12 / 2) and the real vocabulary (151,665 tokens
+ 560 SID tokens -> 152,256 rows), no download. Fine-tuning as the library does it
(:func:`rec_lightning.modules.lora.apply_finetuning`, the path ``SFTModule.build`` takes, as in
``gpu_sft.py``): PEFT LoRA r16 on every q/k/v/o/gate/up/down projection + trainable SID rows
(``trainable_token_indices``; PEFT rebuilds the full embedding matrix with ``index_copy`` in every
forward, once for the embedding and once for the tied head). float32 on CPU; on CUDA bf16 base
weights + bf16 autocast (float32 trainable weights), like ``gpu_sft.py``. A micro-batch of synthetic
examples with the SFT mix's lengths (prompt 120-390 tokens, response 5 tokens for SID tasks, 24 for
title tasks, right padded; labels -100 on prompt and padding), loss ``response_loss_sum`` (sum /
count), AdamW. 2 warm-up steps, then 3 steps under ``torch.profiler`` (``profile_memory=True``).

Op groups: forward pre/post hooks open a ``record_function`` range per module kind (base linear,
LoRA A/B + scaling, attention, norms/elementwise, embedding, head); a backward op belongs to the group
of the forward op that created its autograd node (matched by the profiler's sequence number), so the
backward of a LoRA matmul counts as LoRA. Self times are summed per group (% of all profiled self
time); "alloc" is the bytes allocated per step by the group's ops (sum of positive per-op net
allocations). Prints the group table, the top costs, step wall time, peak RSS / peak CUDA memory, and
torch's own ``key_averages`` table. About 1.5 minutes on the 2-core development CPU at the defaults;
``--smoke`` (tiny width, 4,096-token vocabulary, short prompts) takes seconds and is run by a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

BASE_TOKENS, NUM_SID_TOKENS = 151_665, 560
SHAPES = {
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14, "num_key_value_heads": 2},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12, "num_key_value_heads": 2},
    "smoke": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2},
}
SMOKE_BASE_TOKENS = 3_500

LINEAR, LORA, ATTENTION, NORM = "linear (frozen base weights)", "LoRA A/B + scaling", "attention (sdpa, rope)", \
    "RMSNorm, SiLU, residuals"
EMBED, HEAD, GLUE = "embedding + SID rows (index_copy)", "output head + cross-entropy", "decoder glue (masks)"
OPTIMIZER, AUTOGRAD = "optimizer (AdamW, zero_grad)", "autograd other (accumulate, copy, fill)"
LABEL_PREFIX = "group: "


def build_model(shape: dict, num_layers: int, base_tokens: int, device: torch.device, lora_dropout: float = 0.05):
    """A random Qwen2 of ``shape`` with SID rows, wrapped for LoRA r16 + trainable SID rows."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rec_lightning.modules.backbone import EMBEDDING_MULTIPLE
    from rec_lightning.modules.lora import LoraOptions, apply_finetuning

    rows = -(-(base_tokens + NUM_SID_TOKENS) // EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE
    config = AutoConfig.for_model("qwen2", vocab_size=rows, num_hidden_layers=num_layers,
                                  max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                                  tie_word_embeddings=True, use_cache=False, **shape)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    sid_ids = list(range(base_tokens, base_tokens + NUM_SID_TOKENS))
    model = apply_finetuning(model, "lora", LoraOptions(r=16, alpha=32, dropout=lora_dropout, target_modules="all"),
                             sid_ids)
    model.train()
    return model, torch.tensor(sid_ids), rows


def make_batch(batch_size: int, base_tokens: int, sid_ids: torch.Tensor, prompt_range: tuple[int, int],
               generator: torch.Generator, device) -> dict:
    """Right-padded synthetic SFT examples: 60% SID tasks (5-token response), 40% title tasks (24)."""
    prompts = torch.randint(prompt_range[0], prompt_range[1] + 1, (batch_size,), generator=generator)
    responses = torch.where(torch.rand(batch_size, generator=generator) < 0.6, 5, 24)
    length = int((prompts + responses).max())
    input_ids = torch.randint(0, base_tokens, (batch_size, length), generator=generator)  # [B, L]
    attention_mask = torch.zeros(batch_size, length, dtype=torch.long)  # [B, L]
    labels = torch.full((batch_size, length), -100, dtype=torch.long)  # [B, L]
    for row in range(batch_size):
        p, r = int(prompts[row]), int(responses[row])
        attention_mask[row, : p + r] = 1
        if r == 5:  # 3 SID tokens (+ newline, EOS stand-ins)
            input_ids[row, p: p + 3] = sid_ids[torch.randint(0, len(sid_ids), (3,), generator=generator)]
        labels[row, p: p + r] = input_ids[row, p: p + r]
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device), "labels": labels.to(device)}


def pack(batch: dict) -> dict:
    """The same examples packed (rec_lightning.data.packing, rows up to 1,024 tokens)."""
    from rec_lightning.data.packing import PackingCollator

    device = batch["input_ids"].device
    items = []
    for row, mask in enumerate(batch["attention_mask"].bool().cpu()):
        items.append({"input_ids": batch["input_ids"][row].cpu()[mask].tolist(),
                      "labels": batch["labels"][row].cpu()[mask].tolist(), "index": row, "target_item_id": 0})
    packed = PackingCollator(0, max_pack_length=1024)(items)
    return {k: packed[k].to(device) for k in ("input_ids", "attention_mask", "labels", "position_ids")}


def module_group(name: str, module: torch.nn.Module) -> str | None:
    """The op group of a module's own ops (None: no range, its ops fall to the enclosing module)."""
    leaf = name.rsplit(".", 1)[-1]
    kind = type(module).__name__
    if "embed_tokens" in name:
        return EMBED
    if "lm_head" in name:
        return HEAD
    if "lora_" in name or (kind == "Linear" and type(module).__module__.startswith("peft")):
        return LORA  # lora_A / lora_B / lora_dropout, and the wrapper's own scaling and add
    if leaf == "base_layer" or isinstance(module, torch.nn.Linear):
        return LINEAR
    if "Attention" in kind or "Rotary" in kind:
        return ATTENTION
    if "RMSNorm" in kind or "MLP" in kind or "DecoderLayer" in kind:
        return NORM
    if kind.endswith("Model") and hasattr(module, "layers"):
        return GLUE
    return None


def add_group_ranges(model) -> list:
    """Forward hooks that open a ``record_function`` range named after each module's group."""
    handles = []
    for name, module in model.named_modules():
        group = module_group(name, module)
        if group is None:
            continue
        ranges: list = []

        def enter(_module, _args, group=group, ranges=ranges):
            ranges.append(torch.profiler.record_function(LABEL_PREFIX + group))
            ranges[-1].__enter__()

        def leave(_module, _args, _output, ranges=ranges):
            ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _is_backward_node(event) -> bool:
    return event.sequence_nr >= 0 and ("Backward" in event.name or event.name.startswith("autograd::engine"))


def group_times(events, cuda: bool) -> dict[str, list[float]]:
    """``{group: [self CPU us, self device us, alloc bytes]}`` over the profiled events (CUDA bytes when ``cuda``)."""
    cpu_events = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.name != "[memory]"]

    def enclosing(event):
        """(forward group label, backward node) of the innermost enclosing range."""
        while event is not None:
            if event.name.startswith(LABEL_PREFIX):
                return event.name[len(LABEL_PREFIX):], None
            if _is_backward_node(event):
                return None, event
            if event.name in (OPTIMIZER, AUTOGRAD):
                return event.name, None
            event = event.cpu_parent
        return AUTOGRAD, None

    placed = [(event, *enclosing(event)) for event in cpu_events]
    # autograd sequence number -> group of the forward op that created the node. Every op records the
    # number the next node will get, so of the ops sharing a number the last to start created it.
    created_by: dict[int, str] = {}
    for event, group, node in sorted(placed, key=lambda item: item[0].time_range.start):
        if node is None and event.sequence_nr >= 0 and group not in (OPTIMIZER, AUTOGRAD):
            created_by[event.sequence_nr] = group
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for event, group, node in placed:
        if node is not None:
            group = created_by.get(node.sequence_nr, AUTOGRAD)
        total = totals[group]
        total[0] += event.self_cpu_time_total
        total[1] += getattr(event, "self_device_time_total", 0.0)
        memory = event.self_device_memory_usage if cuda else event.self_cpu_memory_usage
        total[2] += max(memory, 0)
    return totals


def train_step(model, optimizer, batch, device) -> torch.Tensor:
    from rec_lightning.modules.sft import response_loss_sum

    with torch.profiler.record_function(LABEL_PREFIX + HEAD):  # the loss' own ops: response selection, CE
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss_sum, count = response_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                                batch.get("position_ids"))
            loss = loss_sum / count
    with torch.profiler.record_function(AUTOGRAD):
        loss.backward()
    with torch.profiler.record_function(OPTIMIZER):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def print_groups(totals: dict, steps: int, step_seconds: float, cuda: bool) -> None:
    all_cpu = sum(t[0] for t in totals.values())
    all_device = sum(t[1] for t in totals.values())
    key = 1 if cuda else 0
    header = f"{'op group':<42}{'self CPU ms':>12}{'%':>7}" + (f"{'self CUDA ms':>13}{'%':>7}" if cuda else "")
    print(header + f"{'CUDA alloc MB' if cuda else 'alloc MB':>14}")
    ordered = sorted(totals.items(), key=lambda item: -item[1][key])
    for group, (cpu_us, device_us, alloc) in ordered:
        line = f"{group:<42}{cpu_us / 1e3 / steps:>12.1f}{cpu_us / all_cpu:>7.1%}"
        if cuda:
            line += f"{device_us / 1e3 / steps:>13.1f}{device_us / max(all_device, 1e-9):>7.1%}"
        print(line + f"{alloc / 2**20 / steps:>14.0f}")
    print(f"{'total (per step)':<42}{all_cpu / 1e3 / steps:>12.1f}{'':>7}"
          + (f"{all_device / 1e3 / steps:>13.1f}" if cuda else "")
          + f"   wall {step_seconds * 1e3:.0f} ms/step under the profiler")
    share = all_device if cuda else all_cpu
    top = ", ".join(f"{group} {values[key] / share:.0%}" for group, values in ordered[:3])
    print(f"top costs: {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("0.5b", "1.5b"), default="0.5b", help="width of Qwen2.5-0.5B or -1.5B")
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--trace", default=None, help="write a chrome trace (chrome://tracing, perfetto) here")
    parser.add_argument("--lora_dropout", type=float, default=0.05)
    parser.add_argument("--packing", action="store_true", help="pack each batch's examples (data.packing)")
    parser.add_argument("--smoke", action="store_true", help="tiny width and vocabulary, short prompts (seconds)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    shape_name = "smoke" if args.smoke else args.shape
    base_tokens = SMOKE_BASE_TOKENS if args.smoke else BASE_TOKENS
    prompt_range = (20, 60) if args.smoke else (120, 390)

    model, sid_ids, rows = build_model(SHAPES[shape_name], args.num_layers, base_tokens, device, args.lora_dropout)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batches = [make_batch(args.batch_size, base_tokens, sid_ids, prompt_range, generator, device)
               for _ in range(args.warmup + args.steps)]
    if args.packing:
        batches = [pack(b) for b in batches]

    warmup_seconds = []
    for batch in batches[: args.warmup]:
        start = time.perf_counter()
        train_step(model, optimizer, batch, device)
        _sync(device)
        warmup_seconds.append(time.perf_counter() - start)

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    handles = add_group_ranges(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with profile(activities=activities, profile_memory=True, record_shapes=False) as prof:
        start = time.perf_counter()
        for batch in batches[args.warmup:]:
            loss = train_step(model, optimizer, batch, device)
        _sync(device)
        step_seconds = (time.perf_counter() - start) / args.steps
    for handle in handles:
        handle.remove()

    cuda = device.type == "cuda"
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[args.warmup:]) / args.steps
    positions = sum(b["attention_mask"].numel() for b in batches[args.warmup:]) / args.steps
    responses = sum(int((b["labels"] != -100).sum()) for b in batches[args.warmup:]) / args.steps
    trainable_count = sum(p.numel() for p in trainable)
    cfg = SHAPES[shape_name]
    print(f"device: {torch.cuda.get_device_name(device) if cuda else 'CPU'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {'bf16 weights + autocast' if cuda else 'float32'}")
    print(f"model: {args.num_layers}-layer Qwen2, {'smoke' if args.smoke else 'Qwen2.5-' + args.shape} width (hidden "
          f"{cfg['hidden_size']}, MLP {cfg['intermediate_size']}, {cfg['num_attention_heads']}/"
          f"{cfg['num_key_value_heads']} heads), {rows} vocab rows tied; LoRA r16 all projections + "
          f"{NUM_SID_TOKENS} SID rows: {trainable_count:,} trainable parameters; LoRA dropout {args.lora_dropout}")
    layout = "packed" if args.packing else "padded"
    print(f"batch: {args.batch_size} examples, {layout}: {positions:.0f} positions ({tokens:.0f} real tokens, "
          f"{responses:.0f} response tokens) per step; {args.warmup} warm-up steps "
          f"({', '.join(f'{s:.2f}' for s in warmup_seconds)} s), {args.steps} profiled; last loss {loss.item():.3f}\n")
    print_groups(group_times(prof.events(), cuda), args.steps, step_seconds, cuda)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB
    peak_cuda = f", peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else ""
    print(f"peak RSS {peak_rss:.2f} GiB{peak_cuda}; {tokens / step_seconds:.0f} real tokens/s under the profiler\n")
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=50))
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"chrome trace written to {args.trace}")


if __name__ == "__main__":
    main()

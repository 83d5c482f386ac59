"""Benchmark: SFT training throughput on CPU, tiny model, real Industrial train split.

Usage: python benchmarks/sft_throughput.py [--data_dir ../shared/data/Amazon] [--steps 30] [--batch_size 32]

The quickstart's tiny Qwen2 (hidden 128, 2 layers, full fine-tuning, float32) and the byte-level BPE the
library trains on the data; the whole SFT task mix (six tasks) of the train split, max_length 512.
Each row runs the same number of optimizer steps (forward, backward, AdamW) after 3 warm-up steps,
the rows interleaved step by step so that other load on the machine hits them alike:
  reference        MiniOneRec's loss: Hugging Face ``model(labels=...)`` (full [B, L, V] logits),
                   batches padded to a multiple of 8, random order
  ours             ``response_loss_sum``: output head only at response positions, random order
  ours + grouped   the same with ``group_by_length`` (LengthGroupedSampler)
tokens/s counts real (non-padding) tokens; padding = padded positions / all positions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def measure_interleaved(variants: list[tuple], warmup: int = 3) -> list[tuple[float, float, float]]:
    """(tokens/s, padding fraction, seconds per step) per variant ``(model, batches, loss_fn)``.

    Steps run round-robin (step i of every variant, then step i + 1), so load from other processes
    on a shared machine affects every variant alike.
    """
    optimizers = [torch.optim.AdamW(model.parameters(), lr=1e-4) for model, _, _ in variants]
    totals = [[0, 0, 0.0] for _ in variants]  # real tokens, positions, seconds
    for step in range(len(variants[0][1])):
        for (model, batches, loss_fn), optimizer, total in zip(variants, optimizers, totals):
            batch = batches[step]
            start = time.perf_counter()
            loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step >= warmup:
                total[2] += time.perf_counter() - start
                total[0] += int(batch["attention_mask"].sum())
                total[1] += batch["attention_mask"].numel()
    steps = len(variants[0][1]) - warmup
    return [(tokens / seconds, 1.0 - tokens / positions, seconds / steps) for tokens, positions, seconds in totals]


def pad_to_multiple(batch: dict, multiple: int, pad_id: int) -> dict:
    length = batch["input_ids"].shape[1]
    extra = -length % multiple
    if not extra:
        return batch
    pad = lambda t, v: torch.nn.functional.pad(t, (0, extra), value=v)  # noqa: E731
    return {"input_ids": pad(batch["input_ids"], pad_id), "attention_mask": pad(batch["attention_mask"], 0),
            "labels": pad(batch["labels"], -100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/Amazon"))
    parser.add_argument("--category", default="Industrial_and_Scientific")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per row")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    if not Path(args.data_dir, "index").is_dir():
        print(f"real data not found at {args.data_dir}; nothing to measure")
        return

    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.modules.backbone import TINY_QWEN2, BackboneOptions
    from rec_lightning.modules.sft import SFTModule, response_loss_sum

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        data = RecDataModule(data_dir=args.data_dir, category=args.category, batch_size=args.batch_size,
                             max_length=512, cache_dir=cache)
        data.setup("fit")
        loaders = {}
        for grouped in (False, True):
            data.group_by_length = grouped  # read by train_dataloader()
            iterator = iter(data.train_dataloader())
            loaders[grouped] = [next(iterator) for _ in range(args.steps + 3)]
        setup_s = time.perf_counter() - started
        num_examples = len(data.datasets["train"])

        def fresh_model():
            module = SFTModule(backbone=BackboneOptions(config=dict(TINY_QWEN2)), finetune="full")
            module.build(data.tokenizer, data.catalog.sid_tokens)
            return module.model

        def reference_loss(model, batch):
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"], use_cache=False).loss

        def our_loss(model, batch):
            loss_sum, count = response_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
            return loss_sum / count

        pad_id = data.tokenizer.pad_token_id
        reference_batches = [pad_to_multiple(b, 8, pad_id) for b in loaders[False]]
        names = ["reference (full logits, pad x8)", "ours", "ours + group_by_length"]
        results = measure_interleaved([(fresh_model(), reference_batches, reference_loss),
                                       (fresh_model(), loaders[False], our_loss),
                                       (fresh_model(), loaders[True], our_loss)])
        rows = list(zip(names, results))
    lengths = data.datasets["train"].lengths
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print(f"data: {args.category} train split, {num_examples} examples (six-task mix), mean length "
          f"{statistics.mean(lengths):.0f} tokens, max {max(lengths)}; vocab {len(data.tokenizer)} "
          f"(setup {setup_s:.0f} s)")
    print(f"model: tiny Qwen2 {TINY_QWEN2['hidden_size']}h x {TINY_QWEN2['num_hidden_layers']} layers, float32, full "
          f"fine-tuning; micro-batch {args.batch_size}, {args.steps} timed steps per row\n")
    print(f"{'variant':<34}{'tokens/s':>10}{'padding':>9}{'s/step':>8}{'speed-up':>10}")
    base = rows[0][1][0]
    for name, (rate, padding, seconds) in rows:
        print(f"{name:<34}{rate:>10.0f}{padding:>9.1%}{seconds:>8.3f}{rate / base:>9.2f}x")


if __name__ == "__main__":
    main()

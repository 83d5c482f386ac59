"""Benchmark: SFT training throughput on CPU, tiny model, real Industrial train split.

Usage: python benchmarks/sft_throughput.py [--data_dir ../shared/data/Amazon] [--steps 30] [--batch_size 32]
       [--finetune full|lora] [--no-hf_trainer] [--threads N]

The quickstart's tiny Qwen2 (hidden 128, 2 layers, full fine-tuning or ``--finetune lora``, float32) and
the byte-level BPE the library trains on the data; the whole SFT task mix (six tasks) of the train split,
max_length 512.
Each row runs the same number of optimizer steps (forward, backward, AdamW) after 3 warm-up steps,
the rows interleaved step by step so that other load on the machine hits them alike:
  reference        MiniOneRec's loss: Hugging Face ``model(labels=...)`` (full [B, L, V] logits),
                   batches padded to a multiple of 8, random order
  ours             ``response_loss_sum``: output head only at response positions, random order
  ours + grouped   the same with ``group_by_length`` (LengthGroupedSampler)
  ours + packing   the same examples as ``ours`` (random order), each micro-batch packed
                   (``data.packing``: rows up to max_length, block-diagonal attention)
tokens/s counts real (non-padding) tokens; padding = padded positions / all positions.

``--hf_trainer`` (on by default) adds a separate measurement, after the interleaved rows: a plain
``transformers.Trainer`` (MiniOneRec's path) trains the same model shape on the examples of the first
3 + ``--steps`` batches of the ``ours`` row: ``model(labels=...)`` (full-vocabulary loss),
``DataCollatorForSeq2Seq`` padding to the longest (multiple of 8), random order, AdamW (torch), the
same lr, micro-batch, ``max_steps`` = 3 + ``--steps``, no eval, no saving, ``report_to none``, on
CPU, its output in a temporary folder. A ``TrainerCallback`` times the steps after the 3 warm-up
steps (``on_step_begin`` to ``on_step_end``: forward, backward, gradient clipping, AdamW, lr
schedule; collation happens before ``on_step_begin``, as our rows' batches are collated up front).
Also unlike our rows: the Trainer clips gradients (``max_grad_norm`` 1.0), uses no weight decay and
a linear lr decay, and it is not interleaved with them, so other load on the machine can favour
either side. ``--finetune lora`` runs every row with LoRA (r 16, alpha 32, dropout 0.05, every
projection): ours through the library (``SFTModule(finetune="lora")``: PEFT LoRA + trainable SID
rows), the Trainer's with a plain PEFT ``LoraConfig`` of the same settings on the same base, with
the same ``trainable_token_indices`` (the SID rows of the embedding, which the tied head shares).
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


def unpadded_examples(batches: list[dict]) -> list[dict]:
    """The examples of right-padded batches as token lists (what a ``DataCollatorForSeq2Seq`` takes)."""
    examples = []
    for batch in batches:
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            n = int(mask.sum())
            examples.append({"input_ids": ids[:n].tolist(), "attention_mask": mask[:n].tolist(),
                             "labels": labels[:n].tolist()})
    return examples


def measure_hf_trainer(model, tokenizer, examples: list[dict], batch_size: int, warmup: int,
                       steps: int) -> tuple[float, float, float]:
    """(tokens/s, padding fraction, seconds per step) of a plain ``transformers.Trainer`` after ``warmup`` steps."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    pad = DataCollatorForSeq2Seq(tokenizer, padding="longest", pad_to_multiple_of=8, label_pad_token_id=-100)
    collated: list[tuple[int, int]] = []  # (real tokens, positions) per batch, in step order

    def collate(features):
        batch = pad(features)
        collated.append((int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
        return batch

    class StepTimer(TrainerCallback):
        seconds = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step > warmup:  # global_step is already advanced here
                StepTimer.seconds += time.perf_counter() - self.start

    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=batch_size, learning_rate=1e-4, optim="adamw_torch",
            max_steps=warmup + steps, eval_strategy="no", save_strategy="no", logging_strategy="no",
            report_to="none", use_cpu=True, dataloader_num_workers=0, dataloader_pin_memory=False,
            remove_unused_columns=False, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=arguments, train_dataset=examples, data_collator=collate,
                          callbacks=[StepTimer()])
        trainer.remove_callback(PrinterCallback)  # its end-of-training metrics line is not ours to print
        trainer.train()
    tokens = sum(real for real, _ in collated[warmup: warmup + steps])
    positions = sum(all_ for _, all_ in collated[warmup: warmup + steps])
    return tokens / StepTimer.seconds, 1.0 - tokens / positions, StepTimer.seconds / steps


def hf_lora(model, sid_token_ids: list[int]):
    """MiniOneRec-style PEFT LoRA on a plain base, with the library's settings and the SID rows trainable."""
    from peft import LoraConfig, get_peft_model

    from rec_lightning.modules.lora import ALL_PROJECTIONS, LoraOptions

    options = LoraOptions()
    config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=list(ALL_PROJECTIONS), task_type="CAUSAL_LM",
                        trainable_token_indices={"embed_tokens": list(sid_token_ids)})
    return get_peft_model(model, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/Amazon"))
    parser.add_argument("--category", default="Industrial_and_Scientific")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per row")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--finetune", choices=("full", "lora"), default="full", help="fine-tuning mode of every row")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 keeps other work on a shared 2-core machine from "
                             "skewing the rows)")
    parser.add_argument("--hf_trainer", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a plain transformers.Trainer on the same examples")
    args = parser.parse_args()
    if not Path(args.data_dir, "index").is_dir():
        print(f"real data not found at {args.data_dir}; nothing to measure")
        return

    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.modules.backbone import TINY_QWEN2, BackboneOptions
    from rec_lightning.modules.sft import SFTModule, response_loss_sum

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        data = RecDataModule(data_dir=args.data_dir, category=args.category, batch_size=args.batch_size,
                             max_length=512, cache_dir=cache)
        data.setup("fit")
        loaders = {}
        for name, grouped, packing in (("padded", False, False), ("grouped", True, False), ("packed", False, True)):
            data.group_by_length, data.packing = grouped, packing  # read by train_dataloader()
            iterator = iter(data.train_dataloader())
            loaders[name] = [next(iterator) for _ in range(args.steps + 3)]
        setup_s = time.perf_counter() - started
        num_examples = len(data.datasets["train"])

        def fresh_model(finetune: str = args.finetune):
            module = SFTModule(backbone=BackboneOptions(config=dict(TINY_QWEN2)), finetune=finetune)
            module.build(data.tokenizer, data.catalog.sid_tokens)
            return module.model, module.sid_token_ids

        def reference_loss(model, batch):
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"], use_cache=False).loss

        def our_loss(model, batch):
            loss_sum, count = response_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                                batch.get("position_ids"))
            return loss_sum / count

        pad_id = data.tokenizer.pad_token_id
        reference_batches = [pad_to_multiple(b, 8, pad_id) for b in loaders["padded"]]
        names = ["reference (full logits, pad x8)", "ours", "ours + group_by_length", "ours + packing"]
        results = measure_interleaved([(fresh_model()[0], reference_batches, reference_loss),
                                       (fresh_model()[0], loaders["padded"], our_loss),
                                       (fresh_model()[0], loaders["grouped"], our_loss),
                                       (fresh_model()[0], loaders["packed"], our_loss)])
        rows = list(zip(names, results))
        if args.hf_trainer:
            base, sid_token_ids = fresh_model("full")
            model = hf_lora(base, sid_token_ids) if args.finetune == "lora" else base
            rows.append(("HF Trainer (full logits, pad x8)", measure_hf_trainer(
                model, data.tokenizer, unpadded_examples(loaders["padded"]), args.batch_size, 3, args.steps)))
    lengths = data.datasets["train"].lengths
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print(f"data: {args.category} train split, {num_examples} examples (six-task mix), mean length "
          f"{statistics.mean(lengths):.0f} tokens, max {max(lengths)}; vocab {len(data.tokenizer)} "
          f"(setup {setup_s:.0f} s)")
    print(f"model: tiny Qwen2 {TINY_QWEN2['hidden_size']}h x {TINY_QWEN2['num_hidden_layers']} layers, float32, "
          f"{args.finetune} fine-tuning; micro-batch {args.batch_size}, {args.steps} timed steps per row\n")
    print(f"{'variant':<34}{'tokens/s':>10}{'padding':>9}{'s/step':>8}{'speed-up':>10}")
    base = rows[0][1][0]
    for name, (rate, padding, seconds) in rows:
        print(f"{name:<34}{rate:>10.0f}{padding:>9.1%}{seconds:>8.3f}{rate / base:>9.2f}x")
    if args.hf_trainer:
        hf_rate, ours_rate = rows[-1][1][0], rows[1][1][0]
        print(f"\nours vs HF Trainer: {ours_rate / hf_rate:.2f}x tokens/s (ours + group_by_length: "
              f"{rows[2][1][0] / hf_rate:.2f}x, ours + packing: {rows[3][1][0] / hf_rate:.2f}x); the Trainer row ran "
              "after the others, not interleaved")


if __name__ == "__main__":
    main()

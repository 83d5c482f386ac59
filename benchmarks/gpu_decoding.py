"""GPU benchmark: constrained beam search at beam 50 for a Qwen2.5-1.5B-shaped model, ours vs the reference.

Usage: python benchmarks/gpu_decoding.py [--batch_sizes 16 32 64 128 256] [--num_prompts 512] [--smoke]

A randomly initialised Qwen2 with Qwen2.5-1.5B's shape (28 layers, hidden 1536, 12/2 heads, tied
embeddings) and its vocabulary plus 560 SID tokens, in bf16; no download. Prompts are random
tokens of 150-250 tokens (the canonical prompt's length with Qwen's tokenizer), left padded. The
catalog is the real Industrial index when ../shared/data/Amazon is present, else 3,686 random
3-level SIDs. Reports, for both KV-cache layouts (``per_beam``: each prompt's cache copied into its
beams; ``shared``: one prompt cache per prompt, issue 25), users/s, peak GPU memory and peak KV-cache
bytes per batch size (a batch that runs out of memory is reported as such); the bare forward floor
of the per-beam layout at its best batch size; a torch.profiler table of one batch of each layout at
its best batch size; the reference (generate + per-beam processor, 8 prompts per batch as
MiniOneRec); and whether the rankings agree on a subset (run in float32: bf16 rounding differs
between batch shapes, which reorders near-ties). About 5 minutes on one H100; on a machine without
CUDA it says so and exits. ``--smoke`` runs every part on CPU with a 2-layer stand-in and a few
prompts (a test runs it), so the script is known to work before a GPU is available.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

QWEN_TOKENIZER_SIZE = 151_665  # Qwen2.5's tokenizer; SID tokens are added after it
EOS, PAD = 151_645, 151_643  # <|im_end|>, <|endoftext|>
NUM_SID_TOKENS = 560


def qwen_1_5b_shape(vocab_size: int, device: str, tiny: bool = False):
    """Qwen2.5-1.5B's shape, random weights, bf16 (``tiny``: a 2-layer stand-in for a smoke test)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4) if tiny else dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12)
    config = Qwen2Config(vocab_size=vocab_size, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1_000_000.0, tie_word_embeddings=True, eos_token_id=EOS, pad_token_id=PAD,
                         bos_token_id=None, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    return model.eval()


def catalog_sequences(data_dir: Path) -> tuple[list[list[int]], str]:
    """SID token-id sequences: the real index if present, else random 3-level SIDs (3,686 items)."""
    sid_base = QWEN_TOKENIZER_SIZE
    if (data_dir / "index").is_dir():
        from rec_lightning.sids.codec import ItemCatalog

        catalog = ItemCatalog.from_data_dir(data_dir, "Industrial_and_Scientific")
        token_id = {token: sid_base + i for i, token in enumerate(catalog.sid_tokens)}
        sequences = [[token_id[t] for t in catalog.item(catalog.items_with_sid(s)[0]).tokens] for s in catalog.sids]
        return sequences, f"real Industrial index ({len(sequences)} distinct SIDs, {len(token_id)} SID tokens)"
    rng = random.Random(0)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < 3686:
        codes = (rng.randrange(256), 256 + rng.randrange(256), 512 + rng.randrange(48))
        seen.add(tuple(sid_base + code for code in codes))
    return [list(s) for s in sorted(seen)], "random 3-level SIDs (3686)"


def random_prompts(num_prompts: int, min_length: int, max_length: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, max_length + 1, (num_prompts,), generator=generator)
    return [torch.randint(0, PAD, (int(n),), generator=generator) for n in lengths]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def left_pad(prompts: list[torch.Tensor], device: str) -> dict:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), PAD, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = prompt
        attention_mask[row, width - len(prompt):] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def timed_pass(prompts: list[torch.Tensor], batch_size: int, run, device: str) -> tuple[float, list]:
    batches = [left_pad(prompts[i:i + batch_size], device) for i in range(0, len(prompts), batch_size)]
    run(batches[0])  # warm-up
    synchronize()
    start = time.perf_counter()
    outputs = [run(batch) for batch in batches]
    synchronize()
    return time.perf_counter() - start, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/Amazon"))
    parser.add_argument("--num_prompts", type=int, default=512)
    parser.add_argument("--num_beams", type=int, default=50)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--reference_prompts", type=int, default=64, help="prompts for the (slow) reference timing")
    parser.add_argument("--check_prompts", type=int, default=16, help="prompts for the float32 ranking check")
    parser.add_argument("--min_length", type=int, default=150)
    parser.add_argument("--max_length", type=int, default=250)
    parser.add_argument("--smoke", action="store_true", help="a 2-layer model on CPU with few prompts: checks "
                        "that the script runs, measures nothing meaningful")
    args = parser.parse_args()
    if args.smoke:
        args.num_prompts, args.reference_prompts, args.check_prompts, args.batch_sizes = 8, 4, 4, [4, 8]
        args.min_length, args.max_length = 20, 40
    elif not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (on CPU, run benchmarks/decoding.py)")
        return
    device = "cpu" if args.smoke else "cuda"

    import transformers
    from decoding import bare_forward  # benchmarks/decoding.py, beside this file

    from rec_lightning.generation.decoding import constrained_beam_search
    from rec_lightning.generation.decoding_reference import compare_rankings, reference_beam_search
    from rec_lightning.generation.trie import SIDTrie

    vocab_size = (QWEN_TOKENIZER_SIZE + NUM_SID_TOKENS + 63) // 64 * 64
    model = qwen_1_5b_shape(vocab_size, device, tiny=args.smoke)
    sequences, catalog_note = catalog_sequences(Path(args.data_dir))
    trie = SIDTrie.from_sequences(sequences, EOS, device=device)
    sid_ids = torch.arange(QWEN_TOKENIZER_SIZE, QWEN_TOKENIZER_SIZE + NUM_SID_TOKENS)
    prompts = random_prompts(args.num_prompts, args.min_length, args.max_length)
    beams = args.num_beams

    def decode(cache):
        return lambda batch: constrained_beam_search(model, batch["input_ids"], batch["attention_mask"], trie, beams,
                                                     prompt_cache=cache)

    def reference(batch):
        return reference_beam_search(model, batch["input_ids"], batch["attention_mask"], trie, beams)

    name = "CPU smoke test (2-layer stand-in)" if args.smoke else torch.cuda.get_device_name()
    print(f"device: {name}, torch {torch.__version__}, transformers {transformers.__version__}")
    shape = "a 2-layer stand-in" if args.smoke else "random Qwen2.5-1.5B shape"
    print(f"model: {shape}, bf16, vocab {vocab_size}; catalog: {catalog_note}; beams {beams}; "
          f"prompts {args.min_length}-{args.max_length} tokens")
    print("| cache | batch | prompts | seconds | users/s | peak GiB | peak KV cache GiB |")
    print("|---|---|---|---|---|---|---|")
    best: dict[str, tuple[int, float]] = {}
    for cache in ("per_beam", "shared"):
        for batch_size in args.batch_sizes:
            if not args.smoke:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                seconds, outputs = timed_pass(prompts, batch_size, decode(cache), device)
            except torch.cuda.OutOfMemoryError:
                outputs = None
            if outputs is None:
                print(f"| {cache} | {batch_size} | {len(prompts)} | out of memory | | | |", flush=True)
                break  # larger batches cannot fit either
            peak = 0.0 if args.smoke else torch.cuda.max_memory_allocated() / 2**30
            kv = max(o.peak_cache_bytes for o in outputs) / 2**30
            print(f"| {cache} | {batch_size} | {len(prompts)} | {seconds:.2f} | {len(prompts) / seconds:.1f} | "
                  f"{peak:.1f} | {kv:.2f} |", flush=True)
            if cache not in best or seconds < best[cache][1]:
                best[cache] = (batch_size, seconds)
    if not best:
        return
    if "per_beam" in best:
        size = best["per_beam"][0]
        bare_seconds, _ = timed_pass(prompts, size,
                                     lambda b: bare_forward(model, b, beams, trie.max_depth - 1, sid_ids), device)
        print(f"bare forward floor (per-beam cache), batch {size}: {bare_seconds:.2f} s, "
              f"{len(prompts) / bare_seconds:.1f} users/s")
    ref_prompts = prompts[: args.reference_prompts]
    ref_seconds, _ = timed_pass(ref_prompts, 8, reference, device)
    ref_rate = len(ref_prompts) / ref_seconds
    print(f"reference: generate + per-beam processor, batch 8: {len(ref_prompts)} prompts, {ref_seconds:.2f} s, "
          f"{ref_rate:.1f} users/s")
    for cache, (size, seconds) in best.items():
        print(f"{cache} at its best batch ({size}): {len(prompts) / seconds:.1f} users/s, "
              f"{len(prompts) / seconds / ref_rate:.1f}x the reference")
    for cache, (size, _) in best.items():
        profile_one_batch(decode(cache), left_pad(prompts[:size], device), f"{cache}, batch {size}", args.smoke)

    model.float()  # the ranking check in float32 (see the module docstring)
    check = prompts[: args.check_prompts]
    results = {name: timed_pass(check, 8, run, device)[1]
               for name, run in (("shared", decode("shared")), ("per_beam", decode("per_beam")),
                                 ("reference", reference))}
    joined = {name: [torch.cat([getattr(o, field) for o in outputs]).cpu() for field in ("items", "scores")]
              for name, outputs in results.items()}
    for other in ("per_beam", "reference"):
        agreement = compare_rankings(*joined["shared"], *joined[other], atol=1e-4)
        print(f"rankings shared vs {other} on {len(check)} prompts (float32, batch 8): {agreement['identical']} "
              f"identical, {agreement['ties_only']} differ only in tied items, {agreement['different']} different")


def profile_one_batch(run, batch: dict, label: str, smoke: bool) -> None:
    """torch.profiler over one decoding batch: the top operators by device (CPU in smoke mode) time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([] if smoke else [ProfilerActivity.CUDA])
    run(batch)  # warm-up outside the profile
    synchronize()
    with profile(activities=activities, profile_memory=not smoke) as prof:
        run(batch)
        synchronize()
    sort = "self_cpu_time_total" if smoke else "self_cuda_time_total"
    print(f"\nprofile: {label}, top operators by {sort}")
    print(prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()

"""Benchmark: load, validate and tokenize the full Industrial train split for the whole SFT task mix.

Usage: python benchmarks/data_pipeline.py [--data_dir ../shared/data/Amazon] [--tokenizer PATH]
Without --tokenizer, a byte-level BPE is trained on the data (its training time is reported apart).
Target (issue 2): under 30 s on the 2-core CPU machine.
Then `RecDataModule.setup("fit")` (train task mix + validation set) cold, with an empty tokenized-data
cache, and again from the cache in a new data module (issue 26: target >= 10x faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/Amazon"))
    parser.add_argument("--category", default="Industrial_and_Scientific")
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args()
    if not Path(args.data_dir, "index").is_dir():
        print(f"real data not found at {args.data_dir}; nothing to measure")
        return

    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.data.dataset import RecDataset
    from rec_lightning.data.records import load_rec_data

    with tempfile.TemporaryDirectory() as cache:
        dm = RecDataModule(data_dir=args.data_dir, category=args.category, tokenizer=args.tokenizer, cache_dir=cache)
        t0 = time.perf_counter()
        data = load_rec_data(args.data_dir, args.category, splits=("train",))
        t_load = time.perf_counter() - t0
        dm.data = data
        t0 = time.perf_counter()
        tokenizer = dm.tokenizer
        t_tok_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        examples = dm.train_examples()
        t_examples = time.perf_counter() - t0
        t0 = time.perf_counter()
        dataset = RecDataset(examples, tokenizer, max_length=512, keep_examples=False)
        t_tokenize = time.perf_counter() - t0
        setups = []
        for _ in range(2):  # cold (fills the cache), then warm (a new module maps it)
            fresh = RecDataModule(data_dir=args.data_dir, category=args.category, tokenizer=args.tokenizer,
                                  cache_dir=cache, max_length=512)
            fresh.tokenizer  # noqa: B018 (trained or loaded before the clock starts, as above)
            t0 = time.perf_counter()
            fresh.setup("fit")
            setups.append(time.perf_counter() - t0)
    lengths = dataset.lengths.tolist()
    array_bytes = sum(array.nbytes for array in dataset.arrays().values())
    total = t_load + t_examples + t_tokenize
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"tokenizer: {args.tokenizer or 'byte-level BPE trained on the data'} ({len(tokenizer)} tokens)")
    print(f"{'step':<42}{'seconds':>10}")
    print(f"{'load + validate train CSV + catalog':<42}{t_load:>10.2f}")
    print(f"{'build task mix (6 tasks)':<42}{t_examples:>10.2f}")
    print(f"{'tokenize all examples':<42}{t_tokenize:>10.2f}")
    print(f"{'total (target < 30 s)':<42}{total:>10.2f}")
    print(f"{'(tokenizer load/training, not counted)':<42}{t_tok_train:>10.2f}")
    print(f"examples {len(dataset):,}, tokens {sum(lengths):,}, mean length {sum(lengths) / len(lengths):.1f}, "
          f"max {max(lengths)}, truncated {dataset.num_truncated}; arrays {array_bytes / 2**20:.1f} MiB")
    print(f"{'setup(fit): train + valid, cold cache':<42}{setups[0]:>10.2f}")
    print(f"{'setup(fit): train + valid, from the cache':<42}{setups[1]:>10.2f}")
    print(f"cached / cold = {setups[0] / setups[1]:.0f}x faster (target >= 10x)")


if __name__ == "__main__":
    main()

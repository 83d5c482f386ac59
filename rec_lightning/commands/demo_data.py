"""``make-demo-data``: write the embedded synthetic data set (and its trained tokenizer)."""

from __future__ import annotations

from rec_lightning.commands.arguments import run_function


def make_demo_data(output: str, seed: int = 0, num_users: int = 500, train_tokenizer: bool = True) -> None:
    """Write the demo data set (category Demo_Shop) in the MiniOneRec layout.

    Args:
        output: folder to write; an existing one is replaced only if it is empty or an earlier demo set.
        seed: generator seed; the same seed gives byte-identical files.
        num_users: users simulated (about 11 rows each).
        train_tokenizer: also train and cache the byte-level BPE tokenizer beside the data.
    """
    from rec_lightning.data.demo import DEMO_CATEGORY
    from rec_lightning.data.demo import make_demo_data as write_demo

    path = write_demo(output, seed=seed, num_users=num_users)
    print(f"wrote demo data set {DEMO_CATEGORY} to {path}")
    if train_tokenizer:
        from rec_lightning.data.datamodule import RecDataModule

        datamodule = RecDataModule(data_dir=str(path), category=DEMO_CATEGORY)
        print(f"tokenizer: {len(datamodule.tokenizer)} tokens ({len(datamodule.sid_token_ids)} SID tokens)")


def main(argv: list[str]) -> None:
    run_function(make_demo_data, "make-demo-data", argv)

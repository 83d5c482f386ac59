"""A seeded slice of train held out of training (``holdout_fraction``, ``holdout_seed``, ``train_on``)."""

import json

import numpy as np
import pytest
import torch
from cli_helpers import assert_clean_error, run_cli, short_fit_args, write_short_run_config

from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.data.holdout import kept_rows, split_rows
from rec_lightning.errors import ConfigurationError


def test_split_rows_is_a_seeded_partition():
    kept, held = split_rows(10, 0.3, seed=0)
    # numpy's default_rng(0).choice(10, 7, replace=False), sorted: pinned, so a recorded (fraction, seed) keeps
    # naming the same rows (benchmarks/README.md's slices were drawn this way)
    assert kept.tolist() == sorted(np.random.default_rng(0).choice(10, size=7, replace=False).tolist())
    assert held.tolist() == sorted(set(range(10)) - set(kept.tolist())) and held.size == 3
    again, _ = split_rows(10, 0.3, seed=0)
    other, _ = split_rows(10, 0.3, seed=1)
    assert again.tolist() == kept.tolist() and other.tolist() != kept.tolist()
    # the draw of benchmarks/subsample_train.py --fraction 0.9: the complement of a 0.1 holdout
    assert split_rows(36259, 0.1, 0)[0].tolist() == kept_rows(36259, 0.9, 0).tolist()
    assert split_rows(36259, 0.1, 0)[1].size == 36259 - 32633  # the seventh session's 3,626 held-out rows


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_rows_refuses_fractions_outside_0_1(fraction):
    with pytest.raises(ConfigurationError, match=r"holdout_fraction must be in \(0, 1\) to split the rows"):
        split_rows(10, fraction, 0)


def test_a_fraction_that_holds_out_no_row_is_refused():
    with pytest.raises(ConfigurationError, match="holdout_fraction 0.1 of 3 train rows holds out no row"):
        split_rows(3, 0.1, 0)


def _module(demo_dir, cache, **options):
    return RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(cache), batch_size=8,
                         max_length=256, train_tasks={"sid_history_to_sid": 1.0}, **options)


def test_the_datamodule_trains_on_the_kept_or_held_out_rows_only(demo_dir, tmp_path):
    cache = tmp_path / "cache"  # one cache: a holdout run must not be served the whole split's tokenized set
    whole = _module(demo_dir, cache)
    whole.setup("fit")
    rows = len(whole.records("train"))
    kept_ids, held_ids = split_rows(rows, 0.25, 7)
    kept = _module(demo_dir, cache, holdout_fraction=0.25, holdout_seed=7)
    kept.setup("fit")
    held = _module(demo_dir, cache, holdout_fraction=0.25, holdout_seed=7, train_on="heldout")
    held.setup("fit")
    assert [r.row for r in kept.training_records()] == kept_ids.tolist()
    assert [r.row for r in held.training_records()] == held_ids.tolist()
    assert len(whole.datasets["train"]) == rows
    assert len(kept.datasets["train"]) == kept_ids.size == rows - round(0.25 * rows)
    assert len(held.datasets["train"]) == held_ids.size
    # the rest stays whole: validation, and the train split that counts and baselines read
    assert len(kept.datasets["valid"]) == len(whole.datasets["valid"])
    assert len(kept.records("train")) == len(held.records("train")) == rows
    # the default seed is the data module's seed
    assert _module(demo_dir, cache, holdout_fraction=0.25, seed=7).holdout_seed == 7


def test_the_training_batches_hold_the_kept_rows_targets(demo_dir, tmp_path):
    module = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(tmp_path), batch_size=8,
                           max_length=256, train_format="prompts", train_tasks={"sid_history_to_sid": 1.0},
                           holdout_fraction=0.5, holdout_seed=3)
    module.setup("fit")
    records = module.records("train")
    _, held_ids = split_rows(len(records), 0.5, 3)
    seen = sorted(torch.cat([batch["target_item_id"] for batch in module.train_dataloader()]).tolist())
    assert seen == sorted(records[i].item_id for i in range(len(records)) if i not in set(held_ids.tolist()))


@pytest.mark.parametrize("options, message", [
    ({"holdout_fraction": 1.0}, r"holdout_fraction must be in \[0, 1\)"),
    ({"holdout_fraction": -0.5}, r"holdout_fraction must be in \[0, 1\)"),
    ({"train_on": "heldout"}, "train_on: heldout needs a holdout_fraction above 0"),
    ({"holdout_fraction": 0.1, "train_on": "rest"}, "train_on must be 'kept' or 'heldout'"),
])
def test_bad_holdout_options_are_refused_at_construction(options, message):
    with pytest.raises(ConfigurationError, match=message):
        RecDataModule(**options)


def test_holdout_through_the_cli_is_recorded_in_the_checkpoint(tmp_path):
    """``python -m rec_lightning fit ... --data.init_args.holdout_fraction``: the log says what was held out and
    the checkpoint's data hyperparameters record the slice; a bad value is a clean error."""
    config = write_short_run_config(tmp_path, max_steps=2)
    done = run_cli(*short_fit_args(config, "--data.init_args.holdout_fraction", "0.2", "--data.init_args.holdout_seed",
                                   "5"), cwd=tmp_path, check=True)
    assert "holdout_fraction 0.2 (seed 5): training on the kept rows" in done.stderr
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hparams = saved["datamodule_hyper_parameters"]
    assert (hparams["holdout_fraction"], hparams["holdout_seed"], hparams["train_on"]) == (0.2, 5, "kept")
    metadata = json.loads((tmp_path / "run" / "final_checkpoint" / "rec_lightning.json").read_text())
    assert metadata["holdout"] == {"fraction": 0.2, "seed": 5, "train_on": "kept"}
    bad = run_cli(*short_fit_args(config, "--data.init_args.holdout_fraction", "1.5"), cwd=tmp_path)
    assert_clean_error(bad, "holdout_fraction must be in [0, 1)", "got 1.5")


def test_the_log_names_the_slice_when_the_tokenized_set_comes_from_the_cache(demo_dir, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="rec_lightning.data.datamodule"):
        built = _module(demo_dir, tmp_path, holdout_fraction=0.25, holdout_seed=7, train_on="heldout")
        built.setup("fit")
        mapped = _module(demo_dir, tmp_path, holdout_fraction=0.25, holdout_seed=7, train_on="heldout")
        mapped.setup("fit")
    rows = len(built.records("train"))
    held = rows - round(0.75 * rows)
    assert f"holdout_fraction 0.25 (seed 7): training on the heldout rows, {held} of {rows} train rows" in caplog.text
    assert (f"holdout_fraction 0.25 (seed 7): training on the heldout rows ({held} examples, tokenized set from the "
            "cache)") in caplog.text
    assert len(mapped.datasets["train"]) == held

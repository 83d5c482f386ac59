"""The tokenized-data cache: a second run and a second process map it, every key input invalidates it, same batches."""

import json
import os
import pickle
import shutil
import threading

import numpy as np
import pytest

from rec_lightning.data import dataset as dataset_module
from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.data.dataset_cache import cache_key


TASKS = {"sid_history_to_sid": 1.0, "title_to_sid": 1.0}  # a sequence task and an item task: quick to build


def module(demo_dir, cache_dir, **options):
    settings = dict(data_dir=str(demo_dir), category="Demo_Shop", batch_size=8, max_length=256,
                    cache_dir=str(cache_dir), train_tasks=TASKS)
    return RecDataModule(**{**settings, **options})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, demo_dir):
    folder = tmp_path_factory.mktemp("dataset-cache")
    module(demo_dir, folder).setup("fit")  # the cold run: builds train and valid
    return folder


def entries(cache_dir):
    return sorted(p.name for p in (cache_dir / "datasets").iterdir() if p.is_dir() and ".damaged-" not in p.name)


def train_entry(cache_dir):
    return next(p for p in (cache_dir / "datasets").iterdir() if (p / "meta.json").is_file()
                and json.loads((p / "meta.json").read_text())["inputs"]["split"] == "train")


def forbid_tokenizing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the tokenizer ran although the cache holds this dataset")

    monkeypatch.setattr(dataset_module, "encode_prompts", fail)
    monkeypatch.setattr(dataset_module, "encode_responses", fail)


def same_dataset(a, b):
    assert len(a) == len(b) and a.task_names == b.task_names
    for name, array in a.arrays().items():
        assert np.array_equal(array, b.arrays()[name]), name
    assert [a[i] for i in range(0, len(a), 97)] == [b[i] for i in range(0, len(b), 97)]


def test_second_run_maps_the_cache_without_tokenizing_and_equals_an_uncached_run(demo_dir, cache_dir, monkeypatch):
    assert len(entries(cache_dir)) == 2  # train and valid
    uncached = module(demo_dir, cache_dir, cache_tokenized=False)
    uncached.setup("fit")
    forbid_tokenizing(monkeypatch)
    cached = module(demo_dir, cache_dir)
    cached.setup("fit")
    assert cached.data is None or "train" not in cached.data.splits  # the train rows were not even parsed
    for split in ("train", "valid"):
        assert isinstance(cached.datasets[split].token_ids, np.memmap)
        same_dataset(cached.datasets[split], uncached.datasets[split])
    batches = [next(iter(dm.train_dataloader())) for dm in (cached, uncached)]
    assert all((batches[0][key] == batches[1][key]).all() for key in batches[1])
    # examples keep what training needs: task, row, target and history
    first = cached.datasets["train"].examples[0]
    assert first.task in cached.train_tasks and first.history_item_ids == cached.datasets["train"][0]["history_item_ids"]
    assert len(entries(cache_dir)) == 2


def test_every_key_input_changes_the_key(demo_dir, cache_dir, tmp_path):
    base = module(demo_dir, cache_dir)
    key = cache_key(base._cache_inputs("train"))
    variants = {
        "tasks": dict(train_tasks={"sid_history_to_sid": 1.0}),
        "weights": dict(train_tasks={**TASKS, "title_to_sid": 0.5}),
        "max_length": dict(max_length=200),
        "seed": dict(seed=7),
        "train_format": dict(train_format="prompts"),
        "drop_contained_windows": dict(history_loss=True, drop_contained_windows=True),
        "category_name": dict(category_name="shop items"),
        "tokenizer": dict(tokenizer_vocab_size=300),
    }
    keys = {name: cache_key(module(demo_dir, cache_dir, **options)._cache_inputs("train"))
            for name, options in variants.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys)
    # history_loss changes labels only, which are derived per batch: the same entry serves it
    assert cache_key(module(demo_dir, cache_dir, history_loss=True)._cache_inputs("train")) == key
    # the data files' bytes: one train row changed in a copy of the folder
    copy = shutil.copytree(demo_dir, tmp_path / "copy")
    train_csv = next((copy / "train").glob("*.csv"))
    lines = train_csv.read_text().splitlines(keepends=True)
    train_csv.write_text("".join(lines + lines[1:2]))  # a duplicated row: valid, but different bytes
    assert cache_key(module(copy, cache_dir)._cache_inputs("train")) != key
    # the item metadata file (titles appear in prompts)
    item_json = copy / "index" / "Demo_Shop.item.json"
    before = cache_key(module(copy, cache_dir)._cache_inputs("train"))
    item_json.write_text(item_json.read_text().replace('"', '"', 1) + "\n")
    assert cache_key(module(copy, cache_dir)._cache_inputs("train")) != before


def test_a_changed_option_builds_a_new_entry_and_history_loss_reuses_one(demo_dir, cache_dir, monkeypatch):
    changed = module(demo_dir, cache_dir, max_length=200)
    changed.setup("fit")
    assert len(entries(cache_dir)) == 4  # new train and valid entries beside the old ones (kept)
    forbid_tokenizing(monkeypatch)
    labelled = module(demo_dir, cache_dir, history_loss=True)
    labelled.setup("fit")
    item = labelled.datasets["train"][0]
    sid_ids = set(labelled.sid_token_ids)
    n_prompt = int(labelled.datasets["train"].prompt_lengths[0])
    prompt_labels = item["labels"][:n_prompt]
    assert [t for t in prompt_labels if t != -100] == [t for t in item["input_ids"][:n_prompt] if t in sid_ids]


def test_two_processes_at_once_tokenize_once(demo_dir, tmp_path, monkeypatch):
    calls = []
    original = dataset_module.encode_responses

    def counting(tokenizer, responses):  # called once per dataset built (one chunk each here)
        calls.append(threading.get_ident())
        return original(tokenizer, responses)

    monkeypatch.setattr(dataset_module, "encode_responses", counting)
    modules = [module(demo_dir, tmp_path) for _ in range(2)]
    for dm in modules:
        dm.tokenizer  # noqa: B018 (trained once, before the race)
    threads = [threading.Thread(target=dm.setup, args=("fit",)) for dm in modules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # train and valid were each built once, by whichever thread took its lock first; the other mapped it
    assert len(calls) == 2
    same_dataset(modules[0].datasets["train"], modules[1].datasets["train"])


def test_damaged_entry_is_set_aside_and_rebuilt(demo_dir, tmp_path, caplog):
    dm = module(demo_dir, tmp_path)
    dm.setup("fit")
    folder = train_entry(tmp_path)
    tokens = folder / "token_ids.npy"
    damaged = tmp_path / "damaged.npy"
    damaged.write_bytes(tokens.read_bytes()[:-40])  # a truncated copy, put in place as a new file (dm maps the old)
    damaged.replace(tokens)
    again = module(demo_dir, tmp_path)
    again.setup("fit")
    assert "ignoring the damaged tokenized-data cache" in caplog.text
    assert any(p.name.startswith(folder.name + ".damaged-") for p in folder.parent.iterdir())
    uncached = module(demo_dir, tmp_path, cache_tokenized=False)
    uncached.setup("fit")
    same_dataset(again.datasets["train"], uncached.datasets["train"])


def test_a_failed_build_leaves_no_entry(demo_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("tokenizer crashed")

    dm = module(demo_dir, tmp_path)
    dm.tokenizer  # noqa: B018
    monkeypatch.setattr(dataset_module, "encode_responses", broken)
    with pytest.raises(RuntimeError, match="tokenizer crashed"):
        dm.setup("fit")
    assert not (tmp_path / "datasets").exists() or entries(tmp_path) == []


def test_task_mix_renders_the_same_examples_in_the_same_order_as_the_eager_mix(demo_dir, tmp_path):
    import random

    from rec_lightning.data.sampling import sample_task_mix
    from rec_lightning.data.tasks import build_examples

    dm = module(demo_dir, tmp_path, train_tasks={"sid_history_to_sid": 2.0, "title_to_sid": 0.5,
                                                 "title_history_to_title": 1.0, "sid_to_title": 0.0})
    records = dm.records("train")
    by_task = {task: build_examples(task, records, dm.catalog, dm.category_name)
               for task, weight in dm.train_tasks.items() if weight > 0}
    eager = sample_task_mix(by_task, dm.train_tasks, dm.seed)
    random.Random(dm.seed).shuffle(eager)  # the former train_examples()
    mix = dm.train_examples()
    assert len(mix) == len(eager) == 2 * len(records) + round(0.5 * len(by_task["title_to_sid"])) + len(records)
    assert list(mix) == eager and mix[5:9] == eager[5:9]


def test_code_changes_make_new_entries_and_an_unusable_cache_still_trains(demo_dir, tmp_path, monkeypatch, caplog):
    from rec_lightning.data import dataset_cache

    dm = module(demo_dir, tmp_path)
    dm.setup("fit")
    monkeypatch.setattr(dataset_cache, "code_fingerprint", lambda: "a changed prompt template")
    module(demo_dir, tmp_path).setup("fit")
    assert len(entries(tmp_path)) == 4  # the renderer's source is part of the key
    monkeypatch.undo()
    blocked_root = tmp_path / "blocked"
    blocked_root.mkdir()
    (blocked_root / "datasets").write_text("a file where the cache folder should be")  # unwritable, even as root
    blocked = module(demo_dir, blocked_root)
    blocked.use_tokenizer(dm.tokenizer)
    blocked.setup("fit")
    assert "cannot be used" in caplog.text
    same_dataset(blocked.datasets["train"], dm.datasets["train"])


def test_leftover_folder_without_meta_is_set_aside_and_a_spawned_worker_maps_the_arrays(demo_dir, tmp_path):
    dm = module(demo_dir, tmp_path)
    dm.setup("fit")
    folder = train_entry(tmp_path)
    (folder / "meta.json").unlink()  # what an interrupted copy of a cache folder leaves
    again = module(demo_dir, tmp_path)
    again.setup("fit")
    assert (train_entry(tmp_path) / "meta.json").is_file()
    assert any(".damaged-" in p.name for p in (tmp_path / "datasets").iterdir())
    copy = pickle.loads(pickle.dumps(again.datasets["train"]))  # what spawn does for a DataLoader worker
    assert isinstance(copy.token_ids, np.memmap) and len(pickle.dumps(again.datasets["train"])) < 10_000
    same_dataset(copy, again.datasets["train"])


def test_two_fit_commands_on_the_same_data_tokenize_once_through_the_cli(sft_run, lora_run):
    # both fixtures run `python -m rec_lightning fit` on quickstart's data settings (LoRA changes only the model)
    outputs = [(run / "cli_output.txt").read_text() for run in (sft_run, lora_run)]
    built = [output for output in outputs if "examples cached in" in output]
    mapped = [output for output in outputs if "examples read from the cache" in output]
    # whichever ran second (or both, if an in-process quickstart fit filled the cache first) mapped the arrays
    assert len(built) <= 1 and len(mapped) >= 1 and all(o in built or o in mapped for o in outputs)

import pytest
import torch

from conftest import REAL_CATEGORY, REAL_DATA, requires_real_data
from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.data.dataset import IGNORE_INDEX


def test_train_batches_mix_tasks_and_mask_prompts(demo_datamodule):
    dm = demo_datamodule
    tasks = {e.task for e in dm.datasets["train"].examples}
    assert tasks == set(dm.train_tasks)
    n_train = len(dm.records("train"))
    # 4 sequence tasks x rows + 2 item tasks x items (every demo item has a title)
    assert len(dm.datasets["train"]) == 4 * n_train + 2 * len(dm.catalog)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    eos = dm.tokenizer.eos_token_id
    for row in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][row].bool()
        labels = batch["labels"][row][real]
        assert labels[0] == IGNORE_INDEX and labels[-1] == eos
        assert batch["attention_mask"][row][0] == 1  # right padding


def test_sid_token_ids_and_item_token_ids(demo_datamodule):
    dm = demo_datamodule
    tokens = dm.catalog.sid_tokens
    assert dm.tokenizer.convert_ids_to_tokens(dm.sid_token_ids) == tokens
    table = dm.item_token_ids()
    assert len(table) == len(dm.catalog.sids)
    sid = dm.catalog.sids[0]
    assert "".join(dm.tokenizer.convert_ids_to_tokens(table[sid])) == sid


def test_validation_uses_next_item_prompt(demo_datamodule):
    dm = demo_datamodule
    examples = dm.datasets["valid"].examples
    assert len(examples) == len(dm.records("valid"))
    assert {e.task for e in examples} == {"sid_history_to_sid"}


def test_generation_loader_left_pads_and_covers_rows_once(demo_datamodule):
    dm = demo_datamodule
    loader = dm.generation_dataloader("valid", batch_size=16)
    seen = []
    for batch in loader:
        assert "labels" not in batch
        assert bool((batch["attention_mask"][:, -1] == 1).all())  # every prompt ends at the last column
        seen += batch["index"].tolist()
        for row, index in enumerate(batch["index"].tolist()):
            assert batch["target_item_id"][row].item() == loader.dataset.examples[index].target_item_id
    assert sorted(seen) == list(range(len(dm.records("valid"))))
    subset = dm.generation_dataloader("valid", limit=50, seed=1)
    assert len(subset.dataset) == 50
    assert [e.row for e in subset.dataset.examples] == sorted(e.row for e in subset.dataset.examples)


def test_length_grouping_reduces_padding(demo_datamodule):
    dm = demo_datamodule

    def padding(loader, n=40):
        pads = total = 0
        for i, batch in enumerate(loader):
            if i == n:
                break
            pads += (batch["attention_mask"] == 0).sum().item()
            total += batch["attention_mask"].numel()
        return pads / total

    plain = padding(dm.train_dataloader())
    dm.group_by_length = True
    try:
        grouped = padding(dm.train_dataloader())
    finally:
        dm.group_by_length = False
    assert grouped < plain / 3


def test_unknown_task_rejected():
    with pytest.raises(ValueError, match=r"unknown train task\(s\) \['nope'\]"):
        RecDataModule(train_tasks={"nope": 1.0})


def test_demo_default_needs_no_arguments(tmp_path):
    dm = RecDataModule(cache_dir=str(tmp_path), demo_num_users=40, batch_size=4)
    dm.prepare_data()
    dm.setup("validate")
    assert dm.category == "Demo_Shop"
    assert (tmp_path / "demo").is_dir()
    assert len(dm.datasets["valid"]) > 0


@requires_real_data
def test_real_data_datamodule(tmp_path):
    dm = RecDataModule(data_dir=str(REAL_DATA), category=REAL_CATEGORY, cache_dir=str(tmp_path),
                       train_tasks={"sid_history_to_sid": 1.0}, batch_size=4)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 36259 and len(dm.datasets["valid"]) == 4532
    assert len(dm.sid_token_ids) == 560
    assert dm.category_name == "industrial and scientific items"
    assert (tmp_path / "tokenizers").is_dir()  # the shared data folder is read-only: cached elsewhere


def test_prompts_format_for_rl(demo_dir, tmp_path):
    dm = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(tmp_path), batch_size=4,
                       train_format="prompts", train_tasks={"sid_history_to_sid": 1.0, "title_to_sid": 0.5})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "labels" not in batch
    assert bool((batch["attention_mask"][:, -1] == 1).all())  # left padded, prompts end at the last column
    assert bool((batch["target_item_id"] >= 0).all())
    examples = dm.datasets["train"].examples
    assert len(examples) == len(dm.records("train")) + round(0.5 * len(dm.catalog))
    with pytest.raises(ValueError, match=r"\['sid_to_title'\] answer with a title"):
        RecDataModule(train_format="prompts", train_tasks={"sid_to_title": 1.0})


def test_a_folder_with_two_categories_needs_data_category(tmp_path):
    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.errors import DataValidationError

    for name in ("A_Shop", "B_Shop"):
        (tmp_path / "index").mkdir(exist_ok=True)
        (tmp_path / "index" / f"{name}.index.json").write_text("{}")
    with pytest.raises(DataValidationError, match=r"(?s)categories present: \['A_Shop', 'B_Shop'\].*set data.category"):
        RecDataModule(data_dir=str(tmp_path)).category
    assert RecDataModule(data_dir=str(tmp_path), category="B_Shop").category == "B_Shop"

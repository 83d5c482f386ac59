import pytest
import torch

from rec_lightning.data.collate import Collator, padding_fraction
from rec_lightning.data.dataset import IGNORE_INDEX, RecDataset
from rec_lightning.data.tasks import Example
from rec_lightning.data.tokenizer import add_sid_tokens, train_bpe_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    tok = train_bpe_tokenizer(["hello world, the user likes items", "### Response:\n", "Drill and Glue"] * 20, vocab_size=300)
    add_sid_tokens(tok, ["<a_1>", "<a_2>", "<b_1>", "<c_1>"])
    return tok


def example(prompt, response, target=3):
    return Example("sid_history_to_sid", prompt, response, target, None, 0)


def test_sid_tokens_are_single_ids(tokenizer):
    ids = tokenizer("<a_1><b_1><c_1>", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<a_1>", "<b_1>", "<c_1>"]
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|endoftext|>"


def test_labels_mask_the_prompt_and_keep_response_plus_eos(tokenizer):
    dataset = RecDataset([example("hello world\n### Response:\n", "<a_1><b_1><c_1>")], tokenizer, max_length=64)
    item = dataset[0]
    prompt_ids = tokenizer("hello world\n### Response:\n")["input_ids"]
    eos = tokenizer.eos_token_id
    response_ids = tokenizer.convert_tokens_to_ids(["<a_1>", "<b_1>", "<c_1>"]) + [eos]
    assert item["input_ids"] == prompt_ids + response_ids
    assert item["labels"] == [IGNORE_INDEX] * len(prompt_ids) + response_ids
    assert item["target_item_id"] == 3 and item["index"] == 0


def test_truncation_cuts_prompt_from_the_left_and_keeps_response(tokenizer):
    prompt = "the user likes items " * 20 + "### Response:\n"
    full = RecDataset([example(prompt, "<a_1><b_1><c_1>")], tokenizer, max_length=512)[0]
    short = RecDataset([example(prompt, "<a_1><b_1><c_1>")], tokenizer, max_length=10)
    item = short[0]
    assert len(item["input_ids"]) == 10
    assert item["input_ids"] == full["input_ids"][-10:]  # the tail survives: end of prompt + whole response
    assert item["labels"][-4:] == full["labels"][-4:] and item["labels"][:6] == [IGNORE_INDEX] * 6
    assert short.num_truncated == 1


def test_response_longer_than_max_length_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="raise max_length"):
        RecDataset([example("hi", "Drill and Glue and Drill and Glue")], tokenizer, max_length=4)


def test_generation_items_have_no_labels(tokenizer):
    item = RecDataset([example("hello ### Response:\n", "<a_1>")], tokenizer, with_response=False)[0]
    assert "labels" not in item
    assert item["input_ids"] == tokenizer("hello ### Response:\n")["input_ids"]


def test_collator_right_and_left_padding():
    items = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "index": 0, "target_item_id": 4},
             {"input_ids": [8], "labels": [8], "index": 1, "target_item_id": -1}]
    right = Collator(pad_token_id=0, padding_side="right")(items)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert right["target_item_id"].tolist() == [4, -1] and right["index"].tolist() == [0, 1]
    left = Collator(pad_token_id=0, padding_side="left")([{k: v for k, v in i.items() if k != "labels"} for i in items])
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert "labels" not in left
    assert padding_fraction(left["attention_mask"]) == pytest.approx(2 / 6)


def test_collator_rejects_bad_side():
    with pytest.raises(ValueError, match="padding_side"):
        Collator(0, "middle")


def test_history_loss_labels_the_prompts_sid_tokens_only(tokenizer):
    """Compact prompt "<a_1><b_1><c_1>\\n" -> "<a_1><b_1><c_1>": the history SIDs get labels, the separator not."""
    sid_ids = tokenizer.convert_tokens_to_ids(["<a_1>", "<b_1>", "<c_1>"])
    dataset = RecDataset([example("<a_1><b_1><c_1>\n", "<a_1><b_1><c_1>")], tokenizer, max_length=64,
                         prompt_label_ids=sid_ids)
    item = dataset[0]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert item["input_ids"] == sid_ids + newline + sid_ids + [tokenizer.eos_token_id]
    assert item["labels"] == sid_ids + [-100] * len(newline) + sid_ids + [tokenizer.eos_token_id]
    plain = RecDataset([example("<a_1><b_1><c_1>\n", "<a_1><b_1><c_1>")], tokenizer, max_length=64)[0]
    assert plain["labels"] == [-100] * (3 + len(newline)) + sid_ids + [tokenizer.eos_token_id]


def test_long_prompt_keeps_the_template_head_and_drops_the_oldest_history_items(tokenizer):
    from dataclasses import replace

    from rec_lightning.data.records import SequenceRecord
    from rec_lightning.data.tasks import next_item_example
    from rec_lightning.prompts import PREAMBLE

    sids = tuple(f"<a_{1 + i % 2}><b_1><c_1>" for i in range(8))
    record = SequenceRecord("test", 0, "u", tuple(range(8)), ("t",) * 8, sids, 9, "t", "<a_1><b_1><c_1>")
    long = next_item_example(record, "items")
    full = RecDataset([long], tokenizer, max_length=1024)
    per_item = 3 + len(tokenizer(", ", add_special_tokens=False)["input_ids"])  # 3 SID tokens and the separator
    limit = len(full[0]["input_ids"]) - 3 * per_item  # room for the head and 8 - 3 = 5 items, not 6
    short = RecDataset([long], tokenizer, max_length=limit)
    seen = short.examples[0]
    assert short.num_shortened == 1 and short.num_truncated == 0
    assert seen.prompt.startswith(PREAMBLE) and seen.history_sids == sids[3:]  # oldest 3 dropped, newest kept
    newest = replace(record, history_item_ids=tuple(range(3, 8)), history_titles=("t",) * 5, history_sids=sids[3:])
    assert seen.prompt == next_item_example(newest, "items").prompt
    assert short[0]["input_ids"][:len(short[0]["input_ids"]) - 4] == tokenizer(seen.prompt)["input_ids"]
    assert len(short[0]["input_ids"]) <= limit

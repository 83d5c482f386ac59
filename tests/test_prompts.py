from rec_lightning.data.records import SequenceRecord
from rec_lightning.data.tasks import TASKS, build_examples, next_item_example
from rec_lightning.prompts import PREAMBLE, category_display_name
from rec_lightning.sids.codec import ItemCatalog

import pytest

RECORD = SequenceRecord("train", 4, "A1", (0, 1), ("Glue", 'Tape 2"'), ("<a_1><b_2><c_3>", "<a_1><b_2><c_4>"),
                        2, "Drill", "<a_5><b_0><c_0>")
CATALOG = ItemCatalog({0: ["<a_1>", "<b_2>", "<c_3>"], 1: ["<a_1>", "<b_2>", "<c_4>"], 2: ["<a_5>", "<b_0>", "<c_0>"]},
                      {0: "Glue", 1: 'Tape 2"', 2: "Drill"})
HEAD = ("Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\n")
CATEGORY = "industrial and scientific items"

EXPECTED = {
    "sid_history_to_sid": (
        "Can you predict the next possible item that the user may expect?\n\n### User Input:\n"
        "The user has interacted with items <a_1><b_2><c_3>, <a_1><b_2><c_4> in chronological order. "
        "Can you predict the next possible item that the user may expect?\n\n### Response:\n",
        "<a_5><b_0><c_0>"),
    "title_history_to_sid": (
        "Based on the user's historical interaction with item titles, predict the semantic ID of the next item they "
        "may expect.\n\n### User Input:\nThe user has interacted with the following industrial and scientific items "
        'in chronological order: "Glue", "Tape 2"". Can you predict the next item the user may expect?\n\n'
        "### Response:\n",
        "<a_5><b_0><c_0>"),
    "sid_history_to_title": (
        "Can you recommend the next item for the user based on their interaction history?\n\n### User Input:\n"
        "The user has sequentially interacted with items <a_1><b_2><c_3>, <a_1><b_2><c_4>. Can you recommend the "
        "next item for the user? Tell me the title of the item.\n\n### Response:\n",
        "Drill"),
    "title_history_to_title": (
        "Given the industrial and scientific items the user has recently enjoyed, please recommend a new one that the "
        'user may buy.\n\n### User Input:\nThe user has bought the following industrial and scientific items before: '
        '"Glue", "Tape 2""\n\n### Response:\n',
        "Drill"),
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_sequence_task_exact_text(task):
    (example,) = build_examples(task, [RECORD], CATALOG, CATEGORY)
    body, response = EXPECTED[task]
    assert example.prompt == HEAD + body
    assert example.response == response
    assert (example.target_item_id, example.target_sid, example.row) == (2, "<a_5><b_0><c_0>", 4)
    assert example.history_item_ids == (0, 1)
    assert response not in example.prompt  # the original's defect 1: no answer in the prompt


def test_item_tasks_exact_text_one_example_per_item():
    examples = build_examples("title_to_sid", [], CATALOG, CATEGORY)
    assert [e.row for e in examples] == [0, 1, 2]
    assert examples[2].prompt == HEAD + ("Answer the question about item identification.\n\n### User Input:\n"
                                         "Which item has the title: Drill?\n\n### Response:\n")
    assert examples[2].response == "<a_5><b_0><c_0>"
    examples = build_examples("sid_to_title", [], CATALOG, CATEGORY)
    assert examples[0].prompt == HEAD + ("Answer the question about item identification.\n\n### User Input:\n"
                                         'What is the title of item "<a_1><b_2><c_3>"?\n\n### Response:\n')
    assert examples[0].response == "Glue"
    for example in examples:
        assert example.response not in example.prompt


def test_next_item_prompt_is_the_sft_prompt():
    assert next_item_example(RECORD, CATEGORY) == build_examples("sid_history_to_sid", [RECORD], CATALOG, CATEGORY)[0]
    assert PREAMBLE.endswith("request.\n\n")


def test_no_typos_from_the_original():
    texts = [e.prompt for task in TASKS for e in build_examples(task, [RECORD], CATALOG, CATEGORY)]
    for typo in ("recetenly", "palyed", "itemss", "items items", "gaming", "Input: \n"):
        assert not any(typo in text for text in texts), typo


def test_category_display_name():
    assert category_display_name("Industrial_and_Scientific") == "industrial and scientific items"
    assert category_display_name("Office_Products") == "office products"


def test_unknown_task():
    with pytest.raises(KeyError, match="unknown task 'nope'; known tasks"):
        build_examples("nope", [RECORD], CATALOG, CATEGORY)


def test_compact_prompts_are_the_history_tokens_then_a_newline():
    (example,) = build_examples("sid_history_to_sid_compact", [RECORD], CATALOG, CATEGORY)
    assert example.prompt == "<a_1><b_2><c_3><a_1><b_2><c_4>\n"
    assert (example.response, example.target_item_id, example.row) == ("<a_5><b_0><c_0>", 2, 4)
    examples = build_examples("title_to_sid_compact", [], CATALOG, CATEGORY)
    assert [(e.prompt, e.response) for e in examples][2] == ("Drill\n", "<a_5><b_0><c_0>")


def test_next_item_task_selects_the_compact_prompt_and_rejects_others():
    compact = next_item_example(RECORD, CATEGORY, "sid_history_to_sid_compact")
    assert compact == build_examples("sid_history_to_sid_compact", [RECORD], CATALOG, CATEGORY)[0]
    with pytest.raises(ValueError, match="next_item_task must be one of"):
        next_item_example(RECORD, CATEGORY, "sid_history_to_title")

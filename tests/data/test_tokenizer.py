"""Saved tokenizers reload the Hugging Face way (``AutoTokenizer.from_pretrained``) to the identical pipeline.

The defect these tests pin: a generic byte-level BPE saved next to a ``model_type: qwen2`` config came
back through ``AutoTokenizer`` as a ``Qwen2Tokenizer`` (Qwen's regex and NFC), so ``"?\\n\\n###"`` and
every real prompt tokenized differently from training and ``evaluate`` scored another model.
"""

from __future__ import annotations

import json

import pytest
from conftest import REAL_CATEGORY, REAL_DATA, requires_real_data
from transformers import AutoTokenizer, Qwen2Config

from rec_lightning.data.tokenizer import (
    CHECK_FILE,
    EOS_TOKEN,
    PAD_TOKEN,
    TokenizerMismatchError,
    add_sid_tokens,
    load_tokenizer,
    save_tokenizer,
    tokenizer_probes,
    train_bpe_tokenizer,
)

LINES = ["Can you predict the next possible item?\n\n### Response:\n", "Caf\u00e9 drill 12mm, 3/8\" bits  x2\n"] * 40
SIDS = [f"<{level}_{code}>" for level in "abc" for code in range(3)]


def write_model_config(folder, model_type: str = "qwen2") -> None:
    """What a final checkpoint holds beside the tokenizer: the model's config.json (it steers AutoTokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = Qwen2Config(vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1).to_dict()
    config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))


def generic_bpe():
    """The tokenizer the library used to train: GPT-2 byte-level pipeline in a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(LINES, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def ids(tokenizer, texts):
    return [tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts]


@pytest.mark.parametrize("model_type", ["qwen2", "llama", None])
def test_trained_tokenizer_reloads_identically_through_auto_tokenizer(tmp_path, model_type):
    tokenizer = train_bpe_tokenizer(LINES, vocab_size=300)
    add_sid_tokens(tokenizer, SIDS)
    folder = tmp_path / "checkpoint"
    if model_type:
        write_model_config(folder, model_type)
    save_tokenizer(tokenizer, folder, SIDS)
    reloaded = AutoTokenizer.from_pretrained(str(folder))  # plain Hugging Face, as a notebook would
    texts = tokenizer_probes(SIDS) + LINES[:2] + ["?\n\n###"]
    assert ids(reloaded, texts) == ids(tokenizer, texts)
    assert len(reloaded) == len(tokenizer) and reloaded.convert_tokens_to_ids(SIDS) == tokenizer.convert_tokens_to_ids(SIDS)
    assert (reloaded.eos_token, reloaded.pad_token) == (EOS_TOKEN, PAD_TOKEN)
    assert reloaded.decode(ids(tokenizer, ["Caf\u00e9 <a_1><b_2>"])[0]) == "Caf\u00e9 <a_1><b_2>"


def test_newlines_before_the_response_marker_are_what_training_saw(tmp_path):
    tokenizer = train_bpe_tokenizer(LINES, vocab_size=300)
    folder = tmp_path / "checkpoint"
    write_model_config(folder)
    save_tokenizer(tokenizer, folder)
    reloaded = AutoTokenizer.from_pretrained(str(folder))
    pieces = reloaded.convert_ids_to_tokens(reloaded("?\n\n###")["input_ids"])
    assert pieces == tokenizer.convert_ids_to_tokens(tokenizer("?\n\n###")["input_ids"])


def test_the_old_generic_pipeline_is_caught_at_save_time(tmp_path):
    """Saving the pre-fix tokenizer next to a qwen2 config fails loudly instead of drifting silently."""
    folder = tmp_path / "checkpoint"
    write_model_config(folder)
    with pytest.raises(TokenizerMismatchError, match="Qwen2Tokenizer.*tokenizes"):
        save_tokenizer(generic_bpe(), folder)


def test_a_drifted_reload_is_refused_with_the_probe_that_differs(tmp_path):
    tokenizer = train_bpe_tokenizer(LINES, vocab_size=300)
    folder = tmp_path / "checkpoint"
    save_tokenizer(tokenizer, folder)
    record = json.loads((folder / CHECK_FILE).read_text())
    record["ids"][0] = record["ids"][0][::-1]
    (folder / CHECK_FILE).write_text(json.dumps(record))
    with pytest.raises(TokenizerMismatchError, match="when it was saved"):
        load_tokenizer(folder)


def test_hub_style_qwen_tokenizer_with_sid_tokens_round_trips(tmp_path):
    """A Qwen2.5-style hub folder (Qwen2Tokenizer + config.json), SID tokens added, saved, reloaded."""
    hub = tmp_path / "hub"
    write_model_config(hub)
    train_bpe_tokenizer(LINES, vocab_size=300).save_pretrained(str(hub))
    tokenizer = load_tokenizer(hub)
    add_sid_tokens(tokenizer, SIDS)
    folder = tmp_path / "final_checkpoint"
    write_model_config(folder)
    save_tokenizer(tokenizer, folder, SIDS)
    reloaded = load_tokenizer(folder)
    texts = tokenizer_probes(SIDS)
    assert ids(reloaded, texts) == ids(tokenizer, texts)


@pytest.mark.slow  # the default tier's 8-minute limit (a clean clone took 9 min 10 s on this machine)
@requires_real_data
def test_every_prompt_template_round_trips_on_real_data(tmp_path):
    """Every task's prompts and responses on the real Industrial data: identical ids after save + reload."""
    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.data.dataset import encode_prompts, encode_responses
    from rec_lightning.data.tasks import TASKS, build_examples

    datamodule = RecDataModule(data_dir=str(REAL_DATA), category=REAL_CATEGORY, cache_dir=str(tmp_path / "cache"))
    tokenizer = datamodule.tokenizer
    folder = tmp_path / "final_checkpoint"
    write_model_config(folder)
    save_tokenizer(tokenizer, folder, datamodule.catalog.sid_tokens)
    reloaded = AutoTokenizer.from_pretrained(str(folder))
    records = datamodule.records("valid")
    for task in TASKS:
        examples = build_examples(task, records, datamodule.catalog, datamodule.category_name)
        prompts = [e.prompt for e in examples]
        responses = [e.response for e in examples]
        assert encode_prompts(reloaded, prompts) == encode_prompts(tokenizer, prompts), task
        assert encode_responses(reloaded, responses) == encode_responses(tokenizer, responses), task

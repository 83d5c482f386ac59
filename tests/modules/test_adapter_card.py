"""PEFT interop: the adapter's README records base and embedding rows, and its plain-PEFT recipe works as written.

The named-base round trip: a "hub" base saved to a folder, a LoRA adapter trained on it (perturbed weights),
``export --portable``, then exactly the card's code (``from_pretrained(base)``, ``resize_token_embeddings(rows)``,
``PeftModel.from_pretrained``) gives the trained model's logits; without the resize PEFT fails with the bare
``IndexError`` the README documents.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from tiny_lm import SID_TOKENS, make_tokenizer, sample_batch, tiny_options
from transformers import AutoModelForCausalLM

from rec_lightning.commands.export import main as export_main
from rec_lightning.modules.adapter_card import adapter_card
from rec_lightning.modules.backbone import BackboneOptions, add_sid_tokens, build_backbone
from rec_lightning.modules.export import METADATA_FILE, build_metadata, save_final_checkpoint
from rec_lightning.modules.lora import LoraOptions, apply_finetuning


def logits_of(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def adapter_on_named_base(tmp_path, tied: bool):
    """(final_checkpoint folder, base folder, batch, trained logits) for a LoRA adapter on a folder base."""
    tokenizer = make_tokenizer()  # 300 tokens; + 12 SID tokens = 312, padded to 320 rows
    build_backbone(tiny_options(tied=tied), tokenizer).save_pretrained(str(tmp_path / "hub_base"))
    options = BackboneOptions(model_name_or_path=str(tmp_path / "hub_base"))
    model = build_backbone(options, tokenizer)
    report = add_sid_tokens(model, tokenizer, SID_TOKENS)
    torch.manual_seed(0)
    model = apply_finetuning(model, "lora", LoraOptions(r=4, alpha=8, dropout=0.0), report.sid_token_ids)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    batch = sample_batch(tokenizer, report.sid_token_ids, seed=3)
    expected = logits_of(model, batch)
    metadata = build_metadata(options, {"mode": "lora"}, tokenizer, SID_TOKENS, report.sid_token_ids,
                              report.new_num_rows, None)
    folder = save_final_checkpoint(model, tokenizer, tmp_path / "final_checkpoint", metadata)
    return folder, tmp_path / "hub_base", batch, expected


def card_code(card: str) -> str:
    """The plain-PEFT python block of a card."""
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    return next(block for block in blocks if "PeftModel" in block)


def test_card_records_base_rows_and_the_three_line_recipe(tmp_path):
    folder, base_dir, _, _ = adapter_on_named_base(tmp_path, tied=True)
    card = (folder / "README.md").read_text()
    assert f"base_model: {base_dir}" in card                      # the model-card front matter (hub convention)
    assert "**Embedding rows expected:** 320 (tokenizer of 312 tokens, incl. 12 SID tokens" in card
    assert "base.resize_token_embeddings(320)" in card and "IndexError" in card
    assert "--portable" in card                                   # the final checkpoint points to the exact export
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["embedding_rows"] == 320 and metadata["backbone"]["model_name_or_path"] == str(base_dir)


def test_card_of_a_base_built_from_a_config_points_to_base_folder():
    metadata = {"backbone": {"model_name_or_path": None}, "embedding_rows": 64, "tokenizer_size": 40,
                "sid_tokens": ["<a_0>"], "embedding_layers_saved": True, "finetune": {"mode": "lora"}}
    card = adapter_card(metadata, "out")
    assert "base_model: null" in card and 'from_pretrained("out/base")' in card
    assert "resize_token_embeddings(64)" in card and "exact whatever" in card


@pytest.mark.parametrize("tied", [True, False])
def test_portable_export_loads_with_plain_peft_on_the_original_base(tmp_path, tied, capsys):
    from peft import PeftModel

    folder, base_dir, batch, expected = adapter_on_named_base(tmp_path, tied)
    export_main(["--checkpoint", str(folder), "--output", str(tmp_path / "portable"), "--portable"])
    assert "PEFT adapter with embedding matrices" in capsys.readouterr().out
    # plain PEFT onto the original (unresized: 300 rows) base fails inside PEFT, as the README warns
    with pytest.raises(IndexError):
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(tmp_path / "portable"))
    # the card's own code, run as written: same logits as the trained model
    card = (tmp_path / "portable" / "README.md").read_text()
    assert "yes (portable)" in card
    namespace: dict = {}
    exec(card_code(card), namespace)  # noqa: S102 - the documented recipe itself is under test
    assert namespace["base"].get_input_embeddings().weight.shape[0] == 320
    assert torch.allclose(logits_of(namespace["model"], batch), expected, atol=1e-5)
    assert namespace["tokenizer"].convert_tokens_to_ids(SID_TOKENS) == list(range(300, 312))


def test_merge_and_portable_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit, match="exclude each other"):
        export_main(["--checkpoint", str(tmp_path), "--output", str(tmp_path / "o"), "--merge", "--portable"])

"""Exports: the ``export`` command (merged HF folder, portable adapter) and the mismatch errors."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_lm import SID_TOKENS, make_tokenizer, sample_batch, tiny_options
from transformers import AutoModelForCausalLM, AutoTokenizer

from rec_lightning.commands.export import main as export_main
from rec_lightning.modules.backbone import add_sid_tokens, build_backbone
from rec_lightning.modules.export import (
    METADATA_FILE,
    CheckpointMismatchError,
    build_metadata,
    load_for_inference,
    save_final_checkpoint,
)
from rec_lightning.modules.lora import LoraOptions, apply_finetuning
from rec_lightning.sids.codec import ItemCatalog


def trained_checkpoint(folder, mode: str = "lora", tied: bool = False, with_catalog: bool = False):
    """A tiny model whose trainable weights were perturbed, saved as a final checkpoint (``with_catalog``: carrying
    its item catalog, as fit writes it)."""
    tokenizer = make_tokenizer()
    options = tiny_options(tied=tied)
    model = build_backbone(options, tokenizer)
    report = add_sid_tokens(model, tokenizer, SID_TOKENS)
    torch.manual_seed(0)
    model = apply_finetuning(model, mode, LoraOptions(r=4, alpha=8, dropout=0.0), report.sid_token_ids)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    catalog = ItemCatalog({0: SID_TOKENS[0:12:4], 1: SID_TOKENS[1:12:4]}, {0: "Brass Widget", 1: "Steel Gizmo"})
    metadata = build_metadata(options, {"mode": mode}, tokenizer, SID_TOKENS, report.sid_token_ids,
                              report.new_num_rows, catalog.checksum())
    save_final_checkpoint(model, tokenizer, folder, metadata, catalog=catalog if with_catalog else None)
    batch = sample_batch(tokenizer, report.sid_token_ids, seed=5)
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return batch, expected, catalog


def run_logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_export_merge_writes_a_plain_hf_folder(tmp_path, capsys):
    batch, expected, _ = trained_checkpoint(tmp_path / "final_checkpoint")
    export_main(["--checkpoint", str(tmp_path / "final_checkpoint"), "--output", str(tmp_path / "hf"), "--merge"])
    assert "Hugging Face model" in capsys.readouterr().out
    assert not (tmp_path / "hf" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert tokenizer.convert_tokens_to_ids(SID_TOKENS) == list(range(300, 312))
    assert model.config.use_cache is True
    assert torch.allclose(run_logits(model, batch), expected, atol=1e-5)


def test_export_without_merge_is_a_portable_adapter(tmp_path):
    from peft import PeftModel

    batch, expected, _ = trained_checkpoint(tmp_path / "final_checkpoint")
    export_main(["--checkpoint", str(tmp_path / "final_checkpoint"), "--output", str(tmp_path / "portable")])
    # plain PEFT onto a base whose new rows are garbage: rows 300-311 (SID) come back from the trainable-token
    # deltas, rows 312-319 (padding to 320) from the embedding matrices stored in the portable adapter
    base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "portable" / "base"))
    with torch.no_grad():
        base.get_input_embeddings().weight[300:] = 7.0
        base.get_output_embeddings().weight[300:] = -7.0
    model = PeftModel.from_pretrained(base, str(tmp_path / "portable"))
    assert torch.allclose(run_logits(model, batch), expected, atol=1e-6)


def test_full_checkpoint_exports_as_plain_folder(tmp_path):
    batch, expected, _ = trained_checkpoint(tmp_path / "final_checkpoint", mode="full")
    assert json.loads((tmp_path / "final_checkpoint" / METADATA_FILE).read_text())["format"] == "full"
    export_main(["--checkpoint", str(tmp_path / "final_checkpoint"), "--output", str(tmp_path / "hf")])
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    assert torch.equal(run_logits(model, batch), expected)


def test_wrong_sid_index_or_tokenizer_fails_with_a_fix(tmp_path):
    _, _, catalog = trained_checkpoint(tmp_path / "final_checkpoint", tied=True)
    load_for_inference(tmp_path / "final_checkpoint", catalog=catalog)  # the right index loads
    other = ItemCatalog({0: SID_TOKENS[0:12:4], 1: SID_TOKENS[2:12:4]})
    with pytest.raises(CheckpointMismatchError, match="SID index with checksum.*Fix: use the data folder"):
        load_for_inference(tmp_path / "final_checkpoint", catalog=other)
    make_tokenizer().save_pretrained(str(tmp_path / "final_checkpoint"))  # the base tokenizer, no SID tokens
    with pytest.raises(CheckpointMismatchError, match="tokenizer has 300 tokens, expected 312.*Fix"):
        load_for_inference(tmp_path / "final_checkpoint")


def test_export_of_a_non_checkpoint_says_what_to_pass(tmp_path):
    with pytest.raises(SystemExit, match="not a checkpoint folder.*final_checkpoint"):
        (tmp_path / "not_a_checkpoint").mkdir()
        export_main(["--checkpoint", str(tmp_path / "not_a_checkpoint"), "--output", str(tmp_path / "out")])


@pytest.mark.parametrize("tied", [True, False])
def test_adapter_on_a_named_base_holds_no_base_and_reloads_exactly(tmp_path, tied):
    """The production path: base from a folder (or hub id), adapter only, base re-resized on load."""
    from rec_lightning.modules.backbone import BackboneOptions

    tokenizer = make_tokenizer()
    build_backbone(tiny_options(tied=tied), tokenizer).save_pretrained(str(tmp_path / "pretrained"))
    options = BackboneOptions(model_name_or_path=str(tmp_path / "pretrained"))
    model = build_backbone(options, tokenizer)
    report = add_sid_tokens(model, tokenizer, SID_TOKENS)
    model = apply_finetuning(model, "lora", LoraOptions(r=4, alpha=8, dropout=0.0), report.sid_token_ids)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    batch = sample_batch(tokenizer, report.sid_token_ids, seed=3)
    expected = run_logits(model, batch)
    metadata = build_metadata(options, {"mode": "lora"}, tokenizer, SID_TOKENS, report.sid_token_ids,
                              report.new_num_rows, None)
    folder = save_final_checkpoint(model, tokenizer, tmp_path / "final_checkpoint", metadata)
    assert not (folder / "base").exists() and json.loads((folder / METADATA_FILE).read_text())["base_dir"] is None
    adapter_bytes = (folder / "adapter_model.safetensors").stat().st_size
    # LoRA (4,096 floats) + 12 SID rows x 32 per side: ~20 KB; one 320 x 32 float32 matrix alone is 41 KB
    assert adapter_bytes < 35_000, adapter_bytes
    reloaded, _, _ = load_for_inference(folder)
    assert torch.equal(run_logits(reloaded, batch), expected)


def _same_items(a, b) -> bool:
    return a.checksum() == b.checksum() and [(i.item_id, i.sid, i.title) for i in a] == \
        [(i.item_id, i.sid, i.title) for i in b]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_final_checkpoint_and_every_export_carry_the_catalog(tmp_path, mode):
    """item_catalog.json (SID index, titles, checksum) in the final checkpoint and in merged / portable / full exports."""
    from rec_lightning.modules.export import CATALOG_FILE, read_item_catalog
    from rec_lightning.modules.inference import load_checkpoint

    batch, expected, catalog = trained_checkpoint(tmp_path / "final_checkpoint", mode=mode, with_catalog=True)
    carried = read_item_catalog(tmp_path / "final_checkpoint")
    assert _same_items(carried, catalog) and carried.source.endswith(CATALOG_FILE)
    outputs = {"merged": ["--merge"], "portable": []}
    for name, flags in outputs.items():
        export_main(["--checkpoint", str(tmp_path / "final_checkpoint"), "--output", str(tmp_path / name), *flags])
        assert _same_items(read_item_catalog(tmp_path / name), catalog), name
        loaded = load_checkpoint(tmp_path / name)  # no data folder: the carried catalog
        assert _same_items(loaded.catalog, catalog) and torch.allclose(run_logits(loaded.model, batch), expected,
                                                                      atol=1e-5)
    assert not list(tmp_path.glob("**/.item_catalog.json.*"))  # the atomic writer left no temporary file


def test_damaged_or_missing_catalog_is_a_clear_error(tmp_path):
    from rec_lightning.errors import CorruptFileError
    from rec_lightning.modules.export import CATALOG_FILE, MissingCatalogError, read_item_catalog
    from rec_lightning.modules.inference import load_checkpoint

    folder = tmp_path / "final_checkpoint"
    trained_checkpoint(folder, with_catalog=True)
    path = folder / CATALOG_FILE
    good = json.loads(path.read_text())
    edited_sid = {**good, "index": {**good["index"], "1": ["<a_1>", "<b_5>", "<c_8>"]}}
    other = {**good, "index": {"0": good["index"]["0"]}, "titles": {"0": "x"}}
    other["checksum"] = ItemCatalog({0: good["index"]["0"]}).checksum()
    variants = {
        '{"format": ': r"not valid JSON \(line 1",
        "[]": "expected a JSON object",
        json.dumps({**good, "index": [1, 2]}): "expected the fields 'index'",
        json.dumps({**good, "index": {"0": ["<b_1>"]}}): "invalid SID index",
        json.dumps(edited_sid): "do not match its checksum",
        json.dumps(other): "a catalog of another checkpoint",
    }
    for text, problem in variants.items():
        path.write_text(text)
        with pytest.raises(CorruptFileError, match=rf"{CATALOG_FILE}: .*{problem}.*Fix: restore the file.*--data_dir"):
            read_item_catalog(folder)
    path.unlink()  # a checkpoint written before catalogs travelled with the model
    assert read_item_catalog(folder) is None
    with pytest.raises(MissingCatalogError, match=r"carries no item catalog \(item_catalog.json\).*Fix: pass the data "
                                                  r"folder the model was trained on: --data_dir DIR"):
        load_checkpoint(folder)

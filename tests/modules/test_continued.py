"""SFT again from a rec_lightning checkpoint folder: its trained rows are kept (same SID index, same tokenizer),
reset with a warning for another SID index, refused for another tokenizer or a LoRA adapter folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from fitting import fit_quickstart_model

from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.backbone import BackboneOptions
from rec_lightning.modules.continued import continues_checkpoint
from rec_lightning.modules.export import load_for_inference
from rec_lightning.modules.sft import SFTModule


@pytest.fixture(scope="module")
def trained(demo_dir, tmp_path_factory):
    """A 6-step quickstart model on the demo data: (its final_checkpoint folder, its data module)."""
    return fit_quickstart_model(tmp_path_factory.mktemp("continued"), demo_dir, max_steps=6)


def _continued_module(folder: Path, datamodule, checksum: str | None = None) -> SFTModule:
    module = SFTModule(backbone={"model_name_or_path": str(folder)}, finetune="full")
    module.build(datamodule.tokenizer, datamodule.catalog.sid_tokens,
                 checksum if checksum is not None else datamodule.catalog.checksum())
    return module


def test_continuing_keeps_every_weight_and_the_logits(trained, demo_dir, tmp_path, caplog):
    folder, _ = trained
    datamodule = RecDataModule(data_dir=str(demo_dir), tokenizer=str(folder), cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="rec_lightning.modules.continued"):
        module = _continued_module(folder, datamodule)
    assert "trained rows are kept" in caplog.text
    saved, _, _ = load_for_inference(folder)
    ids = torch.tensor(module.sid_token_ids)
    # the SID rows are the trained ones (not the token mean), and so is every other weight
    assert torch.equal(module.model.get_input_embeddings().weight[ids], saved.get_input_embeddings().weight[ids])
    ours, theirs = module.model.state_dict(), saved.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    batch = torch.tensor([[module.sid_token_ids[0], 5, module.sid_token_ids[-1], 7]])
    module.model.eval()
    with torch.no_grad():
        assert torch.equal(module.model(batch).logits, saved(batch).logits)


def test_another_sid_index_resets_the_sid_rows_with_a_warning(trained, demo_dir, tmp_path, caplog):
    folder, _ = trained
    datamodule = RecDataModule(data_dir=str(demo_dir), tokenizer=str(folder), cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="rec_lightning.modules.continued"):
        module = _continued_module(folder, datamodule, checksum="another-index")
    assert "trained on another SID index" in caplog.text and "reset to the token mean" in caplog.text
    weight = module.model.get_input_embeddings().weight
    sid = set(module.sid_token_ids)
    ordinary = [i for i in range(len(datamodule.tokenizer)) if i not in sid]
    expected = weight[ordinary].float().mean(dim=0)
    assert torch.allclose(weight[module.sid_token_ids[0]], expected, atol=1e-6)
    assert torch.allclose(weight[module.sid_token_ids[-1]], expected, atol=1e-6)


def test_lora_on_a_checkpoint_is_refused_naming_the_fix(trained, demo_dir, tmp_path):
    folder, _ = trained
    datamodule = RecDataModule(data_dir=str(demo_dir), tokenizer=str(folder), cache_dir=str(tmp_path / "cache"))
    module = SFTModule(backbone={"model_name_or_path": str(folder)}, finetune="lora")
    with pytest.raises(ConfigurationError, match=r"finetune 'lora' on the rec_lightning checkpoint .* Fix: set "
                                                 r"model.init_args.finetune: full"):
        module.build(datamodule.tokenizer, datamodule.catalog.sid_tokens, datamodule.catalog.checksum())


def test_another_tokenizer_is_refused_naming_the_fix(trained, demo_dir, tmp_path):
    folder, _ = trained
    other = RecDataModule(data_dir=str(demo_dir), tokenizer_vocab_size=300, cache_dir=str(tmp_path / "cache"))
    options = BackboneOptions(model_name_or_path=str(folder))
    with pytest.raises(ConfigurationError, match=r"its own tokenizer .* Fix: set data.tokenizer: "):
        continues_checkpoint(options, other.tokenizer, other.catalog.sid_tokens, other.catalog.checksum())


def test_hub_ids_plain_folders_and_adapters(trained, tmp_path):
    folder, datamodule = trained
    tokenizer, sid_tokens = datamodule.tokenizer, datamodule.catalog.sid_tokens
    assert not continues_checkpoint(BackboneOptions(config={}), tokenizer, sid_tokens, None)  # from scratch
    assert not continues_checkpoint(BackboneOptions(model_name_or_path="Qwen/Qwen2.5-0.5B"), tokenizer, sid_tokens, None)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert not continues_checkpoint(BackboneOptions(model_name_or_path=str(plain)), tokenizer, sid_tokens, None)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "rec_lightning.json").write_text('{"format": "adapter"}')
    with pytest.raises(ConfigurationError, match=r"holds a LoRA adapter .* --merge"):
        continues_checkpoint(BackboneOptions(model_name_or_path=str(adapter)), tokenizer, sid_tokens, None)


def test_cli_fit_continues_from_a_final_checkpoint(sft_run, tmp_path, cache):
    from cli_helpers import describe, run_cli, short_fit_args, write_short_run_config

    folder = sft_run / "run" / "final_checkpoint"
    result = run_cli(*short_fit_args(write_short_run_config(tmp_path, max_steps=2),
                                     "--model.init_args.backbone.model_name_or_path", str(folder),
                                     "--data.init_args.tokenizer", str(folder)), cwd=tmp_path, cache=cache)
    assert result.returncode == 0, describe(result)
    assert "trained rows are kept" in result.stdout + result.stderr
    assert (tmp_path / "run" / "final_checkpoint" / "rec_lightning.json").is_file()


def test_cli_refuses_lora_on_a_final_checkpoint_cleanly(sft_run, tmp_path, cache):
    from cli_helpers import assert_clean_error, run_cli, short_fit_args, write_short_run_config

    folder = sft_run / "run" / "final_checkpoint"
    result = run_cli(*short_fit_args(write_short_run_config(tmp_path, max_steps=2),
                                     "--model.init_args.backbone.model_name_or_path", str(folder),
                                     "--data.init_args.tokenizer", str(folder), "--model.init_args.finetune", "lora"),
                     cwd=tmp_path, cache=cache)
    assert_clean_error(result, "finetune 'lora' on the rec_lightning checkpoint", "Fix: set model.init_args.finetune: full")
    assert not (tmp_path / "run" / "final_checkpoint").exists()

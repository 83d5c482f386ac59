"""Fine-tuning modes: exactly the right parameters train, only SID rows move, adapters reload exactly."""

from __future__ import annotations

import pytest
import torch
from tiny_lm import SID_TOKENS, make_tokenizer, sample_batch, tiny_options

from rec_lightning.modules.backbone import add_sid_tokens, build_backbone
from rec_lightning.modules.export import (
    CheckpointMismatchError,
    attach_adapter,
    build_metadata,
    export_merged,
    load_for_inference,
    save_final_checkpoint,
)
from rec_lightning.modules.lora import (
    ALL_PROJECTIONS,
    LoraOptions,
    apply_finetuning,
    count_parameters,
    resolve_target_modules,
    unwrap_base,
)


def build(tied: bool, mode: str, lora: LoraOptions | None = None):
    tokenizer = make_tokenizer()
    options = tiny_options(tied=tied)
    model = build_backbone(options, tokenizer)
    report = add_sid_tokens(model, tokenizer, SID_TOKENS)
    torch.manual_seed(0)
    model = apply_finetuning(model, mode, lora or LoraOptions(r=4, alpha=8, dropout=0.0), report.sid_token_ids)
    return model, tokenizer, options, report


def effective_matrices(model) -> dict[str, torch.Tensor]:
    """The embedding and head matrices the forward pass actually uses (SID deltas applied)."""
    base = unwrap_base(model)
    matrices = {}
    for side, module in (("input", base.get_input_embeddings()), ("output", base.get_output_embeddings())):
        adapter = getattr(module, "token_adapter", module)
        if hasattr(adapter, "get_merged_weights"):
            matrices[side] = adapter.get_merged_weights(adapter.active_adapters).detach().clone()
        else:
            matrices[side] = module.weight.detach().clone()
    return matrices


def train_steps(model, tokenizer, sid_ids, steps: int = 3, weight_decay: float = 0.1) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                                  weight_decay=weight_decay)
    model.train()
    for step in range(steps):
        batch = sample_batch(tokenizer, sid_ids, seed=step)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def logits(model, tokenizer, sid_ids) -> torch.Tensor:
    batch = sample_batch(tokenizer, sid_ids, seed=99)
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("tied", [True, False])
def test_lora_trains_exactly_lora_weights_and_sid_rows(tied):
    model, tokenizer, _, report = build(tied, "lora")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lora_names = {n for n in trainable if ".lora_A." in n or ".lora_B." in n}
    # 2 layers x 7 projections x (A, B)
    assert len(lora_names) == 2 * 7 * 2
    assert {n.split(".")[-4] for n in lora_names} == set(ALL_PROJECTIONS)
    token_names = trainable - lora_names
    expected = {"base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta.default"}
    if not tied:
        expected.add("base_model.model.lm_head.token_adapter.trainable_tokens_delta.default")
    assert token_names == expected
    # LoRA r=4 on hidden 32 (kv width 16, mlp 64), per layer: q,o: 4*(32+32); k,v: 4*(32+16); gate,up,down: 4*(32+64)
    # = 2*256 + 2*192 + 3*384 = 2048; two layers 4096; SID rows 12 x 32 = 384 per side.
    trainable_count, _ = count_parameters(model)
    assert trainable_count == 4096 + 384 * (1 if tied else 2)

    before = effective_matrices(model)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if n in lora_names}
    train_steps(model, tokenizer, report.sid_token_ids)
    after = effective_matrices(model)
    sid = torch.tensor(report.sid_token_ids)
    others = torch.tensor([i for i in range(after["input"].shape[0]) if i not in set(report.sid_token_ids)])
    for side in ("input", "output"):
        assert torch.equal(after[side][others], before[side][others]), side
        assert (after[side][sid] != before[side][sid]).any(dim=1).all(), side
    for name, param in model.named_parameters():
        if name in lora_names and ".lora_B." in name:
            assert not torch.equal(param, lora_before[name]), name


@pytest.mark.parametrize("tied,mode", [(True, "lora"), (False, "lora"), (True, "freeze_lm"), (False, "freeze_lm")])
def test_adapter_reloads_exactly_and_merges(tied, mode, tmp_path):
    model, tokenizer, options, report = build(tied, mode)
    train_steps(model, tokenizer, report.sid_token_ids)
    expected = logits(model, tokenizer, report.sid_token_ids)
    metadata = build_metadata(options, {"mode": mode}, tokenizer, SID_TOKENS, report.sid_token_ids,
                              report.new_num_rows, sid_index_checksum=None)
    folder = save_final_checkpoint(model, tokenizer, tmp_path / "final_checkpoint", metadata)
    # small: no full embedding copy in the adapter
    adapter_keys = __import__("safetensors.torch").torch.load_file(str(folder / "adapter_model.safetensors"))
    assert not any("base_layer" in key for key in adapter_keys)

    # reload onto a freshly built, resized base (from-scratch: its weights are in base/)
    reloaded, reloaded_tokenizer, meta = load_for_inference(folder)
    assert meta["format"] == "adapter" and meta["base_dir"] == "base"
    assert torch.equal(logits(reloaded, reloaded_tokenizer, report.sid_token_ids), expected)

    # the same base rebuilt by hand from the options + deterministic resize, then PEFT on top
    base = build_backbone(options, make_tokenizer())
    add_sid_tokens(base, make_tokenizer(), SID_TOKENS)
    by_hand = attach_adapter(base, folder)
    assert torch.equal(logits(by_hand, tokenizer, report.sid_token_ids), expected)

    merged_dir = export_merged(folder, tmp_path / "merged")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(str(merged_dir))
    assert len(AutoTokenizer.from_pretrained(str(merged_dir))) == len(tokenizer)
    assert torch.allclose(logits(plain, tokenizer, report.sid_token_ids), expected, atol=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_freeze_lm_moves_only_sid_rows_even_with_weight_decay(tied):
    model, tokenizer, _, report = build(tied, "freeze_lm")
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all("trainable_tokens_delta" in name for name in trainable)
    assert len(trainable) == (1 if tied else 2)
    assert count_parameters(model)[0] == 12 * 32 * len(trainable)
    state_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = effective_matrices(model)
    train_steps(model, tokenizer, report.sid_token_ids, weight_decay=0.5)
    after = effective_matrices(model)
    sid = torch.tensor(report.sid_token_ids)
    others = torch.tensor([i for i in range(after["input"].shape[0]) if i not in set(report.sid_token_ids)])
    for side in ("input", "output"):
        assert torch.equal(after[side][others], before[side][others]), side
        assert (after[side][sid] != before[side][sid]).any(dim=1).all(), side
    for name, param in model.named_parameters():
        if name in state_before:
            assert torch.equal(param, state_before[name]), name


@pytest.mark.parametrize("tied", [True, False])
def test_full_trains_every_parameter(tied):
    model, tokenizer, _, report = build(tied, "full")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(p.requires_grad for p in model.parameters())
    train_steps(model, tokenizer, report.sid_token_ids, steps=2)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def test_target_module_shorthands_and_errors():
    model = build_backbone(tiny_options(), make_tokenizer())
    assert resolve_target_modules(model, "all") == list(ALL_PROJECTIONS)
    assert resolve_target_modules(model, "qkv") == ["q_proj", "k_proj", "v_proj"]
    assert resolve_target_modules(model, ["q_proj", "down_proj"]) == ["q_proj", "down_proj"]
    with pytest.raises(ValueError, match="match no linear layer"):
        resolve_target_modules(model, ["query"])
    with pytest.raises(ValueError, match="'all', 'qkv' or a list"):
        resolve_target_modules(model, "attention")


def test_unknown_mode_and_missing_sid_ids():
    model = build_backbone(tiny_options(), make_tokenizer())
    with pytest.raises(ValueError, match="must be one of"):
        apply_finetuning(model, "prefix", None, [1])
    with pytest.raises(ValueError, match="no SID token ids"):
        apply_finetuning(model, "lora", None, [])


def test_adapter_on_unresized_base_says_what_to_do(tmp_path):
    model, tokenizer, options, report = build(True, "lora")
    metadata = build_metadata(options, {"mode": "lora"}, tokenizer, SID_TOKENS, report.sid_token_ids,
                              report.new_num_rows, sid_index_checksum=None)
    folder = save_final_checkpoint(model, tokenizer, tmp_path / "final_checkpoint", metadata)
    plain_base = build_backbone(options, make_tokenizer())  # 300 rows, no SID tokens
    with pytest.raises(CheckpointMismatchError, match="320 embedding rows.*this base has 300.*add_sid_tokens"):
        attach_adapter(plain_base, folder)

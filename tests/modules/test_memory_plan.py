"""The memory plan's numbers, checked where a person can check them by hand (issue 30, item 5)."""

from __future__ import annotations

import pytest
from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.memory_plan import (GB, PUBLISHED_PARAMETERS, QWEN25, RECIPES, Workload, memory_plan,
                                               recommended_strategy, strategy_table)


@pytest.mark.parametrize("key", sorted(QWEN25))
def test_parameter_counts_match_the_model_cards_and_transformers(key):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, Qwen2Config

    shape = QWEN25[key]
    assert abs(shape.parameters - PUBLISHED_PARAMETERS[key]) < 0.01e9, shape.parameters
    config = Qwen2Config(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab, tie_word_embeddings=shape.tied)
    with torch.device("meta"):  # no memory, no download
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == shape.parameters
    layer = model.model.layers[0]
    assert sum(p.numel() for p in layer.parameters()) == shape.layer_parameters


def test_exact_counts_of_the_7b_model():
    seven = QWEN25["7b"]
    assert seven.parameters == 7_615_616_512 and not seven.tied
    assert seven.lora_parameters(16) == 28 * 16 * (9 * 3584 + 2 * 512 + 3 * 18944)  # 40.4M
    assert seven.sid_row_parameters(560) == 2 * 560 * 3584


def test_7b_full_sft_does_not_fit_ddp_but_fits_fsdp2_on_8_gpus():
    P = QWEN25["7b"].parameters
    ddp = memory_plan("7b", "full", "sft", "ddp", 8)
    # float32 weights 4 + gradients 4 + AdamW 8 = the textbook 16 B/param: 122 GB, already over 80
    assert ddp.weights + ddp.gradients + ddp.optimizer == 16 * P
    assert 121 * GB < 16 * P < 123 * GB and not ddp.fits(80)
    # + DDP's gradient buckets (4) and the bf16 copies autocast saves (2): 22 B/param
    assert ddp.ddp_buckets == 4 * P and ddp.compute_copy == 2 * P
    fsdp = memory_plan("7b", "full", "sft", "fsdp2", 8)
    assert fsdp.weights + fsdp.gradients + fsdp.optimizer == pytest.approx(16 * P / 8)  # ~15.2 GB
    assert 15 * GB < 16 * P / 8 < 15.5 * GB
    # gathered bf16 units: root (embedding + untied head) + 2 layers, and the root's gradient in bf16 + float32
    root, layer = QWEN25["7b"].root_parameters, QWEN25["7b"].layer_parameters
    assert fsdp.compute_copy == 2 * (root + 2 * layer) + 6 * root
    assert fsdp.fits(80) and fsdp.total < 30 * GB
    assert recommended_strategy("7b", "full", "sft", 8) == "fsdp2"
    # more GPUs, smaller shards; DDP does not change
    assert memory_plan("7b", "full", "sft", "fsdp2", 16).total < fsdp.total
    assert memory_plan("7b", "full", "sft", "ddp", 16).total == ddp.total


def test_lora_keeps_a_bf16_base_and_fits_ddp():
    P = QWEN25["7b"].parameters
    plan = memory_plan("7b", "lora", "sft", "ddp", 8)
    trainable = QWEN25["7b"].lora_parameters(16) + QWEN25["7b"].sid_row_parameters(560)
    assert plan.weights == 2 * P + 4 * trainable and plan.optimizer == 8 * trainable and plan.reference == 0
    assert plan.fits(80) and recommended_strategy("7b", "lora", "sft", 8) == "ddp"


def test_grpo_full_holds_a_float32_reference_and_lora_none():
    P = QWEN25["3b"].parameters
    full = memory_plan("3b", "full", "grpo", "ddp")
    assert full.reference == 4 * P
    assert memory_plan("3b", "full", "grpo", "fsdp2", 8).reference == 4 * P / 8
    assert memory_plan("3b", "lora", "grpo", "ddp").reference == 0
    # GRPO loads the SFT result in float32 (LoRA merged in float32): 4 B/param base even in LoRA mode
    assert memory_plan("3b", "lora", "grpo", "ddp").weights > 4 * P


def test_activation_checkpointing_and_micro_batch():
    work = RECIPES[("full", "sft")]
    without = memory_plan("3b", "full", "sft", "ddp", work=Workload(micro_batch=8, checkpointing=False))
    with_ckpt = memory_plan("3b", "full", "sft", "ddp", work=work)
    assert with_ckpt.activations < without.activations / 5
    double = memory_plan("3b", "full", "sft", "ddp", work=Workload(micro_batch=16, checkpointing=False))
    assert double.activations == pytest.approx(2 * without.activations)


def test_errors_name_the_option():
    with pytest.raises(ConfigurationError, match="unknown model '13b'"):
        memory_plan("13b", "full", "sft", "ddp")
    with pytest.raises(ConfigurationError, match="strategy"):
        memory_plan("7b", "full", "sft", "zero3")
    with pytest.raises(ConfigurationError, match="gpus"):
        memory_plan("7b", "full", "sft", "fsdp2", 0)


def test_table_lists_every_size_mode_and_stage():
    table = strategy_table()
    rows = [line for line in table.splitlines() if line.startswith("| Qwen2.5")]
    assert len(rows) == 4 * 2 * 2
    assert "| Qwen2.5-7B | 7.62B | full | SFT | 169.0 (no) |" in table
    assert all(row.endswith(("| DDP |", "| FSDP2 |")) for row in rows)

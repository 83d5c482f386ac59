"""The SID-row fast path gives PEFT's trainable-token outputs and gradients, and leaves the adapter plain PEFT."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel
from peft.tuners.trainable_tokens import TrainableTokensLayer
from tiny_lm import SID_TOKENS, make_tokenizer, sample_batch, tiny_options

from rec_lightning.modules.backbone import add_sid_tokens, build_backbone
from rec_lightning.modules.lora import LoraOptions, apply_finetuning
from rec_lightning.modules.sft import response_loss_sum
from rec_lightning.modules.sid_rows import has_sid_rows_fast_path, use_sid_rows_fast_path


def token_layer(base: torch.nn.Module, token_ids: list[int], delta: torch.Tensor) -> TrainableTokensLayer:
    """PEFT's layer around ``base`` with the SID rows set to ``delta``."""
    layer = TrainableTokensLayer(base, "default")
    layer.update_layer("default", token_indices=token_ids)
    with torch.no_grad():
        layer.trainable_tokens_delta["default"].copy_(delta)
    return layer


def hand_matrix() -> torch.Tensor:
    # 5 tokens x hidden 2: row i is [i, 10 i]
    return torch.tensor([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])


def test_embedding_rows_and_gradients_by_hand():
    embedding = torch.nn.Embedding(5, 2)
    embedding.weight.data.copy_(hand_matrix())
    embedding.requires_grad_(False)
    layer = token_layer(embedding, [1, 3], torch.tensor([[-1.0, -2.0], [-3.0, -4.0]]))  # SID ids 1 and 3
    assert use_sid_rows_fast_path(layer) == 1 and has_sid_rows_fast_path(layer)
    out = layer(torch.tensor([[0, 1, 3, 1, 4]]))
    # ordinary tokens 0 and 4 keep their rows; tokens 1 and 3 take delta rows 0 and 1
    assert torch.equal(out, torch.tensor([[[0.0, 0.0], [-1.0, -2.0], [-3.0, -4.0], [-1.0, -2.0], [4.0, 40.0]]]))
    out.sum().backward()
    # d(sum)/d(delta row) = number of positions holding that token: token 1 twice, token 3 once
    assert torch.equal(layer.trainable_tokens_delta["default"].grad, torch.tensor([[2.0, 2.0], [1.0, 1.0]]))


def test_head_logits_and_gradients_by_hand():
    head = torch.nn.Linear(2, 5, bias=False)
    head.weight.data.copy_(hand_matrix())
    head.requires_grad_(False)
    layer = token_layer(head, [1, 3], torch.tensor([[-1.0, -2.0], [-3.0, -4.0]]))
    use_sid_rows_fast_path(layer)
    hidden = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # [N=2, H=2]
    logits = layer(hidden)
    # columns 0, 2, 4 from the base rows ([0,0], [2,20], [4,40]); columns 1, 3 from the delta rows
    # h=[1,1]: 0, -3, 22, -7, 44;  h=[2,0]: 0, -2, 4, -6, 8
    assert torch.equal(logits, torch.tensor([[0.0, -3.0, 22.0, -7.0, 44.0], [0.0, -2.0, 4.0, -6.0, 8.0]]))
    logits.sum().backward()
    # d(sum)/d(delta row) = sum of the hidden states = [3, 1] for both SID columns
    assert torch.equal(layer.trainable_tokens_delta["default"].grad, torch.tensor([[3.0, 1.0], [3.0, 1.0]]))


def test_options_that_change_the_result_run_peft_code():
    # a SID token as padding_idx: PEFT gives its row no gradient; the fast path must not differ
    embedding = torch.nn.Embedding(5, 2, padding_idx=1)
    embedding.weight.data.copy_(hand_matrix())
    layer = token_layer(embedding.requires_grad_(False), [1, 3], torch.ones(2, 2))
    use_sid_rows_fast_path(layer)
    layer(torch.tensor([1, 3])).sum().backward()
    assert torch.equal(layer.trainable_tokens_delta["default"].grad, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    # a head with a bias: PEFT's own head path runs (PEFT <= 0.21 drops the bias, 0.22 adds it), so we match
    # whichever PEFT is installed
    def biased_layer():
        head = torch.nn.Linear(2, 5, bias=True)
        head.weight.data.copy_(hand_matrix())
        head.bias.data.fill_(100.0)
        return token_layer(head.requires_grad_(False), [1, 3], torch.ones(2, 2))

    layer, peft_only = biased_layer(), biased_layer()
    use_sid_rows_fast_path(layer)
    out = layer(torch.tensor([[1.0, 1.0]]))
    assert torch.equal(out, peft_only(torch.tensor([[1.0, 1.0]])))
    # h = [1, 1]: rows [0,0], [1,1] (delta), [2,20], [1,1] (delta), [4,40], plus the bias 100 or not
    without_bias = torch.tensor([[0.0, 2.0, 22.0, 2.0, 44.0]])
    assert torch.equal(out, without_bias) or torch.equal(out, without_bias + 100.0)


def build(tied: bool, mode: str):
    """A tiny LoRA/freeze_lm model whose SID deltas and LoRA B differ from their initial values."""
    tokenizer = make_tokenizer()
    model = build_backbone(tiny_options(tied=tied), tokenizer)
    report = add_sid_tokens(model, tokenizer, SID_TOKENS)
    torch.manual_seed(0)
    model = apply_finetuning(model, mode, LoraOptions(r=4, alpha=8, dropout=0.0), report.sid_token_ids)
    with torch.no_grad():  # delta = base rows and B = 0 at the start would hide a wrong replacement
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn_like(param))
    return model, tokenizer, report.sid_token_ids


def history_batch(tokenizer, sid_ids):
    """sample_batch with SID tokens in the prompt too (item histories), so the embedding side is exercised."""
    batch = sample_batch(tokenizer, sid_ids, seed=3)
    batch["input_ids"][:, 1:4] = torch.tensor(sid_ids[5:8])
    return batch


def step_outputs(model, batch):
    """Full logits, and the gradients of ``response_loss_sum`` on every trainable parameter."""
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach()
    loss_sum, _ = response_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    loss_sum.backward()
    return logits, {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("tied,mode", [(True, "lora"), (False, "lora"), (True, "freeze_lm"), (False, "freeze_lm")])
def test_fast_path_gives_peft_logits_and_gradients(tied, mode):
    fast, tokenizer, sid_ids = build(tied, mode)
    peft_path = copy.deepcopy(fast)
    assert use_sid_rows_fast_path(peft_path, enabled=False) == 2  # the embedding's and the head's layer
    token_layers = [m for m in fast.modules() if isinstance(m, TrainableTokensLayer)]
    assert len(token_layers) == 2 and all(has_sid_rows_fast_path(m) for m in token_layers)
    assert not any(has_sid_rows_fast_path(m) for m in peft_path.modules())
    batch = history_batch(tokenizer, sid_ids)
    fast_logits, fast_grads = step_outputs(fast, batch)
    peft_logits, peft_grads = step_outputs(peft_path, batch)
    assert torch.allclose(fast_logits, peft_logits, rtol=0, atol=1e-6)
    assert fast_grads.keys() == peft_grads.keys()
    delta_names = [n for n in fast_grads if "trainable_tokens_delta" in n]
    assert len(delta_names) == (1 if tied else 2)
    for name, grad in fast_grads.items():
        # float32 rounding only: the head's input gradient sums the SID columns in another order
        assert (grad - peft_grads[name]).abs().max() <= 1e-5 * peft_grads[name].abs().max(), name
    if not tied:  # the untied input side: only rows of SID tokens in the batch get a gradient
        embedding_grad = next(grad for name, grad in fast_grads.items() if "embed_tokens" in name)
        in_batch = set(batch["input_ids"].flatten().tolist())
        used = torch.tensor([t in in_batch for t in sid_ids])
        assert embedding_grad[used].abs().sum(dim=1).gt(0).all() and embedding_grad[~used].eq(0).all()
    assert fast.state_dict().keys() == peft_path.state_dict().keys()


@pytest.mark.parametrize("tied", [True, False])
def test_disabled_adapter_and_merge_match_peft(tied):
    fast, tokenizer, sid_ids = build(tied, "lora")
    batch = history_batch(tokenizer, sid_ids)
    fast.eval()
    with torch.no_grad():
        adapter_on = fast(input_ids=batch["input_ids"]).logits
        with fast.disable_adapter():  # the GRPO reference: LoRA and SID rows off
            adapter_off = fast(input_ids=batch["input_ids"]).logits
        plain = copy.deepcopy(fast)
        use_sid_rows_fast_path(plain, enabled=False)
        with plain.disable_adapter():
            assert torch.equal(adapter_off, plain(input_ids=batch["input_ids"]).logits)
        merged = copy.deepcopy(fast).merge_and_unload()
        assert torch.allclose(merged(input_ids=batch["input_ids"]).logits, adapter_on, rtol=0, atol=1e-5)
        assert not torch.allclose(adapter_on, adapter_off, atol=1e-3)
        assert torch.equal(fast(input_ids=batch["input_ids"]).logits, adapter_on)  # switched back on


@pytest.mark.parametrize("tied", [True, False])
def test_saved_adapter_loads_with_plain_peft(tied, tmp_path):
    fast, tokenizer, sid_ids = build(tied, "lora")
    batch = history_batch(tokenizer, sid_ids)
    fast.eval()
    fast.save_pretrained(str(tmp_path / "adapter"), save_embedding_layers=False)
    base = build_backbone(tiny_options(tied=tied), make_tokenizer())
    add_sid_tokens(base, make_tokenizer(), SID_TOKENS)
    plain = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))  # no rec_lightning code involved
    assert not any(has_sid_rows_fast_path(m) for m in plain.modules())
    with torch.no_grad():
        expected = fast(input_ids=batch["input_ids"]).logits
        assert torch.allclose(plain.eval()(input_ids=batch["input_ids"]).logits, expected, rtol=0, atol=1e-6)

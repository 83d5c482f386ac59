import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from rec_lightning.generation.logprobs import completion_logprobs


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return Qwen2ForCausalLM(config).eval()


def inputs():
    prompts = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])  # left padded (pad id 0)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    completions = torch.tensor([[20, 21, 22, 2], [23, 24, 25, 2], [30, 31, 32, 2], [20, 21, 22, 2]])  # G = 2
    return prompts, mask, completions


def test_matches_manual_full_forward():
    model = tiny_model()
    prompts, mask, completions = inputs()
    logp = completion_logprobs(model, prompts, mask, completions, group_size=2)
    # completion 3 belongs to prompt 1 (no padding): score it by hand with one plain forward
    sequence = torch.cat([prompts[1], completions[3]])[None]
    logits = model(sequence).logits[0, 4:8]  # positions that predict the 4 completion tokens
    expected = torch.log_softmax(logits, -1).gather(1, completions[3][:, None]).squeeze(1)
    assert torch.allclose(logp[3], expected, atol=1e-5)


def test_shared_prompt_equals_repeated_prompt_values_and_gradients():
    model = tiny_model()
    prompts, mask, completions = inputs()
    weights = torch.tensor([[1.0, -2.0, 0.5, 3.0]]).T  # an arbitrary loss over the tokens
    grads = []
    for share in (True, False):
        model.zero_grad()
        logp = completion_logprobs(model, prompts, mask, completions, 2, share_prompt=share)
        (logp * weights).sum().backward()
        grads.append((logp.detach(), [p.grad.clone() for p in model.parameters()]))
    (shared, g_shared), (plain, g_plain) = grads
    assert torch.allclose(shared, plain, atol=1e-5)
    for a, b in zip(g_shared, g_plain):
        assert torch.allclose(a, b, atol=1e-5)


def test_works_under_peft_lora():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts, mask, completions = inputs()
    shared = completion_logprobs(model, prompts, mask, completions, 2)
    plain = completion_logprobs(model, prompts, mask, completions, 2, share_prompt=False)
    assert torch.allclose(shared, plain, atol=1e-5)
    with model.disable_adapter():
        base = completion_logprobs(model, prompts, mask, completions, 2)
    assert not torch.allclose(shared, base, atol=1e-4)


def test_shape_check():
    model = tiny_model()
    prompts, mask, completions = inputs()
    with pytest.raises(ValueError, match="4 completions for 2 prompts with group size 3"):
        completion_logprobs(model, prompts, mask, completions, 3)

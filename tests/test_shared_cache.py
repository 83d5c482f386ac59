"""The shared prompt cache: the same rankings as per-beam caches and generate(), on a fraction of the memory."""

import pytest
import torch
from ranking_fixtures import EOS, assert_same_ranking, left_padded_prompts, random_sid_sequences, tiny_qwen

from rec_lightning.errors import ConfigurationError
from rec_lightning.generation import shared_cache
from rec_lightning.generation.decoding import constrained_beam_search, constrained_sample
from rec_lightning.generation.decoding_reference import reference_beam_search
from rec_lightning.generation.trie import SIDTrie


@pytest.fixture(scope="module")
def model():
    return tiny_qwen(seed=0)


def same_results(shared, per_beam, atol=1e-5, rtol=1e-6):
    """Identical items in identical order, scores within ``atol + rtol * |score|``.

    The two paths sum attention over different key sets (masked keys add exact zeros) and run the
    head on different row counts, so float32 rounding differs by a few ulps: at most 1.2e-5 seen on
    scores near -25 (5e-7 relative).
    """
    assert torch.equal(shared.items, per_beam.items)
    finite = torch.isfinite(per_beam.scores)
    assert torch.equal(finite, torch.isfinite(shared.scores))
    torch.testing.assert_close(shared.scores[finite], per_beam.scores[finite], atol=atol, rtol=rtol)


@pytest.mark.parametrize("num_beams", [1, 8, 50])
@pytest.mark.parametrize("four_level_share", [0.0, 0.3])  # 3-level tries; 3- and 4-level SIDs mixed
def test_same_rankings_as_per_beam_caches_and_generate(model, num_beams, four_level_share):
    trie = SIDTrie.from_sequences(random_sid_sequences(600, seed=1, four_level_share=four_level_share), EOS)
    input_ids, attention_mask = left_padded_prompts(12, seed=2, min_length=3, max_length=30)  # ragged prompts
    shared = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams, prompt_cache="shared")
    per_beam = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams, prompt_cache="per_beam")
    same_results(shared, per_beam)
    reference = reference_beam_search(model, input_ids, attention_mask, trie, num_beams)
    assert assert_same_ranking(shared.items, shared.scores, reference.items, reference.scores, atol=3e-5) >= 11
    assert torch.equal(constrained_beam_search(model, input_ids, attention_mask, trie, num_beams).items, shared.items)


def test_renormalized_scores_and_sampling_agree(model):
    trie = SIDTrie.from_sequences(random_sid_sequences(300, seed=1, four_level_share=0.3), EOS)
    input_ids, attention_mask = left_padded_prompts(10, seed=3)
    same_results(*(constrained_beam_search(model, input_ids, attention_mask, trie, 20, renormalize=True,
                                           prompt_cache=cache) for cache in ("shared", "per_beam")))
    # the same generator draws the same samples: both paths give the same probabilities to each draw
    draws = [constrained_sample(model, input_ids, attention_mask, trie, 16, temperature=1.3,
                                generator=torch.Generator().manual_seed(0), prompt_cache=cache)
             for cache in ("shared", "per_beam")]
    same_results(*draws)
    assert (draws[0].items >= 0).all()


@pytest.mark.parametrize("tied", [False, True])
def test_lora_with_trainable_sid_rows(tied):
    from rec_lightning.modules.lora import LoraOptions, apply_finetuning

    torch.manual_seed(1)
    base = tiny_qwen(seed=0)
    if tied:
        base.lm_head.weight = base.model.embed_tokens.weight
        base.config.tie_word_embeddings = True
    sid_ids = list(range(100, 238))
    wrapped = apply_finetuning(base, "lora", LoraOptions(r=4), sid_ids).eval()
    with torch.no_grad():  # a trained adapter: LoRA B and the SID rows moved away from the base model
        for name, parameter in wrapped.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    assert shared_cache.unsupported_reason(wrapped) is None
    trie = SIDTrie.from_sequences(random_sid_sequences(400, seed=1), EOS)
    input_ids, attention_mask = left_padded_prompts(8, seed=4)
    shared = constrained_beam_search(wrapped, input_ids, attention_mask, trie, 16, prompt_cache="shared")
    per_beam = constrained_beam_search(wrapped, input_ids, attention_mask, trie, 16, prompt_cache="per_beam")
    # the adapter's large random weights give large activations: float32 rounding reaches 7.7e-6 relative (1.6e-4
    # on a score near -21) on an AVX-512 AMD EPYC, above same_results' default; the items must still be identical
    same_results(shared, per_beam, rtol=2e-5)
    plain = constrained_beam_search(tiny_qwen(seed=0), input_ids, attention_mask, trie, 16)
    assert not torch.equal(plain.items, shared.items)  # the adapter is applied on the shared path


def test_head_chunks_and_eager_attention_give_the_same_results(model, monkeypatch):
    trie = SIDTrie.from_sequences(random_sid_sequences(300, seed=1), EOS)
    input_ids, attention_mask = left_padded_prompts(6, seed=5)
    whole = constrained_beam_search(model, input_ids, attention_mask, trie, 12, prompt_cache="shared")
    monkeypatch.setattr(shared_cache, "HEAD_CHUNK_ELEMENTS", 7 * model.config.vocab_size)  # 7 rows a chunk
    same_results(constrained_beam_search(model, input_ids, attention_mask, trie, 12, prompt_cache="shared"), whole)
    monkeypatch.undo()
    eager = tiny_qwen(seed=0)
    eager.config._attn_implementation = "eager"
    same_results(constrained_beam_search(eager, input_ids, attention_mask, trie, 12, prompt_cache="shared"), whole)


def test_cache_holds_one_prompt_per_prompt_and_one_slot_per_beam_and_step(model):
    trie = SIDTrie.from_sequences(random_sid_sequences(600, seed=1), EOS)  # 3 levels + EOS: 3 steps
    input_ids, attention_mask = left_padded_prompts(4, seed=6, min_length=20, max_length=20)
    batch, length, beams, steps = 4, 20, 50, 3
    # 2 layers x (keys + values) x 2 KV heads x head size 16 x float32 = 512 bytes per cached position
    per_position = 2 * 2 * 2 * 16 * 4
    shared = constrained_beam_search(model, input_ids, attention_mask, trie, beams, prompt_cache="shared")
    per_beam = constrained_beam_search(model, input_ids, attention_mask, trie, beams, prompt_cache="per_beam")
    assert shared.peak_cache_bytes == batch * (length + steps * beams) * per_position  # 4 x 170 positions
    assert per_beam.peak_cache_bytes == batch * beams * (length + steps) * per_position  # 4 x 1,150 positions
    assert per_beam.peak_cache_bytes / shared.peak_cache_bytes == pytest.approx(1150 / 170)


def test_other_models_fall_back_to_per_beam_caches_and_shared_says_why():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    common = dict(vocab_size=256, initializer_range=0.2, eos_token_id=EOS, pad_token_id=EOS)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, bos_token_id=EOS, **common)).eval()
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, **common)).eval()
    trie = SIDTrie.from_sequences(random_sid_sequences(200, seed=1), EOS)
    input_ids, attention_mask = left_padded_prompts(4, seed=7)
    auto = constrained_beam_search(gpt2, input_ids, attention_mask, trie, 8)
    per_beam = constrained_beam_search(gpt2, input_ids, attention_mask, trie, 8, prompt_cache="per_beam")
    assert torch.equal(auto.items, per_beam.items) and auto.peak_cache_bytes == per_beam.peak_cache_bytes
    with pytest.raises(ConfigurationError, match="GPT2LMHeadModel is not one of transformers' Qwen2ForCausalLM"):
        constrained_beam_search(gpt2, input_ids, attention_mask, trie, 8, prompt_cache="shared")
    with pytest.raises(ConfigurationError, match="prompt_cache must be one of auto, shared, per_beam"):
        constrained_beam_search(llama, input_ids, attention_mask, trie, 8, prompt_cache="beam")
    same_results(constrained_beam_search(llama, input_ids, attention_mask, trie, 8, prompt_cache="shared"),
                 constrained_beam_search(llama, input_ids, attention_mask, trie, 8, prompt_cache="per_beam"))
    sliding = tiny_qwen(seed=0)
    sliding.config.use_sliding_window = True
    assert "sliding-window" in shared_cache.unsupported_reason(sliding)


def test_a_model_sharded_with_fsdp2_keeps_the_shared_path(model):
    """``fully_shard`` swaps the class for a generated ``FSDP<Name>(FSDPModule, <Name>)``: still supported."""
    import copy

    from torch.distributed.fsdp import FSDPModule

    sharded = copy.deepcopy(model)
    original = type(sharded)
    sharded.__class__ = type(f"FSDP{original.__name__}", (FSDPModule, original), {})  # what fully_shard does
    assert shared_cache.model_class(sharded) is original
    assert shared_cache.unsupported_reason(sharded) is None
    assert shared_cache.model_class(model) is original

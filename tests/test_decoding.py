"""Constrained beam search and sampling: hand-worked scores, and identical results to generate()."""

import math

import pytest
import torch
from ranking_fixtures import (EOS, assert_same_ranking, bigram_model, left_padded_prompts, random_sid_sequences,
                              tiny_qwen)

from rec_lightning.generation.decoding import constrained_beam_search, constrained_sample
from rec_lightning.generation.decoding_reference import reference_beam_search
from rec_lightning.generation.trie import SIDTrie

# ------------------------------------------------------------------------------------ hand-worked
# Bigram model over 8 tokens; the prompt ends in token 0. Next-token probabilities:
#   after 0: token 2 -> 0.5, token 3 -> 0.25 (the other 0.25 spread over tokens 0, 1, 4, 5, 6, 7)
#   after 2: token 4 -> 0.3, token 5 -> 0.6          after 3: token 4 -> 0.9
#   after 4: EOS -> 0.5                              after 5: EOS -> 0.2
# Items (SID tokens, then EOS): A = [2, 4], B = [2, 5], C = [3, 4]
#   P(A) = 0.5 * 0.3 * 0.5 = 0.075,  P(B) = 0.5 * 0.6 * 0.2 = 0.06,  P(C) = 0.25 * 0.9 * 0.5 = 0.1125
ITEMS = [[2, 4], [2, 5], [3, 4]]
A, B, C = 0, 1, 2


def one_prompt() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[7, 0]]), torch.tensor([[1, 1]])


def test_beam_search_scores_by_hand():
    trie = SIDTrie.from_sequences(ITEMS, EOS)
    out = constrained_beam_search(bigram_model(), *one_prompt(), trie, num_beams=3)
    # beam 3 keeps every path, so the ranking is exhaustive: C (0.1125), A (0.075), B (0.06)
    assert out.items.tolist() == [[C, A, B]]
    expected = [math.log(0.1125), math.log(0.075), math.log(0.06)]
    torch.testing.assert_close(out.scores, torch.tensor([expected]), atol=1e-5, rtol=0)


def test_narrow_beams_prune_like_beam_search():
    trie = SIDTrie.from_sequences(ITEMS, EOS)
    # beam 1: keep 2 (0.5 > 0.25), then 5 (0.3 > 0.15), then EOS: B alone, although C is likelier
    out = constrained_beam_search(bigram_model(), *one_prompt(), trie, num_beams=1)
    assert out.items.tolist() == [[B]]
    # beam 2: {2: 0.5, 3: 0.25} -> {(2,5): 0.3, (3,4): 0.225} (A's 0.15 drops) -> C 0.1125, B 0.06
    out = constrained_beam_search(bigram_model(), *one_prompt(), trie, num_beams=2)
    assert out.items.tolist() == [[C, B]]


def test_renormalized_scores_by_hand():
    trie = SIDTrie.from_sequences(ITEMS, EOS)
    out = constrained_beam_search(bigram_model(), *one_prompt(), trie, num_beams=3, renormalize=True)
    # over allowed tokens only: first step 2 -> 0.5/0.75 = 2/3, 3 -> 1/3; after 2: 4 -> 1/3, 5 -> 2/3;
    # after 3 only 4 (1); EOS is the only choice at the end (1). B = 4/9, C = 1/3, A = 2/9
    assert out.items.tolist() == [[B, C, A]]
    expected = [math.log(4 / 9), math.log(1 / 3), math.log(2 / 9)]
    torch.testing.assert_close(out.scores, torch.tensor([expected]), atol=1e-5, rtol=0)


def test_fewer_items_than_beams_pads_with_minus_one():
    trie = SIDTrie.from_sequences(ITEMS, EOS)
    out = constrained_beam_search(bigram_model(), *one_prompt(), trie, num_beams=5)
    assert out.items.tolist() == [[C, A, B, -1, -1]]
    assert torch.isinf(out.scores[0, 3:]).all()


def test_sampling_follows_the_constrained_distribution():
    trie = SIDTrie.from_sequences(ITEMS, EOS)
    generator = torch.Generator().manual_seed(0)
    out = constrained_sample(bigram_model(), *one_prompt(), trie, num_samples=3000, generator=generator)
    counts = torch.bincount(out.items[0], minlength=3).double() / 3000
    # renormalised over allowed tokens (see above): A = 2/9, B = 4/9, C = 1/3; binomial std <= 0.01
    torch.testing.assert_close(counts, torch.tensor([2 / 9, 4 / 9, 1 / 3], dtype=torch.float64), atol=0.03, rtol=0)
    # scores are full-vocabulary log-probabilities of the drawn item
    expected = torch.tensor([math.log(0.075), math.log(0.06), math.log(0.1125)])[out.items[0]]
    torch.testing.assert_close(out.scores[0], expected, atol=1e-5, rtol=0)


def test_sampling_temperature_and_seed():
    trie = SIDTrie.from_sequences(ITEMS, EOS)
    cold = constrained_sample(bigram_model(), *one_prompt(), trie, num_samples=50, temperature=0.05,
                              generator=torch.Generator().manual_seed(0))
    # (2/3)^20 against (1/3)^20 then (2/3)^20 against (1/3)^20: the likeliest step-by-step path, B
    assert cold.items.tolist() == [[B] * 50]
    first = constrained_sample(bigram_model(), *one_prompt(), trie, 20, generator=torch.Generator().manual_seed(3))
    again = constrained_sample(bigram_model(), *one_prompt(), trie, 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.items, again.items)
    with pytest.raises(ValueError, match="temperature"):
        constrained_sample(bigram_model(), *one_prompt(), trie, 2, temperature=0.0)


# ------------------------------------------------------------------------------------ tiny Qwen2
@pytest.fixture(scope="module")
def model():
    return tiny_qwen(seed=0)


@pytest.mark.parametrize("four_level_share, renormalize, num_prompts", [
    (0.0, False, 120),  # 3-level SIDs, as in the shipped data
    (0.3, False, 50),  # 3- and 4-level SIDs mixed: items finish at different steps
    (0.0, True, 30),
])
def test_identical_to_generate_with_a_trie_processor(model, four_level_share, renormalize, num_prompts):
    trie = SIDTrie.from_sequences(random_sid_sequences(600, seed=1, four_level_share=four_level_share), EOS)
    input_ids, attention_mask = left_padded_prompts(num_prompts, seed=2)
    ours = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=20, renormalize=renormalize)
    reference = reference_beam_search(model, input_ids, attention_mask, trie, num_beams=20, renormalize=renormalize)
    identical = assert_same_ranking(ours.items, ours.scores, reference.items, reference.scores)
    assert identical >= num_prompts - 2  # the rest differ only in the order of exactly tied items
    assert (ours.items >= 0).all()


def test_sampling_returns_valid_items_with_real_model(model):
    trie = SIDTrie.from_sequences(random_sid_sequences(150, seed=1, four_level_share=0.3), EOS)
    input_ids, attention_mask = left_padded_prompts(6, seed=4)
    out = constrained_sample(model, input_ids, attention_mask, trie, num_samples=8, temperature=1.5,
                             generator=torch.Generator().manual_seed(0))
    assert out.items.shape == (6, 8) and (out.items >= 0).all() and (out.items < trie.num_items).all()
    # a drawn item's score is what beam search scores it: a beam as wide as the catalog keeps every path
    everything = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=trie.num_items)
    for row in range(6):
        score_of = dict(zip(everything.items[row].tolist(), everything.scores[row].tolist()))
        expected = torch.tensor([score_of[item] for item in out.items[row].tolist()])
        torch.testing.assert_close(out.scores[row], expected, atol=1e-4, rtol=0)


def test_padding_does_not_change_results(model):
    trie = SIDTrie.from_sequences(random_sid_sequences(300, seed=1), EOS)
    input_ids, attention_mask = left_padded_prompts(5, seed=5, min_length=3, max_length=20)
    batched = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=10)
    for row in range(5):
        keep = attention_mask[row].bool()
        alone = constrained_beam_search(model, input_ids[row:row + 1, keep], attention_mask[row:row + 1, keep],
                                        trie, num_beams=10)
        assert_same_ranking(alone.items, alone.scores, batched.items[row:row + 1], batched.scores[row:row + 1],
                            atol=1e-4)


def test_generation_config_of_the_model_is_ignored(model):
    trie = SIDTrie.from_sequences(random_sid_sequences(300, seed=1), EOS)
    input_ids, attention_mask = left_padded_prompts(8, seed=6)
    before = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=10)
    # settings like these in a checkpoint's generation_config.json silently changed the original's results
    model.generation_config.repetition_penalty = 3.0
    model.generation_config.no_repeat_ngram_size = 1
    model.generation_config.top_k = 1
    try:
        after = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=10)
        reference = reference_beam_search(model, input_ids, attention_mask, trie, num_beams=10)
    finally:
        model.generation_config.repetition_penalty = 1.0
        model.generation_config.no_repeat_ngram_size = 0
        model.generation_config.top_k = 50
    assert torch.equal(before.items, after.items)
    assert_same_ranking(after.items, after.scores, reference.items, reference.scores)


def test_peft_wrapped_model(model):
    peft = pytest.importorskip("peft")
    trie = SIDTrie.from_sequences(random_sid_sequences(200, seed=1), EOS)
    input_ids, attention_mask = left_padded_prompts(4, seed=7)
    base = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=8)
    wrapped = peft.get_peft_model(tiny_qwen(seed=0), peft.LoraConfig(r=2, target_modules=["q_proj"])).eval()
    out = constrained_beam_search(wrapped, input_ids, attention_mask, trie, num_beams=8)  # LoRA B = 0: same model
    assert_same_ranking(out.items, out.scores, base.items, base.scores)


def test_bad_inputs(model):
    trie = SIDTrie.from_sequences(random_sid_sequences(20, seed=1), EOS)
    input_ids, attention_mask = left_padded_prompts(2, seed=8, min_length=3, max_length=6)
    with pytest.raises(ValueError, match="left padded"):
        constrained_beam_search(model, input_ids, attention_mask.flip(1), trie, num_beams=4)
    with pytest.raises(ValueError, match="num_beams must be at least 1"):
        constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=0)
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        constrained_beam_search(model, input_ids[0], attention_mask[0], trie, num_beams=4)


def test_reorder_moves_only_generated_positions_and_matches_a_full_reorder(model):
    from rec_lightning.generation.decoding import CachedLM

    input_ids, attention_mask = left_padded_prompts(2, seed=9, min_length=3, max_length=6)
    caches = []
    for fast in (True, False):
        lm = CachedLM(model, attention_mask)
        lm.prefill(input_ids)
        lm.expand(torch.tensor([0, 0, 0, 1, 1, 1]))  # 3 beams per prompt
        lm.step(torch.tensor([100, 101, 102, 103, 104, 105]))
        rows = torch.tensor([2, 2, 0, 5, 3, 4])  # new beams pick parents of their own prompt
        lm.reorder(rows) if fast else lm.cache.reorder_cache(rows)
        caches.append([(layer.keys.clone(), layer.values.clone()) for layer in lm.cache.layers])
    for (fast_keys, fast_values), (full_keys, full_values) in zip(*caches):
        assert torch.equal(fast_keys, full_keys) and torch.equal(fast_values, full_values)


def _other_architecture(name: str):
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                              MistralForCausalLM)

    torch.manual_seed(0)
    common = dict(vocab_size=256, initializer_range=0.2, eos_token_id=EOS, pad_token_id=EOS)
    if name == "gpt2":  # learned absolute positions
        return GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, bos_token_id=EOS, **common)).eval()
    layers = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, **common)
    if name == "mistral-sliding-window":  # a window shorter than the prompts: the cache is not plain
        return MistralForCausalLM(MistralConfig(sliding_window=8, **layers)).eval()
    return LlamaForCausalLM(LlamaConfig(**layers)).eval()


@pytest.mark.parametrize("name", ["llama", "gpt2", "mistral-sliding-window"])
def test_other_architectures_match_the_reference(name):
    model = _other_architecture(name)
    trie = SIDTrie.from_sequences(random_sid_sequences(300, seed=1, four_level_share=0.3), EOS)
    input_ids, attention_mask = left_padded_prompts(16, seed=3)
    ours = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=10)
    reference = reference_beam_search(model, input_ids, attention_mask, trie, num_beams=10)
    assert assert_same_ranking(ours.items, ours.scores, reference.items, reference.scores) >= 15


def test_reference_with_one_beam_is_greedy_with_beam_search_scores(model):
    # generate() runs num_beams=1 as greedy search, which returns no sequences_scores: the reference
    # rebuilds beam search's score, so it equals ours item for item and score for score
    trie = SIDTrie.from_sequences(random_sid_sequences(300, seed=1, four_level_share=0.3), EOS)
    input_ids, attention_mask = left_padded_prompts(12, seed=5)
    for renormalize in (False, True):
        ours = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams=1, renormalize=renormalize)
        reference = reference_beam_search(model, input_ids, attention_mask, trie, num_beams=1,
                                          renormalize=renormalize)
        assert reference.items.tolist() == ours.items.tolist()
        torch.testing.assert_close(reference.scores, ours.scores, atol=1e-4, rtol=0)


"""Helpers for the decoding, metric and ranking tests: synthetic catalogs, prompts and tiny LMs."""

from __future__ import annotations

import random

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from rec_lightning.generation.decoding_reference import compare_rankings

EOS = 1
PAD = 1
VOCAB = 256
# SID token ids by level: a -> 100..115, b -> 120..151, c -> 160..223, d -> 230..237
LEVEL_RANGES = [(100, 116), (120, 152), (160, 224), (230, 238)]


def random_sid_sequences(num_items: int, seed: int = 0, four_level_share: float = 0.0) -> list[list[int]]:
    """Distinct, prefix-free SID token sequences; a share of them get a 4th level."""
    rng = random.Random(seed)
    full: set[tuple[int, ...]] = set()
    prefixes: set[tuple[int, ...]] = set()
    sequences: list[tuple[int, ...]] = []
    while len(sequences) < num_items:
        seq = tuple(rng.randrange(*LEVEL_RANGES[level]) for level in range(3))
        if rng.random() < four_level_share:
            seq = seq + (rng.randrange(*LEVEL_RANGES[3]),)
        own_prefixes = {seq[:k] for k in range(1, len(seq))}
        if seq in full or seq in prefixes or own_prefixes & full:
            continue
        full.add(seq)
        prefixes |= own_prefixes
        sequences.append(seq)
    return [list(seq) for seq in sequences]


def left_padded_prompts(batch_size: int, seed: int = 0, min_length: int = 4, max_length: int = 24):
    """Random prompts of ordinary tokens (2..99), left padded with ``PAD``: ``(input_ids, attention_mask)``."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, max_length + 1, (batch_size,), generator=generator)
    width = int(lengths.max())
    input_ids = torch.full((batch_size, width), PAD, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        input_ids[row, width - length:] = torch.randint(2, 100, (length,), generator=generator)
        attention_mask[row, width - length:] = 1
    return input_ids, attention_mask


def tiny_qwen(seed: int = 0, vocab_size: int = VOCAB, dtype: torch.dtype = torch.float32) -> Qwen2ForCausalLM:
    """A 2-layer Qwen2 (hidden 64) with a wide init so its next-token distributions are peaked."""
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.2, eos_token_id=EOS, pad_token_id=PAD, bos_token_id=None)
    return Qwen2ForCausalLM(config).to(dtype).eval()


class BigramLM(nn.Module):
    """A mock causal LM whose next-token logits depend only on the last token: ``table[token]``.

    It speaks the Hugging Face forward interface (cache argument accepted and left empty), so a
    test can compute every response's exact log-probability by hand.
    """

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table  # [V, V] logits of the next token given the last one
        self.config = None

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                logits_to_keep=0, **kwargs):
        return CausalLMOutputWithPast(logits=self.table[input_ids[:, -1:]], cache=cache)  # [rows, 1, V]

    def response_log_prob(self, prompt_last_token: int, response: list[int], renormalize_over=None) -> float:
        """Sum of log-probabilities of ``response`` (EOS included) after a prompt ending in a token."""
        total, last = 0.0, prompt_last_token
        for depth, token in enumerate(response):
            log_probs = torch.log_softmax(self.table[last].double(), dim=0)
            if renormalize_over is not None:
                allowed = sorted(renormalize_over(response[:depth]))
                log_probs = log_probs - torch.logsumexp(log_probs[allowed], dim=0)
            total += float(log_probs[token])
            last = token
        return total


def bigram_model() -> BigramLM:
    """The hand-worked bigram of tests/test_decoding.py (8 tokens; see the table there)."""
    rows = {0: {2: 0.5, 3: 0.25}, 2: {4: 0.3, 5: 0.6}, 3: {4: 0.9}, 4: {EOS: 0.5}, 5: {EOS: 0.2}}
    table = torch.full((8, 8), 1.0 / 8)
    for token, probs in rows.items():
        rest = (1.0 - sum(probs.values())) / (8 - len(probs))
        table[token] = torch.tensor([probs.get(t, rest) for t in range(8)])
    return BigramLM(table.log())


def assert_same_ranking(items_a: torch.Tensor, scores_a: torch.Tensor, items_b: torch.Tensor,
                        scores_b: torch.Tensor, atol: float = 1e-5) -> int:
    """Assert two ``[B, N]`` ranked lists agree up to exact ties; returns the number of identical rows.

    Scores are float32 sums of a few log-probs (|score| up to ~25): the tolerance is at least 2e-6 x the largest
    finite |score| (a few float32 ulps of the sum), for the order of summation, which differs between CPUs (an
    AVX-512 EPYC gave 1.1e-5 on 1 of 2,400 scores of ~21, 5e-7 relative)."""
    finite = scores_b[torch.isfinite(scores_b)]
    atol = max(atol, 2e-6 * float(finite.abs().max())) if finite.numel() else atol
    torch.testing.assert_close(scores_a, scores_b, atol=atol, rtol=0)
    counts = compare_rankings(items_a, scores_a, items_b, scores_b, atol)
    assert counts["different"] == 0, counts
    return counts["identical"]

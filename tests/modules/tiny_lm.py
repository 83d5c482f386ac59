"""Tiny helpers for the model tests: a BPE tokenizer trained on a few lines, 12 SID tokens, tiny Qwen2s."""

from __future__ import annotations

import torch

from rec_lightning.modules.backbone import BackboneOptions

# 4 codes per level, 3 levels: <a_0>..<a_3>, <b_0>..<b_3>, <c_0>..<c_3>
SID_TOKENS = [f"<{level}_{code}>" for level in "abc" for code in range(4)]
LINES = [
    "The user has interacted with items in chronological order.",
    "Can you predict the next possible item that the user may expect?",
    "### Response:\n",
    "Cordless drill starter kit, safety gloves, duct tape and a lab beaker.",
] * 20


def tiny_config(tied: bool) -> dict:
    """A 2-layer Qwen2 with hidden size 32 (vocab size comes from the tokenizer)."""
    return {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
            "tie_word_embeddings": tied}


def tiny_options(tied: bool = True, **overrides) -> BackboneOptions:
    return BackboneOptions(config=tiny_config(tied), **overrides)


def make_tokenizer():
    """A byte-level BPE of about 300 tokens (no SID tokens yet)."""
    from rec_lightning.data.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(LINES, vocab_size=300)


def sample_batch(tokenizer, sid_ids: list[int], batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Prompts of ordinary tokens followed by a 3-token SID response + EOS; labels on the response."""
    generator = torch.Generator().manual_seed(seed)
    prompt = tokenizer("The user has interacted with items", add_special_tokens=False)["input_ids"]
    rows, labels = [], []
    for _ in range(batch_size):
        picks = [sid_ids[4 * level + int(torch.randint(0, 4, (1,), generator=generator))] for level in range(3)]
        response = picks + [tokenizer.eos_token_id]
        rows.append(prompt + response)
        labels.append([-100] * len(prompt) + response)
    return {"input_ids": torch.tensor(rows), "attention_mask": torch.ones(len(rows), len(rows[0]), dtype=torch.long),
            "labels": torch.tensor(labels)}

"""Per-token log-probabilities of G completions of each prompt, computing each prompt only once.

GRPO scores B x G completions of B prompts. A completion is a handful of tokens (SID levels + EOS)
while the prompt is hundreds, so repeating every prompt G times (the usual way) spends almost all
the compute on identical prompt copies. Here the prompt runs once, its KV cache is repeated G times
(differentiably: gradients from every completion flow back into the one prompt pass), and only the
completion tokens run per group member. ``share_prompt=False`` is the plain repeated-prompt path,
kept to prove both give the same values and gradients.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from rec_lightning.generation.hf_model import CACHE_ARG, logits_to_keep_kwargs


def _token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[tokens]`` in float32 without materialising the full log-softmax twice."""
    logits = logits.float()  # [N, C, V]
    picked = logits.gather(-1, tokens[..., None]).squeeze(-1)  # [N, C]
    return picked - torch.logsumexp(logits, dim=-1)


def completion_logprobs(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                        completion_ids: torch.Tensor, group_size: int, share_prompt: bool = True) -> torch.Tensor:
    """Log-probability of every completion token given its prompt and the tokens before it.

    Args:
        model: a Hugging Face causal LM (PEFT-wrapped is fine).
        prompt_ids: ``[B, P]`` left-padded prompts.
        prompt_mask: ``[B, P]`` 1 on prompt tokens.
        completion_ids: ``[B x G, C]`` completions, group after group (completion ``b * G + g`` belongs
            to prompt ``b``); positions after EOS hold padding and are to be masked by the caller.
        group_size: G.
        share_prompt: run each prompt once and share its KV cache across the group.

    Returns:
        ``[B x G, C]`` float32 log-probabilities (with grad when the model has trainable weights).
    """
    num_rows, length = completion_ids.shape
    if num_rows != prompt_ids.shape[0] * group_size:
        raise ValueError(f"{num_rows} completions for {prompt_ids.shape[0]} prompts with group size {group_size}")
    if not share_prompt:
        input_ids = torch.cat([prompt_ids.repeat_interleave(group_size, 0), completion_ids], dim=1)  # [BG, P + C]
        mask = torch.cat([prompt_mask.repeat_interleave(group_size, 0), torch.ones_like(completion_ids)], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False,
                       **logits_to_keep_kwargs(model, length + 1)).logits[:, -length - 1:-1]  # [BG, C, V]
        return _token_logprobs(logits, completion_ids)

    cache = DynamicCache(config=getattr(model, "config", None))
    positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)  # [B, P]
    prompt_out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True,
                       **{CACHE_ARG: cache}, **logits_to_keep_kwargs(model, 1))
    first = prompt_out.logits[:, -1:].repeat_interleave(group_size, 0)  # [BG, 1, V] predicts completion token 0
    if length == 1:
        return _token_logprobs(first, completion_ids)
    cache.batch_repeat_interleave(group_size)  # [B, ...] -> [BG, ...], differentiable
    mask = torch.cat([prompt_mask.repeat_interleave(group_size, 0),
                      torch.ones_like(completion_ids[:, :-1])], dim=1)  # [BG, P + C - 1]
    start = prompt_mask.sum(1).repeat_interleave(group_size)[:, None]  # [BG, 1] first completion position
    steps = torch.arange(length - 1, device=completion_ids.device)[None, :]
    rest = model(input_ids=completion_ids[:, :-1], attention_mask=mask, position_ids=start + steps, use_cache=True,
                 **{CACHE_ARG: cache}).logits  # [BG, C - 1, V] predicts completion tokens 1..C-1
    return _token_logprobs(torch.cat([first, rest], dim=1), completion_ids)

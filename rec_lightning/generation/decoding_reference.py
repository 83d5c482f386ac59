"""The slow reference decoder, for tests and benchmarks only: ``generate()`` + a per-beam processor.

This is how MiniOneRec decodes (minionerec-reference.md section 5.3): Hugging Face beam search with
``length_penalty=0`` and a logits processor that, for every beam in a Python loop, looks up the
tokens allowed after what the beam generated so far and masks the rest with an additive -1e6. It
keys the lookup on the generated suffix instead of a call counter and a prompt-tail match, so it
is correct for any prompt. :func:`rec_lightning.generation.decoding.constrained_beam_search` must return the
same ranked items; tests and ``benchmarks/decoding.py`` check that.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from rec_lightning.generation.decoding import DecodingOutput
from rec_lightning.generation.hf_model import base_model
from rec_lightning.generation.trie import SIDTrie

MASK_VALUE = -1e6  # the original's additive mask: invalid continuations stay finite but hopeless


class TrieLogitsProcessor(LogitsProcessor):
    """Masks, per beam, every token the trie does not allow after the beam's generated tokens.

    Args:
        trie: the valid responses.
        prompt_length: the (padded) prompt length; generated tokens start there.
        renormalize: renormalise the log-probabilities over the allowed tokens.
    """

    def __init__(self, trie: SIDTrie, prompt_length: int, renormalize: bool = False) -> None:
        self.prompt_length = prompt_length
        self.renormalize = renormalize
        self.allowed: dict[tuple[int, ...], list[int]] = {}
        for row in trie.responses(torch.arange(trie.num_items, device=trie.device), -1).tolist():
            response = [token for token in row if token >= 0]
            for end in range(len(response)):
                options = self.allowed.setdefault(tuple(response[:end]), [])
                if response[end] not in options:
                    options.append(response[end])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, MASK_VALUE)  # [B * beams, V]
        for row in range(input_ids.shape[0]):
            generated = tuple(input_ids[row, self.prompt_length:].tolist())
            allowed = self.allowed.get(generated)
            if allowed:
                mask[row, allowed] = 0.0
        scores = scores + mask
        return torch.log_softmax(scores, dim=-1) if self.renormalize else scores


@contextmanager
def _neutral_generation_config(model: torch.nn.Module) -> Iterator[None]:
    """Hide the model's ``generation_config`` (``generate`` fills unset fields from it)."""
    base = base_model(model)
    saved = base.generation_config
    base.generation_config = GenerationConfig()
    try:
        yield
    finally:
        base.generation_config = saved


@torch.no_grad()
def reference_beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SIDTrie,
    num_beams: int,
    renormalize: bool = False,
) -> DecodingOutput:
    """Constrained beam search the way the original runs it (slow; for tests and benchmarks).

    Args and returns as :func:`rec_lightning.generation.decoding.constrained_beam_search`; an output that is
    not a valid response (possible only when the constraint cannot fill every beam) gets item ``-1``
    with its (hopeless) score.
    """
    prompt_length = input_ids.shape[1]
    config = GenerationConfig(
        num_beams=num_beams, num_return_sequences=num_beams, length_penalty=0.0, early_stopping=False,
        do_sample=False, max_new_tokens=trie.max_depth, pad_token_id=trie.eos_token_id,
        eos_token_id=trie.eos_token_id, output_scores=True, output_logits=num_beams == 1,
        return_dict_in_generate=True, use_cache=True,
    )
    processor = TrieLogitsProcessor(trie, prompt_length, renormalize)
    with _neutral_generation_config(model):
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                logits_processor=LogitsProcessorList([processor]))
    index = {tuple(response): item for item, response in
             enumerate(trie.responses(torch.arange(trie.num_items, device=trie.device), -1).tolist())}
    items = []
    for row in output.sequences[:, prompt_length:].tolist():
        response = row[: row.index(trie.eos_token_id) + 1] if trie.eos_token_id in row else row
        response = response + [-1] * (trie.max_depth - len(response))
        items.append(index.get(tuple(response), -1))
    batch_size = input_ids.shape[0]
    items_tensor = torch.tensor(items, dtype=torch.long, device=input_ids.device).view(batch_size, num_beams)
    scores = output.sequences_scores if num_beams > 1 else _greedy_scores(output, processor, prompt_length, trie)
    return DecodingOutput(items=items_tensor, scores=scores.float().view(batch_size, num_beams))


def _greedy_scores(output, processor: TrieLogitsProcessor, prompt_length: int, trie: SIDTrie) -> torch.Tensor:
    """Beam search's score for ``num_beams=1``, which ``generate()`` runs as greedy search without one.

    Beam search adds, per step, the processor's output on the log-softmax of the raw logits, up to
    and including EOS; greedy search picks the same token (the mask is additive, log-softmax a
    per-row shift) but keeps no score, so it is rebuilt here from the raw logits.
    """
    sequences = output.sequences  # [B, P + T]
    total = torch.zeros(sequences.shape[0], dtype=torch.float32, device=sequences.device)  # [B]
    finished = torch.zeros_like(total, dtype=torch.bool)  # [B]
    for step, logits in enumerate(output.logits):  # logits: [B, V], raw
        step_scores = processor(sequences[:, :prompt_length + step], torch.log_softmax(logits.float(), dim=-1))
        token = sequences[:, prompt_length + step]  # [B]
        total = total + torch.where(finished, 0.0, step_scores.gather(1, token[:, None])[:, 0])
        finished = finished | (token == trie.eos_token_id)
    return total


def compare_rankings(items_a: torch.Tensor, scores_a: torch.Tensor, items_b: torch.Tensor, scores_b: torch.Tensor,
                     atol: float = 1e-4) -> dict[str, int]:
    """Compare two ``[B, N]`` ranked lists row by row, allowing for exact ties.

    A row is ``identical`` (same items in the same order), ``ties_only`` (scores agree within
    ``atol`` position by position, and items differ only inside runs of tied scores: as sets, or at
    all in a tie run that reaches the end of the list, which the two searches may cut differently),
    or ``different``.

    Returns:
        ``{"identical": n, "ties_only": n, "different": n}``.
    """
    counts = {"identical": 0, "ties_only": 0, "different": 0}
    for a, b, sa, sb in zip(items_a.tolist(), items_b.tolist(), scores_a.tolist(), scores_b.tolist()):
        if a == b and all(abs(x - y) <= atol or x == y for x, y in zip(sa, sb)):
            counts["identical"] += 1
        elif _equal_up_to_ties(a, b, sa, sb, atol):
            counts["ties_only"] += 1
        else:
            counts["different"] += 1
    return counts


def _equal_up_to_ties(a: list[int], b: list[int], sa: list[float], sb: list[float], atol: float) -> bool:
    if len(a) != len(b) or any(not (abs(x - y) <= atol or x == y) for x, y in zip(sa, sb)):
        return False
    start = 0
    while start < len(a):
        end = start + 1
        while end < len(a) and abs(sa[end] - sa[end - 1]) <= atol:
            end += 1
        cut_by_the_end = end == len(a) and end - start > 1
        if not cut_by_the_end and sorted(a[start:end]) != sorted(b[start:end]):
            return False
        start = end
    return True

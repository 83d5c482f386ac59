"""Constrained decoding over a :class:`~rec_lightning.generation.trie.SIDTrie`: beam search and sampling.

Algorithm (beam search): prefill each prompt once; at each depth gather, for every beam, the
log-probabilities of only the tokens its trie node allows (``[B, beams, fanout]``), add them to the
beam scores and keep the best. A response is SID tokens then EOS, so a 3-level catalog costs one
prefill and three steps of one token per beam. Everything is tensor work on the model's device: no
per-beam Python, no host sync inside the loop, and the model's ``generation_config`` is never read.

Two ways to hold the KV cache, same results (``prompt_cache``): ``"shared"`` keeps one prompt cache
per prompt and feeds its beams together (:mod:`rec_lightning.generation.shared_cache`: at beam 50 the
cache is 10-30x smaller and no ``[beams, vocabulary]`` logits are held); ``"per_beam"`` copies each
prompt's cache into its beams (:class:`CachedLM`, any Hugging Face causal LM). ``"auto"`` takes the
shared cache where the model supports it and the per-beam one elsewhere.

Scoring follows Hugging Face beam search with ``length_penalty=0`` (what MiniOneRec runs): a
response's score is the sum of its tokens' full-vocabulary log-probabilities, EOS included; with
``renormalize=True`` each step's log-probabilities are renormalised over the allowed tokens
instead. The selection rule is also Hugging Face's, so results match ``generate()`` with a trie
logits processor (:mod:`rec_lightning.generation.decoding_reference`): the running beams are the best
``num_beams`` unfinished candidates, and a candidate ending in EOS becomes a result only if it
ranks within the step's best ``num_beams`` candidates; results keep the best ``num_beams``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

try:  # transformers >= 4.56 keeps per-layer tensors; older versions fall back to reorder_cache
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover
    DynamicLayer = None

from rec_lightning.errors import ConfigurationError
from rec_lightning.generation.hf_model import CACHE_ARG, logits_to_keep_kwargs
from rec_lightning.generation.shared_cache import SharedPromptLM, cache_bytes, unsupported_reason
from rec_lightning.generation.trie import SIDTrie

PROMPT_CACHES = ("auto", "shared", "per_beam")



@dataclass
class DecodingOutput:
    """Items found for each prompt, best first.

    Attributes:
        items: ``[B, N]`` item indices into ``trie.keys``; ``-1`` where fewer than ``N`` were found.
        scores: ``[B, N]`` float32 summed log-probabilities; ``-inf`` where ``items`` is ``-1``.
        peak_cache_bytes: the most bytes the KV cache held during the search (0 if not measured).
    """

    items: torch.Tensor
    scores: torch.Tensor
    peak_cache_bytes: int = 0


class CachedLM:
    """Runs a causal LM one step at a time over a KV cache, with left-padded prompts.

    ``prefill`` the prompts, ``expand`` (select or repeat) cache rows, then ``step`` one token per
    row; ``reorder`` moves beams among the rows of one prompt. Outputs are float32 next-token
    log-probabilities over the full vocabulary (``normalize=False``: the raw logits).
    """

    def __init__(self, model: torch.nn.Module, attention_mask: torch.Tensor, normalize: bool = True) -> None:
        self.model = model
        self.normalize = normalize
        self.cache = DynamicCache(config=getattr(model, "config", None))
        self.extra = logits_to_keep_kwargs(model, 1)
        self.attention_mask = attention_mask.long()  # [rows, L + steps]
        self.prompt_length = attention_mask.shape[1]
        self.next_position = self.attention_mask.sum(dim=1)  # [rows] position of the next token

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the prompts ``[B, L]``; returns the next-token log-probabilities ``[B, V]``."""
        position_ids = (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # [B, L]
        return self._forward(input_ids, position_ids)

    def expand(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) the given rows of the cache: ``rows[i]`` becomes row ``i``."""
        self.cache.reorder_cache(rows)
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]

    def reorder(self, rows: torch.Tensor) -> None:
        """Like :meth:`expand` for rows that take the place of a row of the same prompt (beams).

        Their prompt keys and values are already equal, so only the generated positions move: a
        copy of a few tokens per row instead of the whole cache (the dominant cost of HF's reorder).
        """
        if not _plain_dynamic_layers(self.cache):
            self.cache.reorder_cache(rows)
            return
        for layer in self.cache.layers:
            layer.keys[:, :, self.prompt_length:] = layer.keys[rows, :, self.prompt_length:]
            layer.values[:, :, self.prompt_length:] = layer.values[rows, :, self.prompt_length:]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ``[rows]``; returns the next log-probabilities ``[rows, V]``."""
        ones = self.attention_mask.new_ones((self.attention_mask.shape[0], 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)  # [rows, L + t]
        log_probs = self._forward(tokens[:, None], self.next_position[:, None])
        self.next_position = self.next_position + 1
        return log_probs

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=input_ids, attention_mask=self.attention_mask, position_ids=position_ids,
                            use_cache=True, **{CACHE_ARG: self.cache}, **self.extra)
        logits = output.logits[:, -1, :].float().contiguous()  # [rows, V], a fresh tensor nobody else holds
        if not self.normalize:
            return logits
        # in place: no second [rows, V] buffer (on CPU each new one costs page faults at every step)
        return torch.log_softmax(logits, dim=-1, out=logits)


class PerBeamLM:
    """:class:`CachedLM` behind the interface of :class:`~rec_lightning.generation.shared_cache.SharedPromptLM`.

    One cache row per beam: the first :meth:`advance` copies each prompt's cache into its beams.
    """

    def __init__(self, model: torch.nn.Module, attention_mask: torch.Tensor) -> None:
        self.lm = CachedLM(model, attention_mask)
        self.cache = self.lm.cache
        self.log_probs: torch.Tensor | None = None  # [B, K, V]
        self.started = False

    def prefill(self, input_ids: torch.Tensor) -> None:
        self.log_probs = self.lm.prefill(input_ids)[:, None, :]

    def advance(self, parents: torch.Tensor | None, tokens: torch.Tensor) -> None:
        batch_size, beams = tokens.shape
        previous = self.log_probs.shape[1]
        self.log_probs = None  # freed before the step's new [rows, V] log-probabilities exist
        if parents is None and self.started:  # every beam continues itself: nothing moves
            self.log_probs = self.lm.step(tokens.flatten()).view(batch_size, beams, -1)
            return
        if parents is None:
            parents = torch.zeros_like(tokens)
        rows = (parents + torch.arange(batch_size, device=tokens.device)[:, None] * previous).flatten()
        if self.started:
            self.lm.reorder(rows)
        else:
            self.lm.expand(rows)  # one prompt row -> its beam rows
            self.started = True
        self.log_probs = self.lm.step(tokens.flatten()).view(batch_size, beams, -1)  # [B, N, V]

    def log_probs_of(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(2, tokens)

    def cache_bytes(self) -> int:
        return cache_bytes(self.cache)


def stepper(model: torch.nn.Module, attention_mask: torch.Tensor, num_beams: int, num_steps: int,
            prompt_cache: str = "auto") -> SharedPromptLM | PerBeamLM:
    """The cache strategy ``prompt_cache`` asks for (see the module docstring) for ``model``."""
    if prompt_cache not in PROMPT_CACHES:
        raise ConfigurationError(f"prompt_cache must be one of {', '.join(PROMPT_CACHES)}, got {prompt_cache!r}")
    if prompt_cache != "per_beam":
        reason = unsupported_reason(model)
        if reason is None:
            return SharedPromptLM(model, attention_mask, num_beams, num_steps)
        if prompt_cache == "shared":
            raise ConfigurationError(f"prompt_cache='shared' cannot run this model: {reason}; "
                                     "use prompt_cache='auto' (falls back to per-beam caches) or 'per_beam'")
    return PerBeamLM(model, attention_mask)


def _plain_dynamic_layers(cache: DynamicCache) -> bool:
    """True when every layer is a plain growing ``DynamicLayer`` (no sliding window, no offloading)."""
    layers = getattr(cache, "layers", None)
    return (DynamicLayer is not None and bool(layers) and not getattr(cache, "offloading", False)
            and all(type(layer) is DynamicLayer and getattr(layer, "is_initialized", True) for layer in layers))


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: SIDTrie, width: int, name: str) -> None:
    if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         "must both be [batch, length]")
    if width < 1:
        raise ConfigurationError(f"{name} must be at least 1, got {width}")
    if trie.device != input_ids.device:
        raise ValueError(f"the trie is on {trie.device} but the inputs are on {input_ids.device}; "
                         "call trie.to(device) once and reuse it")
    if bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("prompts must be left padded (attention_mask[:, -1] is 0 for some rows); "
                         "use a collator with padding_side='left'")


@torch.no_grad()
def constrained_beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SIDTrie,
    num_beams: int,
    renormalize: bool = False,
    prompt_cache: str = "auto",
) -> DecodingOutput:
    """The ``num_beams`` best distinct valid items for each prompt, by constrained beam search.

    Args:
        model: any Hugging Face causal LM with a KV cache (PEFT-wrapped is fine); put it in eval mode.
        input_ids: ``[B, L]`` left-padded prompts, on the model's device.
        attention_mask: ``[B, L]`` 1 for prompt tokens, 0 for padding.
        trie: the valid responses, on the same device.
        num_beams: beam width, which is also the number of items returned per prompt.
        renormalize: score each step with log-probabilities renormalised over the allowed tokens.
        prompt_cache: ``"auto"``, ``"shared"`` or ``"per_beam"`` (module docstring); the results agree
            within float rounding (``1e-5`` in float32).

    Returns:
        :class:`DecodingOutput` with ``[B, num_beams]`` items and scores, best first. Exactly tied
        scores keep ``torch.topk``'s order among candidates (beam, then the trie's token order).
    """
    _check_inputs(input_ids, attention_mask, trie, num_beams, "num_beams")
    batch_size, device = input_ids.shape[0], input_ids.device
    lm = stepper(model, attention_mask, num_beams, trie.max_depth - 1, prompt_cache)
    lm.prefill(input_ids)  # one beam per prompt before the first step
    peak_cache = lm.cache_bytes()
    beam_scores = torch.zeros((batch_size, 1), device=device)  # [B, K]
    nodes = torch.zeros((batch_size, 1), dtype=torch.long, device=device)  # [B, K] node numbers at this depth
    done_scores = torch.full((batch_size, num_beams), float("-inf"), device=device)  # [B, N] finished items
    done_items = torch.full((batch_size, num_beams), -1, dtype=torch.long, device=device)
    for depth in range(trie.max_depth):
        candidates, tokens, targets = _score_continuations(lm, beam_scores, nodes, trie, depth, num_beams,
                                                           renormalize)  # [B, C] each, C >= N
        if trie.ends_at[depth]:
            is_eos = tokens == trie.eos_token_id  # [B, C]
            # an EOS candidate becomes a result only if it ranks within the step's best num_beams (as HF)
            top_scores, top_index = candidates.topk(num_beams, dim=1)  # [B, N]
            finished = is_eos.gather(1, top_index)
            new_scores = top_scores.masked_fill(~finished, float("-inf"))
            new_items = targets.gather(1, top_index).masked_fill(~finished, -1)
            done_scores, keep = torch.cat([done_scores, new_scores], dim=1).topk(num_beams, dim=1)  # [B, N]
            done_items = torch.cat([done_items, new_items], dim=1).gather(1, keep)
            if depth == trie.max_depth - 1:
                break
            candidates = candidates.masked_fill(is_eos, float("-inf"))

        # the running beams are the best num_beams candidates that did not end
        beam_scores, choice = candidates.topk(num_beams, dim=1)  # [B, N]
        alive = torch.isfinite(beam_scores)  # [B, N] False where too few candidates were left
        next_tokens = tokens.gather(1, choice).masked_fill(~alive, 0)  # [B, N]; dead beams feed token 0
        parents = (choice // trie.tokens[depth].shape[1]).clamp(max=nodes.shape[1] - 1)  # [B, N] among the K beams
        lm.advance(parents, next_tokens)
        nodes = targets.gather(1, choice).masked_fill(~alive, 0)  # [B, N] node numbers at depth + 1
        peak_cache = max(peak_cache, lm.cache_bytes())
    done_items = done_items.masked_fill(~torch.isfinite(done_scores), -1)
    return DecodingOutput(items=done_items, scores=done_scores, peak_cache_bytes=peak_cache)


def _score_continuations(lm: SharedPromptLM | PerBeamLM, beam_scores: torch.Tensor, nodes: torch.Tensor,
                         trie: SIDTrie, depth: int, num_beams: int, renormalize: bool):
    """Every allowed continuation of every beam, flattened per prompt.

    Returns:
        ``(scores, tokens, targets)``, each ``[B, C]`` with ``C = max(K * fanout, num_beams)``;
        candidate ``c`` continues beam ``c // fanout``. Padding has score ``-inf`` and token ``-1``.
    """
    tokens = trie.tokens[depth][nodes]  # [B, K, F]
    targets = trie.targets[depth][nodes]  # [B, K, F]
    valid = tokens >= 0
    step_scores = lm.log_probs_of(tokens.clamp(min=0))  # [B, K, F] full-vocabulary log-probabilities
    if renormalize:
        step_scores = step_scores - step_scores.masked_fill(~valid, float("-inf")).logsumexp(2, keepdim=True)
    scores = (beam_scores[:, :, None] + step_scores).masked_fill(~valid, float("-inf"))
    scores, tokens, targets = (t.flatten(1) for t in (scores, tokens, targets))  # [B, K * F]
    missing = num_beams - scores.shape[1]
    if missing > 0:  # too few continuations to fill every beam: pad with dead ones
        scores = torch.nn.functional.pad(scores, (0, missing), value=float("-inf"))
        tokens = torch.nn.functional.pad(tokens, (0, missing), value=-1)
        targets = torch.nn.functional.pad(targets, (0, missing), value=0)
    return scores, tokens, targets


@torch.no_grad()
def constrained_sample(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SIDTrie,
    num_samples: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    prompt_cache: str = "auto",
) -> DecodingOutput:
    """Sample ``num_samples`` valid items per prompt (independently, so items may repeat).

    Each step samples from the model's distribution restricted to the allowed tokens, with logits
    divided by ``temperature``.

    Args:
        model, input_ids, attention_mask, trie: as for :func:`constrained_beam_search`.
        num_samples: items drawn per prompt (GRPO's group size).
        temperature: > 0; 1 samples the model's constrained distribution.
        generator: random generator on the model's device, for reproducible draws.
        prompt_cache: as for :func:`constrained_beam_search` (the draws are the same either way).

    Returns:
        :class:`DecodingOutput` with ``[B, num_samples]`` items (in draw order, not sorted) and
        their scores: summed full-vocabulary log-probabilities at temperature 1.
    """
    _check_inputs(input_ids, attention_mask, trie, num_samples, "num_samples")
    if not temperature > 0:
        raise ConfigurationError(f"temperature must be > 0, got {temperature}; use constrained_beam_search for greedy")
    batch_size, device = input_ids.shape[0], input_ids.device
    lm = stepper(model, attention_mask, num_samples, trie.max_depth - 1, prompt_cache)
    lm.prefill(input_ids)
    shape = (batch_size, num_samples)
    nodes = torch.zeros(shape, dtype=torch.long, device=device)
    done = torch.zeros(shape, dtype=torch.bool, device=device)
    scores = torch.zeros(shape, device=device)
    items = torch.full(shape, -1, dtype=torch.long, device=device)
    peak_cache = lm.cache_bytes()
    for depth in range(trie.max_depth):
        allowed = trie.tokens[depth][nodes]  # [B, G, F]
        targets = trie.targets[depth][nodes]
        valid = (allowed >= 0) & ~done[:, :, None]
        beams = 1 if depth == 0 else num_samples  # every sample starts from its prompt's one row
        step_scores = lm.log_probs_of(allowed[:, :beams].clamp(min=0))  # [B, K, F]
        step_scores = step_scores.expand(batch_size, num_samples, -1).reshape(-1, allowed.shape[2])  # [B * G, F]
        logits = (step_scores / temperature).masked_fill(~valid.flatten(0, 1), float("-inf"))
        flat_done = done.flatten()
        logits[:, 0] = logits[:, 0].masked_fill(flat_done, 0.0)  # finished rows draw a dummy column
        choice = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator)  # [B * G, 1]
        token = allowed.flatten(0, 1).gather(1, choice).view(shape)
        target = targets.flatten(0, 1).gather(1, choice).view(shape)
        scores = scores + step_scores.gather(1, choice).view(shape).masked_fill(done, 0.0)
        ends = ~done & (token == trie.eos_token_id)
        items = torch.where(ends, target, items)
        done = done | ends
        nodes = target.masked_fill(done, 0)
        if depth < trie.max_depth - 1:
            lm.advance(None, token.masked_fill(done, trie.eos_token_id))  # each sample continues itself
            peak_cache = max(peak_cache, lm.cache_bytes())
    return DecodingOutput(items=items, scores=scores, peak_cache_bytes=peak_cache)

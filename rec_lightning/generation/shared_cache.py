"""One prompt KV cache per prompt, shared by its beams: the memory-lean stepping for constrained decoding.

The per-beam path (:class:`rec_lightning.generation.decoding.CachedLM`) copies every prompt's keys
and values into each of its beams: at beam 50 a batch holds 50 copies of every prompt. Here each
prompt keeps one cache row, laid out as

    [ prompt (L, left padded) | step 0: N slots | step 1: N slots | ... ]

and step ``s`` feeds the ``N`` beams' tokens of a prompt *together*, on the query axis of that
prompt's row, into slots ``L + s * N + k``. A 4D attention mask, allocated once, lets beam ``k`` see
the prompt and the slots of its own ancestors only, so each beam attends to exactly the keys it
would see with a private cache: the same computation, on ``L + S * N`` cached positions per prompt
instead of ``N * (L + S)``. When beams are reordered only the mask's rows move (``N x S * N``
booleans per prompt), never keys or values; each step's mask is a buffer allocated up front.

The output head runs on chunks of rows and keeps only the log-probabilities of the tokens the
trie allows (``[B, N, fanout]``), so no ``[B * N, vocabulary]`` tensor is ever held either.

Supported models (anything else falls back to the per-beam path): ``Qwen2ForCausalLM``,
``Qwen3ForCausalLM`` and ``LlamaForCausalLM``, bare or PEFT-wrapped (LoRA, trainable tokens),
also sharded with FSDP2 (decode them through ``run_sharded``), with ``sdpa`` or ``eager`` attention
and no sliding-window layers; these compute
``logits = lm_head(decoder(...))`` and accept a custom 4D mask as-is. Memory grows as
``B * (L + S * N)`` cached positions plus ``S * B * N * (L + S * N)`` mask booleans; time as today's
path (every beam still attends to the same keys).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from rec_lightning.generation.hf_model import CACHE_ARG, base_model

SUPPORTED_CLASSES = ("Qwen2ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM")
SUPPORTED_ATTENTION = ("sdpa", "eager")
HEAD_CHUNK_ELEMENTS = 2 ** 26  # logits per head chunk: 256 MB in float32, whatever the vocabulary


def model_class(module: torch.nn.Module) -> type:
    """``module``'s own class, seen through FSDP2's wrapper: ``fully_shard`` swaps a module's class for a generated
    ``FSDP<Name>`` subclass of ``(FSDPModule, <Name>)``, whose name and module are no longer transformers'."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch built without distributed support: nothing can be sharded
        return type(module)
    return next(cls for cls in type(module).__mro__ if not issubclass(cls, FSDPModule))


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why the shared prompt cache cannot run ``model`` (``None`` when it can)."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return "a PEFT prompt-learning adapter (prompt/prefix tuning) adds virtual tokens the shared path would drop"
    base = base_model(model)
    cls = model_class(base)
    name = cls.__name__
    if name not in SUPPORTED_CLASSES or not cls.__module__.startswith("transformers.models."):
        return f"{cls.__module__}.{name} is not one of transformers' {', '.join(SUPPORTED_CLASSES)}"
    config = base.config
    attention = getattr(config, "_attn_implementation", None)
    if attention not in SUPPORTED_ATTENTION:
        return f"attention implementation {attention!r} is not one of {', '.join(SUPPORTED_ATTENTION)}"
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", False) or any(kind != "full_attention" for kind in layer_types):
        return "the model has sliding-window attention layers"
    return None


class SharedPromptLM:
    """Steps ``N`` beams per prompt over one shared prompt cache; see the module docstring.

    ``prefill`` the prompts, then ``advance`` one token per beam (with each beam's parent among the
    previous step's beams) and ``log_probs_of`` the tokens each beam may take next.

    Args:
        model: a supported causal LM (:func:`unsupported_reason` is ``None``), in eval mode.
        attention_mask: ``[B, L]`` left-padded prompt mask.
        num_beams: beams per prompt from the first step on.
        num_steps: at most this many :meth:`advance` calls.
    """

    def __init__(self, model: torch.nn.Module, attention_mask: torch.Tensor, num_beams: int, num_steps: int) -> None:
        base = base_model(model)
        self.decoder, self.head = base.model, base.lm_head
        self.eager = base.config._attn_implementation == "eager"
        self.dtype = next(base.parameters()).dtype
        self.vocab_size = base.config.vocab_size
        self.cache = DynamicCache(config=base.config)
        batch_size, prompt_length = attention_mask.shape
        device = attention_mask.device
        self.prompt_mask = attention_mask.long()
        self.num_beams, self.prompt_length, self.step_count = num_beams, prompt_length, 0
        # step s's mask [B, 1, N, L + (s + 1) * N]: what each beam's query may see, all allocated here. One
        # contiguous buffer per step: a sliced (strided) boolean mask gave run-to-run differences of up to
        # 3e-4 in torch 2.13's CPU scaled_dot_product_attention.
        self.masks = [torch.zeros((batch_size, 1, num_beams, prompt_length + (step + 1) * num_beams),
                                  dtype=torch.bool, device=device) for step in range(num_steps)]
        for mask in self.masks:
            mask[:, 0, :, :prompt_length] = attention_mask.bool()[:, None, :]
        self.own_slot = torch.eye(num_beams, dtype=torch.bool, device=device)  # [N, N] a beam's own new slot
        self.next_position = attention_mask.long().sum(dim=1)[:, None].expand(batch_size, num_beams)  # [B, N]
        self.hidden: torch.Tensor | None = None  # [B, K, H] last hidden state of every beam

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor) -> None:
        """Run the prompts ``[B, L]`` once; the next :meth:`log_probs_of` scores their first token (``K = 1``)."""
        position_ids = (self.prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # [B, L]
        hidden = self._forward(input_ids, self.prompt_mask, position_ids)
        self.hidden = hidden[:, -1:]  # [B, 1, H]

    @torch.no_grad()
    def advance(self, parents: torch.Tensor | None, tokens: torch.Tensor) -> None:
        """Feed one token per beam.

        Args:
            parents: ``[B, N]`` the previous step's beam each beam continues (``None``: beam ``k``
                continues beam ``k``; ignored at the first step, where every beam continues the prompt).
            tokens: ``[B, N]`` the token each beam appends.
        """
        step, n, start = self.step_count, self.num_beams, self.prompt_length
        mask = self.masks[step]  # [B, 1, N, L + (s + 1) * N]
        if step > 0:  # the ancestors' slots: those of the parent, then the parent's own slot
            previous = self.masks[step - 1][:, 0, :, start:]  # [B, N, s * N]
            if parents is not None:
                previous = previous.gather(1, parents[:, :, None].expand(-1, -1, step * n))
            mask[:, 0, :, start:start + step * n] = previous
        mask[:, 0, :, start + step * n:] = self.own_slot
        if self.eager:  # eager attention adds its mask to the scores
            mask = torch.zeros(mask.shape, dtype=self.dtype, device=mask.device).masked_fill_(
                ~mask, torch.finfo(self.dtype).min)
        self.hidden = self._forward(tokens, mask, self.next_position + step)  # [B, N, H]
        self.step_count += 1

    @torch.no_grad()
    def log_probs_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary float32 log-probabilities ``[B, K, F]`` of ``tokens`` ``[B, K, F]`` as each beam's next token.

        The head runs on chunks of rows (``HEAD_CHUNK_ELEMENTS`` logits at a time), each normalised in place.
        """
        batch_size, beams, fanout = tokens.shape
        hidden = self.hidden.reshape(batch_size * beams, -1)
        flat_tokens = tokens.reshape(batch_size * beams, fanout)
        out = torch.empty(flat_tokens.shape, dtype=torch.float32, device=tokens.device)
        chunk = max(1, HEAD_CHUNK_ELEMENTS // self.vocab_size)
        for start in range(0, hidden.shape[0], chunk):
            logits = self.head(hidden[start:start + chunk]).float().contiguous()  # [rows, V]
            torch.log_softmax(logits, dim=-1, out=logits)
            out[start:start + chunk] = logits.gather(1, flat_tokens[start:start + chunk])
            del logits  # before the next chunk's logits exist: one chunk at a time
        return out.view(batch_size, beams, fanout)

    def cache_bytes(self) -> int:
        return cache_bytes(self.cache)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor):
        output = self.decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=True, **{CACHE_ARG: self.cache})
        return output.last_hidden_state


def cache_bytes(cache) -> int:
    """Bytes held by a cache's keys and values now (tensor metadata only: no device sync)."""
    return sum(t.numel() * t.element_size() for layer in getattr(cache, "layers", [])
               for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if isinstance(t, torch.Tensor))

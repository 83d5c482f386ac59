"""The causal LM: load one (hub id or local folder) or build one from a config, then add the SID tokens.

SID tokens become ordinary added tokens; the embedding matrices are resized to a multiple of 64 and
every row the resize or the SID tokens touch (SID rows, including ones that reuse a checkpoint's
spare padding rows, and the padding up to the multiple) is set to the mean of the ordinary token
rows, on the input side and, for untied heads, the output side. The result depends only on the base
weights, so an adapter saved without embedding matrices reloads onto a freshly resized base exactly
(the original left these rows random or inconsistent: defect 12).

A model built from a config (random weights, ``init_seed``) already has a row for every SID token,
initialised like every other row; those rows are kept (``keep_existing_sid_rows``). Setting them all
to the mean would start every SID token with the same embedding, so that the model could not tell
one history item from another until training had pulled them apart.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch

from rec_lightning.data.tokenizer import add_sid_tokens as add_sid_tokens_to_tokenizer
from rec_lightning.errors import ConfigurationError

log = logging.getLogger(__name__)

EMBEDDING_MULTIPLE = 64

#: The embedded default: a tiny Qwen2 for CPU runs and tests (about 0.6 M parameters plus embeddings).
TINY_QWEN2: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BackboneOptions:
    """Where the causal LM comes from and how it is loaded.

    Attributes:
        model_name_or_path: Hugging Face hub id (``Qwen/Qwen2.5-3B-Instruct``) or local folder.
            None builds a randomly initialised model from ``config`` (training from scratch).
        config: for from-scratch models: ``transformers`` config fields, with ``model_type``
            (default ``qwen2``). None with no ``model_name_or_path`` means the tiny embedded default
            (:data:`TINY_QWEN2`). ``vocab_size`` and the special token ids come from the tokenizer.
        dtype: weight dtype. ``bfloat16`` for frozen LoRA bases on GPUs (trainable parameters are
            kept in float32 either way); ``float32`` for full fine-tuning and CPU runs.
        attn_implementation: ``sdpa`` (default when None), ``eager`` or ``flash_attention_2``.
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
        init_seed: seed of a from-scratch model's random weights, so every rank and every resumed run
            rebuilds the identical base.
        revision: hub revision (branch, tag or commit) of ``model_name_or_path``.
        trust_remote_code: allow model code from the hub repository.
    """

    model_name_or_path: str | None = None
    config: dict[str, Any] | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    init_seed: int = 0
    revision: str | None = None
    trust_remote_code: bool = False

    @property
    def from_scratch(self) -> bool:
        """True when the weights are random (no hub id or folder to reload them from)."""
        return self.model_name_or_path is None

    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in _DTYPES:
            raise ConfigurationError(f"backbone.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        return _DTYPES[self.dtype]


@dataclass
class SidEmbeddingReport:
    """What :func:`add_sid_tokens` did: the SID ids and the rows it (re)initialised."""

    sid_token_ids: list[int]
    old_num_rows: int
    new_num_rows: int
    initialised_rows: list[int] = field(default_factory=list)


def build_backbone(options: BackboneOptions, tokenizer=None):
    """Load or build the causal LM (without SID handling; see :func:`add_sid_tokens`).

    Args:
        options: where the model comes from.
        tokenizer: required for from-scratch models (vocabulary size and special token ids).

    Returns:
        A ``transformers`` causal LM in ``options.dtype``, in train mode, ``use_cache`` off.

    Raises:
        OSError: the model cannot be found, with what to do (mirror, offline cache, local path).
        ValueError: a from-scratch model without a tokenizer, or an unknown ``model_type``.
    """
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": options.torch_dtype()}
    if options.attn_implementation is not None:
        kwargs["attn_implementation"] = options.attn_implementation
    if options.from_scratch:
        config = backbone_config(options, tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.init_seed)
            model = AutoModelForCausalLM.from_config(config, **kwargs)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                options.model_name_or_path, revision=options.revision,
                trust_remote_code=options.trust_remote_code, **kwargs)
        except OSError as err:
            raise OSError(
                f"could not load the model {options.model_name_or_path!r}: {err}\nFix: check the hub id or "
                "local folder; behind a firewall set HF_ENDPOINT to a mirror (e.g. https://hf-mirror.com); "
                "in offline mode (HF_HUB_OFFLINE=1) download it first with `huggingface-cli download "
                f"{options.model_name_or_path}` on a connected machine, or pass a local folder") from err
    model.config.use_cache = False
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if options.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model.train()
    return model


def enable_activation_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing (works with frozen bases and LoRA, no input-grad hack)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def backbone_config(options: BackboneOptions, tokenizer):
    """The ``transformers`` config of a from-scratch model (vocabulary and special ids from ``tokenizer``)."""
    from transformers import AutoConfig

    if tokenizer is None:
        raise ValueError("a model built from a config needs the tokenizer (its size sets vocab_size)")
    fields = dict(TINY_QWEN2 if options.config is None else options.config)
    model_type = fields.pop("model_type", "qwen2")
    fields.setdefault("vocab_size", len(tokenizer))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token_id = getattr(tokenizer, name, None)
        if token_id is not None:
            fields.setdefault(name, token_id)
    try:
        return AutoConfig.for_model(model_type, **fields)
    except ValueError as err:
        raise ConfigurationError(f"backbone.config: {err}") from None


def add_sid_tokens(model, tokenizer, sid_tokens: Sequence[str],
                   pad_to_multiple_of: int = EMBEDDING_MULTIPLE, keep_existing_sid_rows: bool = False,
                   keep_existing_rows: bool = False) -> SidEmbeddingReport:
    """Add SID tokens to the tokenizer (idempotent) and give the model deterministic rows for them.

    Rows to initialise: the SID ids, plus every row at or beyond ``len(tokenizer)`` (padding up to the
    multiple of ``pad_to_multiple_of``). They are set to the float32 mean of the other rows below
    ``min(old rows, len(tokenizer))`` (the ordinary tokens), on the input embedding and, if the head is
    untied, on the output embedding. Existing rows of ordinary tokens are never changed.

    Args:
        model: a ``transformers`` causal LM (not yet PEFT-wrapped).
        tokenizer: its tokenizer; SID tokens are added if missing.
        sid_tokens: e.g. ``catalog.sid_tokens``.
        pad_to_multiple_of: embedding rows are a multiple of this (64 suits tensor cores).
        keep_existing_sid_rows: leave SID rows the model already has as they are (models built from a
            config, whose rows are all random); only rows the resize creates are set to the mean.
        keep_existing_rows: leave every row the model already has as it is, padding rows included (a
            rec_lightning checkpoint trained on these SID tokens: all its rows are trained).

    Returns:
        The SID ids and the row counts before and after.
    """
    sid_ids = add_sid_tokens_to_tokenizer(tokenizer, list(sid_tokens))
    embeddings = model.get_input_embeddings()
    old_rows = embeddings.weight.shape[0]
    wanted = math.ceil(len(tokenizer) / pad_to_multiple_of) * pad_to_multiple_of
    new_rows = max(old_rows, wanted)
    if new_rows != old_rows:
        # mean_resizing=False: transformers' own mean resize samples from a Gaussian (random); we
        # overwrite every new row below, under a forked RNG so the global stream is untouched.
        with torch.random.fork_rng(devices=[]):
            model.resize_token_embeddings(new_rows, mean_resizing=False)
    sid_set = set(sid_ids)
    new_sid_rows = {i for i in sid_set if i >= old_rows} if keep_existing_sid_rows else sid_set
    if keep_existing_rows:
        rows = list(range(old_rows, new_rows))
    else:
        rows = sorted(new_sid_rows | set(range(min(len(tokenizer), old_rows), new_rows)) | set(range(old_rows, new_rows)))
    reference = [i for i in range(min(old_rows, len(tokenizer))) if i not in sid_set]
    if not reference:
        raise ValueError("the tokenizer has no ordinary tokens to initialise the SID rows from")
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not matrices[0]:
        matrices.append(output.weight)
    index = torch.tensor(rows, dtype=torch.long, device=matrices[0].device)
    with torch.no_grad():
        for weight in matrices:
            mean = weight[reference].float().mean(dim=0)  # [H]
            weight.index_copy_(0, index.to(weight.device), mean.to(weight.dtype).expand(len(rows), -1).contiguous())
    log.info("SID tokens: %d ids in [%d, %d]; embedding rows %d -> %d; %d rows set to the token mean",
             len(sid_ids), min(sid_ids), max(sid_ids), old_rows, new_rows, len(rows))
    return SidEmbeddingReport(list(sid_ids), old_rows, new_rows, rows)


def embeddings_are_tied(model) -> bool:
    """True when the output head shares the input embedding matrix (Qwen2.5 <= 3B)."""
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight

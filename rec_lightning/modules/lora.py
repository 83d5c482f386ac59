"""Fine-tuning modes (LoRA, full, freeze_lm) and PEFT adapters: the only file that imports peft.

``lora``: PEFT LoRA on the chosen projections **plus** PEFT trainable tokens for the SID rows (the
input embedding, and the output head when it is untied), so the new SID embeddings learn; the seed
recipe left them random and frozen. ``freeze_lm``: only the SID rows learn (PEFT trainable tokens,
no LoRA layers). Because those rows live in their own small parameter, the optimizer and its weight
decay never see the other rows, and an untied head's SID rows train too (the original's
freeze_LLM bugs 1-4). ``full``: every parameter trains. Trainable parameters are kept in float32.
The SID rows run through :mod:`~rec_lightning.modules.sid_rows`, which computes PEFT's trainable-token
outputs without rebuilding the vocabulary-sized matrix each forward (the adapter stays plain PEFT).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch

from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.backbone import embeddings_are_tied

log = logging.getLogger(__name__)

FinetuneMode = Literal["lora", "full", "freeze_lm"]
FINETUNE_MODES: tuple[str, ...] = ("lora", "full", "freeze_lm")
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QKV_PROJECTIONS = ("q_proj", "k_proj", "v_proj")
ADAPTER_CONFIG_FILE = "adapter_config.json"


@dataclass
class LoraOptions:
    """LoRA settings (used when the fine-tuning mode is ``lora``).

    Attributes:
        r: rank of the low-rank update.
        alpha: scaling numerator; the update is scaled by ``alpha / r``.
        dropout: dropout on the LoRA input.
        target_modules: ``all`` (every q/k/v/o/gate/up/down projection found in the model),
            ``qkv`` (attention q, k, v), or an explicit list of module names such as
            ``[q_proj, v_proj]``.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all"


def resolve_target_modules(model, target_modules: str | Sequence[str]) -> list[str]:
    """Names of the linear layers LoRA wraps, checked against the model.

    Raises:
        ValueError: an unknown shorthand, or names that match no ``nn.Linear`` of the model.
    """
    linear_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear)}
    if isinstance(target_modules, str):
        if target_modules == "all":
            wanted = [name for name in ALL_PROJECTIONS if name in linear_names]
        elif target_modules == "qkv":
            wanted = [name for name in QKV_PROJECTIONS if name in linear_names]
        else:
            raise ConfigurationError(f"lora.target_modules must be 'all', 'qkv' or a list of module names, "
                             f"got {target_modules!r}")
    else:
        wanted = list(target_modules)
        missing = sorted(set(wanted) - linear_names)
        if missing:
            raise ConfigurationError(f"lora.target_modules {missing} match no linear layer of the model; "
                             f"linear layers found: {sorted(linear_names)}")
    if not wanted:
        raise ConfigurationError(f"lora.target_modules={target_modules!r} found no projection in the model; "
                         f"linear layers found: {sorted(linear_names)}; list the names explicitly")
    return wanted


def _token_targets(model, sid_token_ids: Sequence[int]) -> dict[str, list[int]]:
    """``{module name: ids}`` for PEFT trainable tokens: the input embedding, and an untied head."""
    ids = [int(i) for i in sid_token_ids]
    names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    targets = {names[model.get_input_embeddings()]: ids}
    if not embeddings_are_tied(model) and model.get_output_embeddings() is not None:
        targets[names[model.get_output_embeddings()]] = ids
    return targets


def apply_finetuning(model, mode: FinetuneMode, lora: LoraOptions | None, sid_token_ids: Sequence[int]):
    """Make exactly the parameters of ``mode`` trainable; returns the model to train.

    Args:
        model: a ``transformers`` causal LM with the SID rows already added.
        mode: ``lora``, ``full`` or ``freeze_lm``.
        lora: LoRA options (``lora`` mode only; defaults when None).
        sid_token_ids: the ids whose embedding (and untied head) rows train in ``lora``/``freeze_lm``.

    Returns:
        A ``peft.PeftModel`` for ``lora`` and ``freeze_lm``, the model itself for ``full``.
    """
    from peft import LoraConfig, TrainableTokensConfig, get_peft_model

    from rec_lightning.modules.sid_rows import use_sid_rows_fast_path

    if mode not in FINETUNE_MODES:
        raise ConfigurationError(f"finetune mode must be one of {FINETUNE_MODES}, got {mode!r}")
    if mode == "full":
        model.requires_grad_(True)
        trained = model
    else:
        if not sid_token_ids:
            raise ValueError(f"mode {mode!r} trains the SID rows, but no SID token ids were given")
        targets = _token_targets(model, sid_token_ids)
        if mode == "lora":
            lora = lora or LoraOptions()
            config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                target_modules=resolve_target_modules(model, lora.target_modules),
                                trainable_token_indices=targets, task_type="CAUSAL_LM")
        else:
            config = TrainableTokensConfig(target_modules=list(targets), token_indices=list(sid_token_ids))
        with warnings.catch_warnings():
            # PEFT warns that it cannot tie trainable-token adapters on tied embeddings; it does tie the
            # head to the embedding's SID rows (tests check both sides, save/reload and merge).
            warnings.filterwarnings("ignore", message=".*no implementation exists to tie the adapters.*")
            trained = get_peft_model(model, config)
        use_sid_rows_fast_path(trained)
    for parameter in trained.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    trainable, total = count_parameters(trained)
    log.info("fine-tuning mode %s: %s trainable parameters of %s (%.4f%%)", mode, f"{trainable:,}",
             f"{total:,}", 100.0 * trainable / total)
    return trained


def count_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; each shared tensor counted once.

    In ``lora`` and ``freeze_lm`` modes the SID rows count as ``len(sid ids) x hidden`` (their own
    parameter), not the whole embedding matrix (the original's freeze_LLM count did: defect 11).
    """
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total


def is_adapter_model(model) -> bool:
    """True for a PEFT-wrapped model (``lora`` and ``freeze_lm`` modes)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_adapter(model, directory: str | Path, with_embeddings: bool = False) -> None:
    """Write the PEFT adapter (LoRA weights + SID rows) to ``directory``.

    By default the embedding matrices are left out (``save_embedding_layers=False``): every new row is
    covered by the trainable tokens and the base's resize is deterministic
    (:func:`~rec_lightning.modules.backbone.add_sid_tokens`). ``with_embeddings=True`` adds the full
    resized matrices, so plain PEFT can load it onto a base resized with ``resize_token_embeddings``.
    """
    model.save_pretrained(str(directory), save_embedding_layers=with_embeddings)


def load_adapter(base_model, directory: str | Path, is_trainable: bool = False):
    """Wrap ``base_model`` (already resized with the SID rows) with the adapter in ``directory``."""
    from peft import PeftModel

    from rec_lightning.modules.sid_rows import use_sid_rows_fast_path

    model = PeftModel.from_pretrained(base_model, str(directory), is_trainable=is_trainable)
    use_sid_rows_fast_path(model)
    return model


def merge_adapter(model):
    """A plain ``transformers`` model with the adapter folded into its weights."""
    return model.merge_and_unload() if is_adapter_model(model) else model


def unwrap_base(model):
    """The ``transformers`` model under a PEFT wrapper (with adapter layers still injected)."""
    return model.get_base_model() if is_adapter_model(model) else model


def base_without_adapter(model):
    """A deep copy of the base weights with the adapter removed (not merged)."""
    import copy

    if not is_adapter_model(model):
        return model
    return copy.deepcopy(model).unload()

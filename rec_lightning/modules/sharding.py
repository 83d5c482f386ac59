"""FSDP2 sharding of a causal LM under Lightning's ``ModelParallelStrategy`` (issue 30, first part).

:func:`shard_model` applies ``torch.distributed.fsdp.fully_shard`` to every decoder layer and then to
the whole model (the root unit: embeddings, final norm, output head, and with PEFT the SID rows and
the adapters outside the layers). Each rank keeps ``1 / data_parallel_size`` of every parameter, its
gradient and its AdamW state; a layer's full weights exist only while it runs. Frozen and trainable
parameters may share a unit (FSDP2 shards each parameter on its own), so LoRA, freeze_lm and full
fine-tuning all work, and PEFT's SID-row layers (:mod:`~rec_lightning.modules.sid_rows`) see plain
tensors in forward, because FSDP2 swaps the gathered weights in before a unit runs.

Our training and decoding paths do not call the model's own ``forward``: the loss runs the decoder and
then the head on response positions only, and the shared-cache decoder calls ``model.model`` and
``lm_head`` itself. FSDP2 gathers a unit's parameters only around its ``forward``, so the root unit
would stay sharded. :func:`run_sharded` therefore calls a function *as* the root's forward (FSDP2's
``register_fsdp_forward_method``): root parameters are gathered before it, the layers gather their
own as they run, and gradients are reduce-scattered after backward. Without sharding it just calls
the function.

Precision: on GPUs parameters are gathered and computed in bf16 and gradients reduced in float32
(``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``), with float32 sharded master weights
and optimizer states. On CPU everything stays float32: bf16 matmuls are about 5x slower there, CPU
runs are tests that compare with a single-process float32 run, and gloo's bf16 collectives gain nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.lora import unwrap_base

#: the name under which :func:`shard_model` registers the root's extra forward method
SHARDED_CALL = "rec_lightning_sharded_call"


@dataclass
class ShardingOptions:
    """FSDP2 settings, used only under ``ModelParallelStrategy`` (``trainer.strategy``).

    Attributes:
        mixed_precision: ``auto`` (bf16 compute with float32 gradient reduction on GPUs, float32 on CPU),
            ``bf16`` or ``fp32``.
        reshard_after_forward: free each layer's gathered weights after its forward and gather them
            again for backward (less memory, one more all-gather per layer); False keeps them until
            backward (ZeRO-2-like).
    """

    mixed_precision: Literal["auto", "bf16", "fp32"] = "auto"
    reshard_after_forward: bool = True


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a ``transformers`` causal LM (bare or PEFT-wrapped), one FSDP unit each.

    Raises:
        ConfigurationError: the model has no ``get_decoder().layers`` list.
    """
    base = unwrap_base(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise ConfigurationError(f"cannot shard {type(base).__name__}: it has no decoder layer list "
                                 "(get_decoder().layers); use trainer.strategy: ddp for this model")
    return layers


def mixed_precision_policy(device_type: str, mode: str = "auto"):
    """FSDP2's ``MixedPrecisionPolicy`` for ``mode`` on ``device_type`` (``"cuda"``, ``"cpu"``)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if mode not in ("auto", "bf16", "fp32"):
        raise ConfigurationError(f"sharding.mixed_precision must be 'auto', 'bf16' or 'fp32', got {mode!r}")
    if mode == "fp32" or (mode == "auto" and device_type == "cpu"):
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_model(model: torch.nn.Module, mesh, options: ShardingOptions | None = None) -> int:
    """``fully_shard`` each decoder layer, then the whole model, over ``mesh``; returns the unit count.

    Args:
        model: a ``transformers`` causal LM or a PEFT wrapper of one, built identically on every rank.
        mesh: the strategy's device mesh (``LightningModule.device_mesh``); only its ``data_parallel``
            dimension is used, tensor parallelism is not supported.
        options: see :class:`ShardingOptions`.

    Raises:
        ConfigurationError: tensor parallelism was asked for, or the model has no decoder layer list.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    options = options or ShardingOptions()
    if mesh.mesh_dim_names and "data_parallel" in mesh.mesh_dim_names:
        if "tensor_parallel" in mesh.mesh_dim_names and mesh["tensor_parallel"].size() > 1:
            raise ConfigurationError(
                f"sharding uses data parallelism only, but the mesh has tensor_parallel_size="
                f"{mesh['tensor_parallel'].size()}: set trainer.strategy.init_args.data_parallel_size to the number "
                "of processes (devices x nodes) and tensor_parallel_size: 1")
        mesh = mesh["data_parallel"]
    policy = mixed_precision_policy(mesh.device_type, options.mixed_precision)
    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=options.reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    # an instance attribute FSDP2 wraps with the root's pre/post-forward hooks (see the module docstring)
    setattr(model, SHARDED_CALL, _call)
    register_fsdp_forward_method(model, SHARDED_CALL)
    return len(layers) + 1


def is_sharded(model: torch.nn.Module) -> bool:
    """True when :func:`shard_model` has sharded ``model``."""
    return SHARDED_CALL in vars(model)


def run_sharded(model: torch.nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` run as ``model``'s forward when it is sharded (its root parameters gathered).

    Every rank must make the same calls in the same order: each gathers parameters collectively.
    """
    if is_sharded(model):
        return vars(model)[SHARDED_CALL](fn, *args, **kwargs)
    return fn(*args, **kwargs)


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


# ---------------------------------------------------------------------- checkpoints (issue 30, item 3)
#: the file Lightning's ``ModelParallelStrategy`` writes beside the shards of a distributed checkpoint
DISTRIBUTED_CHECKPOINT_META = "meta.pt"
#: the index ``torch.distributed.checkpoint`` writes into every distributed checkpoint folder
DISTRIBUTED_CHECKPOINT_INDEX = ".metadata"


def gather_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and persistent buffer of a sharded ``model``, gathered whole onto rank 0's CPU.

    A collective: every rank must call it. Rank 0 gets ``{name: full tensor}`` (the names of
    ``model.state_dict()``, float32 master weights on CPU, one layer gathered at a time), every other rank
    ``{}``. Rank 0 therefore needs host memory for the whole model (4 bytes per parameter in float32).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def is_distributed_checkpoint(path) -> bool:
    """True when ``path`` is a folder written by ``ModelParallelStrategy.save_checkpoint`` (``meta.pt`` + shards)."""
    from pathlib import Path

    path = Path(path)
    return path.is_dir() and (path / DISTRIBUTED_CHECKPOINT_META).is_file() and \
        (path / DISTRIBUTED_CHECKPOINT_INDEX).is_file()


def load_distributed_weights(module: torch.nn.Module, path) -> None:
    """Load the model weights of a distributed checkpoint folder into the sharded ``module`` (a collective).

    ``module`` is the LightningModule the checkpoint was saved from (its ``state_dict`` names); each rank
    reads only its own shards. Optimizer states in the folder are left alone.

    Raises:
        ConfigurationError: ``path`` is not a distributed checkpoint folder.
    """
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    if not is_distributed_checkpoint(path):
        raise ConfigurationError(f"{path} is not a distributed checkpoint folder (a ModelParallelStrategy .ckpt "
                                 f"holds {DISTRIBUTED_CHECKPOINT_META} and {DISTRIBUTED_CHECKPOINT_INDEX})")
    state = {"state_dict": get_model_state_dict(module)}
    load(state, checkpoint_id=str(path))
    set_model_state_dict(module, state["state_dict"])

"""Memory per GPU of SFT and GRPO runs under DDP or FSDP2 sharding, before anything runs (issue 30, item 5).

Plain Python (no torch): :func:`memory_plan` returns a :class:`MemoryPlan`, the bytes one GPU holds for a
Qwen2.5 model, and :func:`strategy_table` renders which strategy fits an 80 GB GPU for every (model size,
mode, stage); docs/sft.md's "DDP or sharding" table is its output (a test keeps them equal).

Model shapes are Qwen2.5's public ``config.json`` files (hidden, intermediate, layers, heads, KV heads,
vocabulary, tied head); parameter counts follow from them and are checked against the model cards' totals
(0.49B, 1.54B, 3.09B, 7.61B). What each part costs, with P parameters, T trainable, N processes:

========================  ===============================================  ==================================
part                      DDP (every GPU a full replica)                   FSDP2 over N (``ModelParallelStrategy``)
========================  ===============================================  ==================================
weights                   full: 4 P (float32 master, ``sft_full.yaml``);    the same / N
                          LoRA SFT: 2 P bf16 base + 4 T; GRPO: 4 P (it
                          loads the SFT result in float32, LoRA merged)
compute copy              2 x float32 weights that a linear saves in bf16   the gathered units: 2 B x (root +
                          under ``bf16-mixed`` autocast (none for a bf16    2 layers: the running one and the
                          LoRA base)                                        prefetched next), + 6 B x the largest
                                                                            trainable unit (its bf16 gradient and
                                                                            the float32 reduce-scatter input)
gradients                 4 T                                              4 T / N
DDP buckets               4 T (``gradient_as_bucket_view`` is off in        none
                          Lightning's DDPStrategy: a second copy)
AdamW                     8 T (two float32 states)                         8 T / N
reference (GRPO)          full: a frozen float32 copy, 4 P; LoRA: the      full: 4 P / N; LoRA: 0
                          adapter-off policy, 0
activations               see below, the same per GPU under both (each GPU runs its own micro-batch)
========================  ===============================================  ==================================

The root unit is FSDP2's outermost: embeddings, the untied head, the final norm (``sharding.shard_model``).

**Activations** (bf16 autocast, sdpa attention, per token per decoder layer): the tensors a layer saves for
backward, ``2 B x (6 h + 2 kv + 4 i)`` (the two norms' outputs, the query, keys and values, the attention
output, the MLP's gate, SiLU, up and product) + ``8 h`` B (the norms' float32 inputs); with LoRA dropout, each
of the 7 adapted projections keeps its own dropped-out input and mask, ``3 B x (6 h + i)``. Tokens per
micro-batch = micro-batch x mean example length (packing leaves little padding; 264 tokens is
``benchmarks/gpu_sft.py``'s SFT mix). Without activation checkpointing every layer's tensors live until
backward; with it each layer keeps its float32 input (``4 h`` B per token) and one layer's tensors exist at a
time (its recompute). GRPO's update runs each prompt once and its G completions on the shared prompt cache:
tokens = prompts x length + prompts x G x completion length (no checkpointing). The output head runs on
response positions only: ``10 B x vocabulary`` per response token (bf16 logits, float32 log-softmax and its
gradient). Checked against ``benchmarks/gpu_sft.py`` on an H100 (1.5B, LoRA, micro-batch 32 padded to ~360
tokens: 50.6 GiB measured). An estimate to plan with, not a guarantee: :data:`HEADROOM` of each GPU is kept
free for the CUDA context, NCCL buffers and allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from rec_lightning.errors import ConfigurationError

Mode = Literal["lora", "full"]
Stage = Literal["sft", "grpo"]
Strategy = Literal["ddp", "fsdp2"]
GB = 1e9  #: decimal gigabytes, as GPU memory is sold (an "80 GB" GPU)
HEADROOM = 0.10  #: fraction of a GPU's memory the plan leaves free (context, NCCL, fragmentation)


@dataclass(frozen=True)
class ModelShape:
    """A Qwen2-family decoder's shape, as its ``config.json`` states it."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def kv_dim(self) -> int:
        """Width of the key (and the value) projection: KV heads x head size."""
        return self.kv_heads * self.hidden // self.heads

    @property
    def layer_parameters(self) -> int:
        """One decoder layer: q/k/v with bias, o without, gate/up/down, two RMSNorms."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h

    @property
    def root_parameters(self) -> int:
        """FSDP2's root unit: the input embedding, the head when untied, the final norm."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def parameters(self) -> int:
        """Every parameter (tied head counted once)."""
        return self.layers * self.layer_parameters + self.root_parameters

    def lora_parameters(self, r: int = 16) -> int:
        """LoRA A and B of rank ``r`` on every q/k/v/o/gate/up/down projection (``target_modules: all``)."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return self.layers * r * (9 * h + 2 * kv + 3 * i)

    def sid_row_parameters(self, num_sid_tokens: int = 560) -> int:
        """The trainable SID rows: the input embedding's, and the head's when untied."""
        return num_sid_tokens * self.hidden * (1 if self.tied else 2)


# Source: each model's config.json on the Hugging Face hub, https://huggingface.co/Qwen/Qwen2.5-{0.5B,1.5B,3B,7B}-Instruct
# (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
# tie_word_embeddings). SID tokens resize the embedding to 152,256 rows: +0.1% parameters, left out here.
QWEN25 = {
    "0.5b": ModelShape("Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 151936, True),
    "1.5b": ModelShape("Qwen2.5-1.5B", 1536, 8960, 28, 12, 2, 151936, True),
    "3b": ModelShape("Qwen2.5-3B", 2048, 11008, 36, 16, 2, 151936, True),
    "7b": ModelShape("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, False),
}
#: the model cards' "Number of Parameters" (same pages), which :attr:`ModelShape.parameters` must round to
PUBLISHED_PARAMETERS = {"0.5b": 0.49e9, "1.5b": 1.54e9, "3b": 3.09e9, "7b": 7.61e9}


@dataclass(frozen=True)
class Workload:
    """What one GPU processes per micro-batch (defaults: the shipped configs, see :data:`RECIPES`).

    Attributes:
        micro_batch: examples (SFT) or prompts (GRPO) per GPU per forward (``data.batch_size``).
        tokens_per_example: mean tokens of an example or prompt.
        response_tokens: mean response tokens per SFT example (where the output head runs).
        checkpointing: activation checkpointing per decoder layer (``backbone.gradient_checkpointing``).
        group_size, completion_tokens: GRPO's G and completion length (SID levels + EOS).
        lora_r, lora_dropout, num_sid_tokens: the LoRA recipe (``configs/sft.yaml``).
    """

    micro_batch: int
    tokens_per_example: int = 264
    response_tokens: int = 13
    checkpointing: bool = False
    group_size: int = 16
    completion_tokens: int = 4
    lora_r: int = 16
    lora_dropout: bool = True
    num_sid_tokens: int = 560


#: the workload of each (mode, stage) in the shipped configs: SFT LoRA micro-batch 32 without checkpointing
#: (sft.yaml), SFT full micro-batch 8 with checkpointing (sft_full.yaml, sft_fsdp.yaml), GRPO 4 prompts x G 16
#: (grpo.yaml), no checkpointing; 7B LoRA SFT: micro-batch 16 with checkpointing (sft_7b.yaml), see :func:`recipe`
RECIPES = {
    ("lora", "sft"): Workload(micro_batch=32),
    ("full", "sft"): Workload(micro_batch=8, checkpointing=True),
    ("lora", "grpo"): Workload(micro_batch=4),
    ("full", "grpo"): Workload(micro_batch=4),
}
SFT_7B_LORA = Workload(micro_batch=16, checkpointing=True)  #: configs/sft_7b.yaml


def recipe(shape: "ModelShape", mode: Mode, stage: Stage) -> Workload:
    """The shipped configs' workload for this model, mode and stage."""
    if shape.name == QWEN25["7b"].name and (mode, stage) == ("lora", "sft"):
        return SFT_7B_LORA
    return RECIPES[(mode, stage)]


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes one GPU holds at its peak, by part (see the module docstring for each formula)."""

    weights: float
    compute_copy: float
    gradients: float
    ddp_buckets: float
    optimizer: float
    reference: float
    activations: float

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def fits(self, gpu_gb: float = 80.0) -> bool:
        """True when :attr:`total` stays below ``gpu_gb`` less :data:`HEADROOM`."""
        return self.total <= gpu_gb * GB * (1 - HEADROOM)

    def describe(self) -> str:
        """One line: every part and the total, in GB."""
        parts = ", ".join(f"{f.name} {getattr(self, f.name) / GB:.1f}" for f in fields(self) if getattr(self, f.name))
        return f"{self.total / GB:.1f} GB ({parts})"


def activation_bytes_per_token_layer(shape: ModelShape, lora_dropout: bool) -> int:
    """Bytes one token's activations take in one decoder layer until backward (module docstring)."""
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    saved = 2 * (6 * h + 2 * kv + 4 * i) + 8 * h
    return saved + (3 * (6 * h + i) if lora_dropout else 0)


def activation_bytes(shape: ModelShape, mode: Mode, stage: Stage, work: Workload) -> float:
    """Peak activation bytes of one micro-batch's forward and backward on one GPU."""
    per_layer = activation_bytes_per_token_layer(shape, lora_dropout=mode == "lora" and work.lora_dropout)
    if stage == "sft":
        tokens = work.micro_batch * work.tokens_per_example
        head_tokens = work.micro_batch * work.response_tokens
    else:
        head_tokens = work.micro_batch * work.group_size * work.completion_tokens
        tokens = work.micro_batch * work.tokens_per_example + head_tokens
    if work.checkpointing:
        layers = shape.layers * tokens * shape.hidden * 4 + tokens * per_layer
    else:
        layers = shape.layers * tokens * per_layer
    return layers + head_tokens * shape.vocab * 10


def memory_plan(shape: ModelShape | str, mode: Mode, stage: Stage, strategy: Strategy, gpus: int = 1,
                work: Workload | None = None) -> MemoryPlan:
    """The per-GPU memory of one run.

    Args:
        shape: a :class:`ModelShape` or a key of :data:`QWEN25` (``"7b"``).
        mode: ``lora`` (LoRA r on every projection + SID rows) or ``full``.
        stage: ``sft`` or ``grpo`` (full: + a frozen float32 reference copy; LoRA: adapter-off reference).
        strategy: ``ddp`` (a replica per GPU) or ``fsdp2`` (sharded over ``gpus`` processes).
        gpus: processes = devices x nodes (``data_parallel_size`` under FSDP2); DDP's memory does not depend on it.
        work: the micro-batch; default :func:`recipe` (the shipped configs').

    Raises:
        ConfigurationError: an unknown model, mode, stage or strategy, or ``gpus`` < 1.
    """
    if isinstance(shape, str):
        if shape not in QWEN25:
            raise ConfigurationError(f"unknown model {shape!r}: one of {sorted(QWEN25)}")
        shape = QWEN25[shape]
    if mode not in ("lora", "full") or stage not in ("sft", "grpo") or strategy not in ("ddp", "fsdp2"):
        raise ConfigurationError(f"mode must be lora|full, stage sft|grpo, strategy ddp|fsdp2; got {mode!r}, "
                                 f"{stage!r}, {strategy!r}")
    if gpus < 1:
        raise ConfigurationError(f"gpus (devices x nodes) must be at least 1, got {gpus}")
    work = work or recipe(shape, mode, stage)
    P = shape.parameters
    lora_layer = shape.lora_parameters(work.lora_r) // shape.layers
    sid_rows = shape.sid_row_parameters(work.num_sid_tokens)
    T = P if mode == "full" else shape.lora_parameters(work.lora_r) + sid_rows
    base_bytes = 2 if (mode == "lora" and stage == "sft") else 4  # LoRA SFT: bf16 base; else float32
    weights = 4 * P if mode == "full" else base_bytes * P + 4 * T
    reference = 4 * P if (stage == "grpo" and mode == "full") else 0
    activations = activation_bytes(shape, mode, stage, work)
    if strategy == "ddp":
        compute_copy = 2 * P if base_bytes == 4 else 0  # bf16 casts that linears save for backward
        return MemoryPlan(weights, compute_copy, 4 * T, 4 * T, 8 * T, reference, activations)
    N = gpus
    largest_trainable_unit = max(shape.root_parameters, shape.layer_parameters) if mode == "full" else \
        max(sid_rows, lora_layer)
    gathered = 2 * (shape.root_parameters + 2 * shape.layer_parameters) + 6 * largest_trainable_unit
    return MemoryPlan(weights / N, gathered, 4 * T / N, 0, 8 * T / N, reference / N, activations)


def recommended_strategy(shape: ModelShape | str, mode: Mode, stage: Stage, gpus: int, gpu_gb: float = 80.0) -> str:
    """``ddp`` when a replica fits (simpler and faster), else ``fsdp2`` when the shards fit, else ``none``."""
    if memory_plan(shape, mode, stage, "ddp", gpus).fits(gpu_gb):
        return "ddp"
    return "fsdp2" if memory_plan(shape, mode, stage, "fsdp2", gpus).fits(gpu_gb) else "none"


def strategy_table(gpu_gb: float = 80.0, gpus_per_node: int = 8, nodes: tuple[int, ...] = (1, 2)) -> str:
    """A Markdown table: GB per GPU under DDP and FSDP2 for every Qwen2.5 size x mode x stage, and the choice.

    The workloads are the shipped configs' (:func:`recipe`); a cell is marked ``no`` when it exceeds ``gpu_gb`` less :data:`HEADROOM`.
    """
    limit = gpu_gb * (1 - HEADROOM)
    header = ["model", "parameters", "mode", "stage", "DDP"] + \
        [f"FSDP2, {n * gpus_per_node} GPUs" for n in nodes] + ["use"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, shape in QWEN25.items():
        for stage in ("sft", "grpo"):
            for mode in ("lora", "full"):
                cells = []
                for strategy, gpus in [("ddp", gpus_per_node)] + [("fsdp2", n * gpus_per_node) for n in nodes]:
                    plan = memory_plan(shape, mode, stage, strategy, gpus)
                    cells.append(f"{plan.total / GB:.1f}" + ("" if plan.fits(gpu_gb) else " (no)"))
                use = recommended_strategy(shape, mode, stage, gpus_per_node * nodes[0], gpu_gb)
                lines.append(f"| {shape.name} | {shape.parameters / 1e9:.2f}B | {mode} | {stage.upper()} | "
                             + " | ".join(cells) + f" | {use.upper() if use != 'fsdp2' else 'FSDP2'} |")
    lines.append("")
    lines.append(f"GB per GPU (10^9 bytes), planned by `rec_lightning/modules/memory_plan.py` for {gpu_gb:g} GB GPUs, "
                 f"{gpus_per_node} per node; \"(no)\": above {limit:g} GB ({HEADROOM:.0%} kept free). The shipped configs' "
                 "micro-batches of 264-token examples: SFT LoRA 32 (7B: 16 with activation checkpointing), SFT full "
                 "8 with checkpointing, GRPO 4 prompts x 16 completions without.")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m rec_lightning.modules.memory_plan
    print(strategy_table())

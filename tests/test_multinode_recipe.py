"""docs/sft.md's multi-GPU and multi-node launch lines, checked against the real configs and parsers (issue 30).

Every ``torchrun``, ``srun`` and ``python -m rec_lightning fit`` line of the "Multi-GPU and multi-node" section
is parsed the way it would run: torchrun's flags by torchrun's own parser, ``#SBATCH`` lines for SLURM, and the
fit arguments by the real CLI (``--print_config`` in-process, as tests/test_configs.py does). Then the arithmetic
must hold: processes per node = ``trainer.devices``, nodes = ``trainer.num_nodes``, ModelParallelStrategy's
``data_parallel_size`` = devices x nodes, the effective batch = the recipe's (1024 SFT examples, 64 GRPO prompts)
and equal to the comment's ``micro x accumulation x GPUs = batch``. The docs' two generated tables (accumulation
per GPU count, strategy fit per model) must equal what this file and ``memory_plan`` render; to refresh them run
``PYTHONPATH=. python tests/test_multinode_recipe.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "sft.md"
SECTION = ("## Multi-GPU and multi-node", "## Throughput")
PLACEHOLDERS = {"$NODE_RANK": "0", "$MASTER_ADDR": "node0"}
#: the recipes of the accumulation table: config chain -> what an optimizer step holds
RECIPES = {
    "sft.yaml (LoRA)": ("sft.yaml",),
    "+ sft_7b.yaml": ("sft.yaml", "sft_7b.yaml"),
    "+ sft_full.yaml (+ sft_fsdp.yaml)": ("sft.yaml", "sft_full.yaml", "sft_fsdp.yaml"),
    "grpo.yaml (+ grpo_fsdp.yaml)": ("grpo.yaml", "grpo_fsdp.yaml"),
}
GPU_COUNTS = (1, 8, 16, 32)


def printed_config(args: list[str]) -> dict:
    """``python -m rec_lightning fit ARGS --print_config``, in this process, as a dict."""
    from rec_lightning.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None), f"fit {' '.join(args)} does not parse"
    return yaml.safe_load(out.getvalue())


def batch_arithmetic(config: dict) -> tuple[int, int, int, int]:
    """(micro-batch, accumulation, devices, nodes) of a printed config; GRPO accumulates in the module."""
    trainer, model = config["trainer"], config["model"]
    micro = int(config["data"]["init_args"]["batch_size"])
    if model["class_path"].endswith("GRPOModule"):
        assert int(trainer["accumulate_grad_batches"]) == 1, "GRPO accumulates with model.init_args.accumulate_grad_batches"
        accumulation = int(model["init_args"]["accumulate_grad_batches"])
    else:
        accumulation = int(trainer["accumulate_grad_batches"])
    return micro, accumulation, int(trainer["devices"]), int(trainer["num_nodes"])


def config_args(names: tuple[str, ...]) -> list[str]:
    return [arg for name in names for arg in ("--config", str(ROOT / "configs" / name))]


def render_batch_table() -> str:
    """Accumulation that keeps each recipe's effective batch at 1, 8, 16, 32 GPUs ("-": lower data.batch_size)."""
    lines = ["| recipe | micro-batch | per optimizer step | " + " | ".join(f"{n} GPU{'s' * (n > 1)}" for n in GPU_COUNTS)
             + " |", "|" + "---|" * (3 + len(GPU_COUNTS))]
    for label, names in RECIPES.items():
        micro, accumulation, devices, nodes = batch_arithmetic(printed_config(config_args(names)))
        target = micro * accumulation * devices * nodes
        cells = [str(target // (micro * n)) if target % (micro * n) == 0 else "-" for n in GPU_COUNTS]
        lines.append(f"| {label} | {micro} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def doc_block(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}: [^>]*-->\n(.*?)<!-- /{name} -->", text, re.S)
    assert match, f"docs/sft.md has no <!-- {name}: ... --> ... <!-- /{name} --> block"
    return match.group(1).strip()


def launch_commands() -> list[tuple[str, str, dict]]:
    """(command, the comment above it, #SBATCH settings) of every launch line of the multi-GPU section."""
    text = DOC.read_text()
    section = text[text.index(SECTION[0]):text.index(SECTION[1])]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        comment, sbatch = "", {}
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("#SBATCH"):
                key, _, value = line.split()[1].partition("=")
                sbatch[key] = value
            elif line.startswith("#"):
                comment = line
            elif line:
                commands.append((line, comment, sbatch))
    return commands


COMMANDS = launch_commands()


def test_the_section_has_single_node_multi_node_torchrun_and_slurm_lines():
    launchers = [shlex.split(command)[0] for command, _, _ in COMMANDS]
    assert {"python", "torchrun", "srun"} <= set(launchers), launchers
    assert len(COMMANDS) >= 6


@pytest.mark.parametrize("command, comment, sbatch", COMMANDS, ids=[f"line{i}" for i in range(len(COMMANDS))])
def test_launch_line_parses_and_its_arithmetic_holds(command, comment, sbatch):
    for name, value in PLACEHOLDERS.items():
        command = command.replace(name, value)
    tokens = shlex.split(command)
    launcher = tokens[0]
    if launcher == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(tokens[1:])  # every torchrun flag must exist
        assert args.module and args.training_script == "rec_lightning", command
        fit_args, processes = args.training_script_args, (int(args.nproc_per_node), int(args.nnodes.split(":")[-1]))  # "1:1": min:max
    elif launcher == "srun":
        assert tokens[1:4] == ["python", "-m", "rec_lightning"], command
        fit_args, processes = tokens[4:], (int(sbatch["--ntasks-per-node"]), int(sbatch["--nodes"]))
    else:
        assert tokens[:3] == ["python", "-m", "rec_lightning"], command
        fit_args, processes = tokens[3:], None  # Lightning's launcher starts trainer.devices processes
    assert fit_args[0] == "fit", command
    config = printed_config(fit_args[1:])
    micro, accumulation, devices, nodes = batch_arithmetic(config)
    if processes is not None:
        assert processes == (devices, nodes), f"{launcher} starts {processes} (per node, nodes), the trainer expects " \
                                              f"devices {devices} x num_nodes {nodes}: {command}"
    strategy = config["trainer"]["strategy"]
    if isinstance(strategy, dict) and strategy["class_path"].endswith("ModelParallelStrategy"):
        assert int(strategy["init_args"]["data_parallel_size"]) == devices * nodes, \
            f"trainer.strategy.init_args.data_parallel_size must be devices x nodes = {devices * nodes}: {command}"
    effective = micro * accumulation * devices * nodes
    grpo = config["model"]["class_path"].endswith("GRPOModule")
    assert effective == (64 if grpo else 1024), f"effective batch {micro} x {accumulation} x {devices * nodes}: {command}"
    claim = re.search(r"(\d+) x (\d+) x (\d+) = (\d+)", comment)
    assert claim, f"the comment above {command!r} states no 'micro x accumulation x GPUs = batch'"
    assert tuple(map(int, claim.groups())) == (micro, accumulation, devices * nodes, effective), (comment, command)


def test_docs_batch_table_equals_the_configs():
    expected = render_batch_table()
    print(expected)
    assert doc_block(DOC.read_text(), "batch-table") == expected, f"refresh docs/sft.md's batch-table with:\n{expected}"


def test_docs_strategy_table_equals_the_memory_plan():
    from rec_lightning.modules.memory_plan import strategy_table

    expected = strategy_table()
    assert doc_block(DOC.read_text(), "strategy-table") == expected, \
        f"refresh docs/sft.md's strategy-table (python -m rec_lightning.modules.memory_plan):\n{expected}"


def test_memory_plan_workloads_are_the_configs():
    """The table plans the shipped micro-batches and activation checkpointing."""
    from rec_lightning.modules.memory_plan import QWEN25, recipe
    from rec_lightning.modules.memory_plan import RECIPES as PLANNED

    full = printed_config(config_args(("sft.yaml", "sft_full.yaml", "sft_fsdp.yaml")))
    assert full["data"]["init_args"]["batch_size"] == PLANNED[("full", "sft")].micro_batch
    assert full["model"]["init_args"]["backbone"]["gradient_checkpointing"] is PLANNED[("full", "sft")].checkpointing
    for names, key in ((("sft.yaml",), "3b"), (("sft.yaml", "sft_7b.yaml"), "7b")):
        lora, work = printed_config(config_args(names)), recipe(QWEN25[key], "lora", "sft")
        assert lora["data"]["init_args"]["batch_size"] == work.micro_batch
        assert lora["model"]["init_args"]["backbone"]["gradient_checkpointing"] is work.checkpointing
        assert lora["model"]["init_args"]["lora"]["r"] == work.lora_r
    grpo = printed_config(config_args(("grpo.yaml",)))
    assert grpo["data"]["init_args"]["batch_size"] == PLANNED[("full", "grpo")].micro_batch
    assert grpo["model"]["init_args"]["group"]["size"] == PLANNED[("full", "grpo")].group_size


if __name__ == "__main__":  # rewrite the two generated tables in docs/sft.md
    from rec_lightning.modules.memory_plan import strategy_table

    text = DOC.read_text()
    for name, table in (("batch-table", render_batch_table()), ("strategy-table", strategy_table())):
        text = re.sub(rf"(<!-- {name}: [^>]*-->\n).*?(<!-- /{name} -->)", lambda m: m.group(1) + table + "\n" + m.group(2),
                      text, flags=re.S)
    DOC.write_text(text)

"""The one-way layers of design.md, stated by folder: core <- data <- modules <- callbacks <- cli/commands."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rec_lightning"

#: top-level folder (or flat module) of rec_lightning -> layer rank; a module may import only ranks <= its own
LAYER_RANK = {
    # core: plain torch/Python, never Lightning
    "generation": 0, "evaluation": 0, "sids": 0, "rl": 0, "files": 0, "errors": 0, "prompts": 0,
    "data": 1,
    "modules": 2,
    "callbacks": 3,
    # entry points (recommend.py is a one-call API over data/ and modules/, like the commands)
    "commands": 4, "cli": 4, "__main__": 4, "recommend": 4,
}
CORE_RANK = 0


def rank_of_name(name: str) -> int:
    """Rank of a top-level name under rec_lightning (a folder, or a flat module without .py)."""
    if name == "__init__":
        return CORE_RANK  # the package's lazy export table imports nothing eagerly
    assert name in LAYER_RANK, f"rec_lightning/{name} has no layer: add it to LAYER_RANK"
    return LAYER_RANK[name]


def rank_of_path(path: Path) -> int:
    relative = path.relative_to(PACKAGE)
    return rank_of_name(relative.parts[0] if len(relative.parts) > 1 else relative.stem)


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_every_top_level_name_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_file() and p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert names - {"__init__"} <= set(LAYER_RANK), sorted(names - {"__init__"} - set(LAYER_RANK))


def test_layers_import_only_downwards():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        rank = rank_of_path(path)
        where = path.relative_to(PACKAGE).as_posix()
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "rec_lightning" and len(parts) > 1:
                target = rank_of_name(parts[1])
                if target > rank:
                    problems.append(f"{where} (rank {rank}) imports {module} (rank {target})")
            if rank == CORE_RANK and parts[0] in ("lightning", "pytorch_lightning", "torchmetrics_lightning"):
                problems.append(f"{where} is core but imports {module}")
            if parts[0] == "peft" and where != "modules/lora.py":
                problems.append(f"{where} imports peft (only modules/lora.py may)")
    assert not problems, "\n".join(problems)

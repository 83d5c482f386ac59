"""The four one-way layers of design.md: core <- data <- modules <- callbacks <- cli/commands."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rec_lightning"
RANK = {"core": 0, "data": 1, "modules": 2, "callbacks": 3, "commands": 4}


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) == 1:
        # recommend.py is an entry point like the commands (one-call API over data/ and modules/)
        return "commands" if relative.name in ("cli.py", "__main__.py", "recommend.py") else "core"
    return relative.parts[0]


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_layers_import_only_downwards():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        layer = layer_of(path)
        for module in imported_modules(path):
            if module.startswith("rec_lightning."):
                parts = module.split(".")
                target = parts[1] if parts[1] in RANK and len(parts) > 2 else ("commands" if parts[1] in ("cli", "recommend") else "core")
                if parts[1] in ("data", "modules", "callbacks", "commands"):
                    target = parts[1]
                if RANK[target] > RANK[layer]:
                    problems.append(f"{path.relative_to(PACKAGE)} ({layer}) imports {module} ({target})")
            if layer == "core" and module.split(".")[0] in ("lightning", "pytorch_lightning", "torchmetrics_lightning"):
                problems.append(f"{path.relative_to(PACKAGE)} is core but imports {module}")
            if module.split(".")[0] == "peft" and path.relative_to(PACKAGE).as_posix() != "modules/lora.py":
                problems.append(f"{path.relative_to(PACKAGE)} imports peft (only modules/lora.py may)")
    assert not problems, "\n".join(problems)

"""The notebook snippet of docs/sft.md (the README shows the same code) runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "sft.md"


def notebook_snippet() -> str:
    """The first ```python block after the ``<!-- notebook-snippet -->`` marker."""
    text = DOC.read_text()
    match = re.search(r"<!-- notebook-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"no notebook snippet marker in {DOC}"
    return match.group(1)


def test_notebook_snippet_trains_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REC_LIGHTNING_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(compile(notebook_snippet(), str(DOC), "exec"), namespace)
    assert (tmp_path / "outputs" / "notebook" / "final_checkpoint" / "adapter_config.json").exists()
    assert namespace["metadata"]["finetune"]["mode"] == "lora"
    assert namespace["model"].__class__.__name__ == "PeftModelForCausalLM"
    assert float(namespace["trainer"].callback_metrics["val/loss"]) > 0

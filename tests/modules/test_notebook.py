"""The notebook snippets of README.md and docs/sft.md run as written."""

from __future__ import annotations

import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "sft.md"]


def notebook_snippet(doc: Path) -> str:
    """The first ```python block after the ``<!-- notebook-snippet -->`` marker."""
    text = doc.read_text()
    match = re.search(r"<!-- notebook-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"no notebook snippet marker in {doc}"
    return match.group(1)


def test_readme_and_docs_show_the_same_snippet():
    assert notebook_snippet(DOCS[0]) == notebook_snippet(DOCS[1])


def test_snippet_imports_rec_lightning_names_from_the_package_itself():
    """A notebook needs no module paths: every rec_lightning name comes from ``from rec_lightning import ...``."""
    snippet = notebook_snippet(DOCS[0])
    deep = re.findall(r"^(?:from|import) rec_lightning\.\S+", snippet, re.M)
    assert not deep, deep
    assert "from rec_lightning import (" in snippet


def test_notebook_snippet_trains_and_exports(tmp_path, monkeypatch):
    doc = DOCS[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REC_LIGHTNING_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(compile(notebook_snippet(doc), str(doc), "exec"), namespace)
    assert (tmp_path / "outputs" / "notebook" / "final_checkpoint" / "adapter_config.json").exists()
    assert namespace["metadata"]["finetune"]["mode"] == "lora"
    assert namespace["model"].__class__.__name__ == "PeftModelForCausalLM"
    assert float(namespace["trainer"].callback_metrics["val/loss"]) > 0

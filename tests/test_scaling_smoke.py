"""benchmarks/scaling.py end to end on a tiny point: the generated folder loads, every stage row is ok."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 15 s: four fresh interpreters importing torch/transformers
def test_scaling_benchmark_tiny_point_writes_one_ok_row_per_stage(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "REC_LIGHTNING_CACHE": str(tmp_path / "cache")}
    table = tmp_path / "table.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/scaling.py"), "--points", "200x2000", "--stages",
                           "load", "trie", "tokenize", "--table", str(table), "--work_dir", str(tmp_path / "work"),
                           "--timeout", "300", "--threads", "1"],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in table.read_text().splitlines() if line.startswith("| 200 x 2000 |")]
    # tokenize needs the data's BPE, so bpe-train runs (and is reported) before the stages
    assert [row[1] for row in rows] == ["generate", "bpe-train", "load", "trie", "tokenize"], rows
    assert all(row[5] == "ok" for row in rows), rows
    assert "2,000 rows + catalog of 200 items" in rows[2][6]
    assert "2,200 train examples" in rows[4][6]  # 2,000 sid_history_to_sid + 200 title_to_sid (quickstart's mix)
    assert "log-log slopes" in done.stdout
    # the generated folder is what check-data accepts (all three splits, distinct 3-level SIDs)
    data = tmp_path / "work" / "synthetic-200x2000-seed0" / "data"
    from rec_lightning.data.records import load_rec_data

    loaded = load_rec_data(data, "Synthetic_Shop")
    assert {split: len(records) for split, records in loaded.splits.items()} == {"train": 2000, "valid": 100, "test": 100}
    assert len(loaded.catalog) == 200 and not loaded.catalog.duplicate_sids and loaded.catalog.level_counts == (3,)
    assert all(1 <= len(r.history_item_ids) <= 10 for r in loaded.splits["train"])
    assert not loaded.warnings

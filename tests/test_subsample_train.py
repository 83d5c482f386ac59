"""benchmarks/subsample_train.py: a seeded fraction of the train rows, everything else byte for byte the same."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "subsample_train.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_subsample_keeps_a_seeded_fraction_of_train_and_copies_the_rest(demo_dir, tmp_path):
    from rec_lightning.data.records import load_rec_data

    done = run("--data_dir", demo_dir, "--output", tmp_path / "small", "--fraction", 0.2, "--seed", 3, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    train = next((demo_dir / "train").glob("*.csv"))
    full, small = rows(train), rows(tmp_path / "small" / "train" / train.name)
    summary = json.loads((tmp_path / "small" / "subsample.json").read_text())
    assert summary["kept_rows"] == round(0.2 * (len(full) - 1)) == len(small) - 1
    assert small[0] == full[0] and small[1:] == [full[1 + i] for i in summary["kept_row_numbers"]]  # original order
    assert summary["kept_row_numbers"] == sorted(summary["kept_row_numbers"])
    for part in ("valid", "test", "index"):
        for source in (demo_dir / part).iterdir():
            assert (tmp_path / "small" / part / source.name).read_bytes() == source.read_bytes()
    data = load_rec_data(tmp_path / "small", "Demo_Shop")  # a valid data folder
    assert len(data.splits["train"]) == summary["kept_rows"]
    # the same seed gives the same rows; another seed other rows; an existing output is never replaced
    assert run("--data_dir", demo_dir, "--output", tmp_path / "again", "--fraction", 0.2, "--seed", 3,
               cwd=tmp_path).returncode == 0
    assert json.loads((tmp_path / "again" / "subsample.json").read_text())["kept_row_numbers"] == summary["kept_row_numbers"]
    assert run("--data_dir", demo_dir, "--output", tmp_path / "other", "--fraction", 0.2, "--seed", 4,
               cwd=tmp_path).returncode == 0
    assert json.loads((tmp_path / "other" / "subsample.json").read_text())["kept_row_numbers"] != summary["kept_row_numbers"]
    refused = run("--data_dir", demo_dir, "--output", tmp_path / "small", cwd=tmp_path)
    assert refused.returncode != 0 and "exists" in refused.stderr
    bad = run("--data_dir", demo_dir, "--output", tmp_path / "x", "--fraction", 0, cwd=tmp_path)
    assert bad.returncode != 0 and "--fraction must be in (0, 1], got 0.0" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_heldout_output_holds_the_other_train_rows(demo_dir, tmp_path):
    done = run("--data_dir", demo_dir, "--output", tmp_path / "kept", "--fraction", 0.75, "--seed", 1,
               "--heldout_output", tmp_path / "held", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    train = next((demo_dir / "train").glob("*.csv"))
    full = rows(train)
    kept = json.loads((tmp_path / "kept" / "subsample.json").read_text())["kept_row_numbers"]
    held = json.loads((tmp_path / "held" / "subsample.json").read_text())["kept_row_numbers"]
    assert sorted(kept + held) == list(range(len(full) - 1)) and not set(kept) & set(held)  # a partition of train
    assert rows(tmp_path / "held" / "train" / train.name) == [full[0], *(full[1 + i] for i in held)]
    for part in ("valid", "test", "index"):
        for source in (demo_dir / part).iterdir():
            assert (tmp_path / "held" / part / source.name).read_bytes() == source.read_bytes()
    # an existing held-out folder is refused before anything is written
    again = run("--data_dir", demo_dir, "--output", tmp_path / "kept2", "--fraction", 0.75,
                "--heldout_output", tmp_path / "held", cwd=tmp_path)
    assert again.returncode != 0 and "--heldout_output" in again.stderr and not (tmp_path / "kept2").exists()
    whole = run("--data_dir", demo_dir, "--output", tmp_path / "all", "--fraction", 1,
                "--heldout_output", tmp_path / "none", cwd=tmp_path)
    assert whole.returncode != 0 and "nothing would be held out" in whole.stderr and not (tmp_path / "all").exists()

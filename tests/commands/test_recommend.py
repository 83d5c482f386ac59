"""``Recommender`` and ``recommend``: the same rankings as ``evaluate``, histories by id/SID/title, clear errors."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(quickstart_trained):
    """(checkpoint, data dir, test examples) of the shared quickstart-trained model (conftest)."""
    return quickstart_trained


def run(*args: str, expect_ok: bool = True, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, timeout=300, env=cli_env(**env), check=expect_ok)


@pytest.fixture(scope="module")
def recommender(trained):
    from rec_lightning import Recommender

    checkpoint, data_dir, _ = trained
    return Recommender.from_checkpoint(checkpoint, data_dir=str(data_dir), batch_size=8)


def test_rankings_equal_evaluate_through_the_cli(trained, recommender, quickstart_evaluated):
    """``evaluate --split test --num_beams 10 --batch_size 8`` (conftest's ``quickstart_evaluated``) vs Recommender."""
    _, _, examples = trained
    _, records, _, _ = quickstart_evaluated
    histories = [list(e.history_item_ids) for e in examples]
    assert [r["row"] for r in records] == [e.row for e in examples]
    results = recommender.recommend(histories, k=10, num_beams=10)
    assert len(results) == len(records) > 8  # more than one batch
    for record, result in zip(records, results):
        assert result.sids == record["predict"]
        assert result.item_ids == [ids[0] for ids in record["predict_item_ids"]]
        assert result.titles == record["predict_titles"]
        assert [list(ids) for ids in result.shared_item_ids] == record["predict_item_ids"]
        assert [round(s, 6) for s in result.scores] == pytest.approx(record["scores"], abs=1e-5)
    # the best k of the same beams
    top3 = recommender.recommend(histories[:8], k=3, num_beams=10)
    assert [r.sids for r in top3] == [r["predict"][:3] for r in records[:8]]


def test_histories_by_sid_or_title_rank_like_item_ids(recommender, trained):
    _, _, examples = trained
    catalog = recommender.catalog
    ids = list(examples[0].history_item_ids)
    unique_titles = {t: i for t, i in ((catalog.title_of(i), i) for i in ids) if len(recommender.titles()[t]) == 1}
    mixed = [catalog.sid_of(i) if n % 2 else (catalog.title_of(i) if catalog.title_of(i) in unique_titles else str(i))
             for n, i in enumerate(ids)]
    by_id, by_mixed = recommender.recommend([ids, mixed], k=5)
    assert by_mixed.history_item_ids == tuple(ids)
    assert by_mixed.sids == by_id.sids and by_mixed.scores == pytest.approx(by_id.scores)
    frame = recommender.recommend([ids], k=5, as_frame=True)
    assert list(frame.columns) == ["user", "rank", "item_id", "sid", "title", "score"]
    assert frame["rank"].tolist() == [1, 2, 3, 4, 5] and frame["sid"].tolist() == by_id.sids


def test_unknown_items_and_bad_arguments_raise_clear_errors(recommender):
    from rec_lightning import UnknownItemError

    with pytest.raises(UnknownItemError, match=r"history 1, position 2: item id 99999 is not in the catalog"):
        recommender.recommend([[0, 1], [0, 1, 99999]])
    with pytest.raises(UnknownItemError, match="no item has the title 'No Such Thing'.*Fix: pass the exact title"):
        recommender.recommend([["No Such Thing"]])
    with pytest.raises(UnknownItemError, match=r"SID <a_999><b_1><c_1> belongs to no item"):
        recommender.recommend([["<a_999><b_1><c_1>"]])
    with pytest.raises(ValueError, match="history 0: expected a non-empty list"):
        recommender.recommend([[]])
    with pytest.raises(ValueError, match="need 1 <= k <= num_beams"):
        recommender.recommend([[1]], k=5, num_beams=3)


def test_recommend_command_prints_the_top_items_with_titles(trained, recommender, tmp_path):
    checkpoint, data_dir, examples = trained
    history = list(examples[0].history_item_ids)
    out = run("recommend", "--checkpoint", str(checkpoint), "--data_dir", str(data_dir), "--history",
              ",".join(map(str, history)), "--history", "3,4", "--k", "4", "--json", str(tmp_path / "top.json")).stdout
    expected = recommender.recommend([history, [3, 4]], k=4)
    assert f'user 0: history {history[0]} "{recommender.catalog.title_of(history[0])}"' in out
    for user, result in enumerate(expected):
        for rank, (item_id, sid, title) in enumerate(zip(result.item_ids, result.sids, result.titles), start=1):
            assert re.search(rf"^\s+{rank}\s+{item_id}\s+{re.escape(sid)}\s+-?\d+\.\d{{4}}\s+{re.escape(title)}$",
                             out, re.M), (rank, out)
    written = json.loads((tmp_path / "top.json").read_text())
    assert [[row["sid"] for row in user["recommendations"]] for user in written] == [r.sids for r in expected]
    # errors in process (the same main() the CLI calls): the message, no traceback
    from rec_lightning.commands import recommend as recommend_command

    base = ["--checkpoint", str(checkpoint), "--data_dir", str(data_dir)]
    with pytest.raises(SystemExit, match="no empty entry"):
        recommend_command.main([*base, "--history", "1,,2"])
    with pytest.raises(SystemExit, match="position 1: item id 77777 is not in the catalog"):
        recommend_command.main([*base, "--history", "1,77777"])
    with pytest.raises(SystemExit, match="not a checkpoint folder"):
        recommend_command.main(["--checkpoint", str(tmp_path), "--history", "1"])


def test_readme_recipe_runs_as_written(trained, tmp_path, monkeypatch):
    """The README's notebook recipe, on the demo data it defaults to (same catalog as the 40-user shop)."""
    checkpoint, _, _ = trained
    shutil.copytree(checkpoint, tmp_path / "outputs" / "quickstart" / "final_checkpoint")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REC_LIGHTNING_CACHE", str(tmp_path / "cache"))
    snippet = re.search(r"<!-- recommend-snippet -->\s*```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert snippet, "no recommend snippet in README.md"
    assert len(snippet.group(1).strip().splitlines()) <= 5
    namespace: dict = {}
    exec(compile(snippet.group(1), "README.md", "exec"), namespace)
    top = namespace["top"]
    assert len(top) == 10 and top["user"].tolist() == [0] * 5 + [1] * 5 and all(top["title"].str.len() > 0)


def test_import_is_cheap_and_exports_the_notebook_names():
    code = ("import sys, rec_lightning; assert 'torch' not in sys.modules and 'lightning' not in sys.modules; "
            "from rec_lightning import Recommender, RecDataModule, SFTModule, GRPOModule, load_for_inference; "
            "print(Recommender.__module__, SFTModule.__name__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["rec_lightning.recommend", "SFTModule"]


@pytest.fixture(scope="module")
def other_data_checkpoint(tmp_path_factory):
    """A model fitted (2 steps, the quickstart's model) on a data folder that is not the demo data set: another
    seed and catalog shape, category name and max_length of its own. (checkpoint, data dir)."""
    from fitting import fit_quickstart_model

    from rec_lightning.data.demo import make_demo_data

    root = tmp_path_factory.mktemp("other_data")
    data_dir = make_demo_data(root / "data", seed=7, num_users=30, num_topics=5)
    checkpoint, _ = fit_quickstart_model(root, data_dir, max_steps=2, category_name="garden tools", max_length=200)
    return checkpoint, data_dir


def test_checkpoint_of_other_data_is_served_without_data_dir(other_data_checkpoint, tmp_path):
    """No --data_dir: the catalog the checkpoint carries, not the demo data set (none is generated)."""
    from rec_lightning import Recommender
    from rec_lightning.sids.codec import ItemCatalog

    checkpoint, data_dir = other_data_checkpoint
    catalog = ItemCatalog.from_data_dir(data_dir, "Demo_Shop")
    assert (checkpoint / "item_catalog.json").is_file()
    from_folder = Recommender.from_checkpoint(checkpoint, data_dir=str(data_dir))  # the data folder, checked
    history = catalog.item_ids[:3]
    expected = from_folder.recommend([history], k=5)[0]
    assert from_folder.category_name == "garden tools" and from_folder.max_length == 200
    empty_cache = tmp_path / "cache"
    out = run("recommend", "--checkpoint", str(checkpoint), "--history", ",".join(map(str, history)), "--k", "5",
              cwd=tmp_path, REC_LIGHTNING_CACHE=str(empty_cache)).stdout
    assert f'user 0: history {history[0]} "{catalog.title_of(history[0])}"' in out
    for rank, (item_id, sid, title) in enumerate(zip(expected.item_ids, expected.sids, expected.titles), start=1):
        assert re.search(rf"^\s+{rank}\s+{item_id}\s+{re.escape(sid)}\s+-?\d+\.\d{{4}}\s+{re.escape(title)}$",
                         out, re.M), (rank, out)
    assert not (empty_cache / "demo").exists()
    carried = Recommender.from_checkpoint(checkpoint)
    assert carried.catalog.checksum() == catalog.checksum() and carried.category_name == "garden tools"
    assert carried.recommend([history], k=5)[0].sids == expected.sids


def test_old_checkpoint_without_catalog_needs_data_dir(trained, tmp_path):
    """A checkpoint written before catalogs travelled (no item_catalog.json): --data_dir as before, else a clear error."""
    from cli_helpers import assert_clean_error, run_in_process

    checkpoint, data_dir, _ = trained
    assert (checkpoint / "item_catalog.json").is_file()  # fit writes it
    old = tmp_path / "old_checkpoint"
    shutil.copytree(checkpoint, old)
    (old / "item_catalog.json").unlink()
    result = run("recommend", "--checkpoint", str(old), "--history", "1,2", expect_ok=False)
    assert_clean_error(result, "carries no item catalog (item_catalog.json)", "Fix: pass the data folder the model "
                       "was trained on: --data_dir DIR")
    served = run_in_process("recommend", "--checkpoint", str(old), "--data_dir", str(data_dir), "--history", "1,2",
                            "--k", "3")
    assert served.returncode == 0 and "user 0: history 1" in served.stdout, served.stderr
    (old / "item_catalog.json").write_text('{"format": ')  # damaged: named, with the fix
    damaged = run_in_process("recommend", "--checkpoint", str(old), "--history", "1,2")
    assert damaged.returncode == 1 and "item_catalog.json: not valid JSON" in damaged.stderr
    assert "--data_dir" in damaged.stderr


def test_evaluate_and_recommend_resolve_the_same_settings(trained, tmp_path, monkeypatch):
    """One loader, one rule: explicit > recorded in rec_lightning.json > default; evaluate loads the tokenizer once."""
    import transformers

    from rec_lightning import Recommender
    from rec_lightning.cli import main as cli_main
    from rec_lightning.modules import inference
    from rec_lightning.modules.export import read_metadata

    checkpoint, data_dir, _ = trained
    metadata = read_metadata(checkpoint)
    resolved = []
    original_load = inference.load_checkpoint

    def recording_load(*args, **kwargs):
        loaded = original_load(*args, **kwargs)
        resolved.append(loaded.settings)
        return loaded

    monkeypatch.setattr(inference, "load_checkpoint", recording_load)
    loads = []
    original_tokenizer = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: loads.append(a[0]) or original_tokenizer(*a, **k))
    cli_main(["evaluate", "--checkpoint", str(checkpoint), "--data_dir", str(data_dir), "--split", "test",
              "--num_beams", "2", "--ks", "1", "2", "--limit", "4", "--output", str(tmp_path / "eval"),
              "--accelerator", "cpu"])
    assert loads == [str(checkpoint)]  # evaluate: the checkpoint's tokenizer, loaded once
    Recommender.from_checkpoint(checkpoint, data_dir=str(data_dir))
    Recommender.from_checkpoint(checkpoint)
    assert resolved[0] == resolved[1] == resolved[2]
    assert resolved[0].as_dict() == {key: metadata[key] for key in ("category", "category_name", "next_item_task",
                                                                      "max_length")}
    # the rule itself
    assert inference.resolve_data_settings(metadata, data_dir, max_length=64, category_name="tools").as_dict() == \
        {**resolved[0].as_dict(), "max_length": 64, "category_name": "tools"}
    assert inference.resolve_data_settings({}).as_dict() == {"category": None, "category_name": "items",
                                                             "next_item_task": "sid_history_to_sid", "max_length": 512}
    with pytest.raises(ValueError, match="without a data folder.*Fix: pass --data_dir"):
        inference.resolve_data_settings(metadata, category="Other_Shop")

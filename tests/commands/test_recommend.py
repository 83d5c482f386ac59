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

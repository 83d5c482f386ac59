"""Scaling of the data stages (issue 26, item 4): wall time and peak RSS against catalog size and rows.

    python benchmarks/scaling.py --points 1e4x1e5 1e5x1e5 [--stages load tokenize ...] [--table FILE]
    python benchmarks/scaling.py --points 1e4x1e5 --stages memory memory-trace   # where the memory goes
    python benchmarks/scaling.py --slopes                                        # slopes of --table only

A point ``ITEMSxROWS`` is a synthetic catalog of ITEMS items and ROWS train rows (valid and test get 5% of
ROWS each), written once per point in the MiniOneRec layout (:func:`generate`), then measured stage by
stage. Every stage runs in its own fresh interpreter with a ``--timeout`` (a point that runs out is
reported as ``timeout``, never dropped). In-process stages report the seconds of the stage itself
(imports and untimed set-up excluded) and ``RSS before`` (the process after its imports and set-up, just
before the timed work); ``peak RSS`` is ``getrusage(RUSAGE_SELF).ru_maxrss`` of that process. Command
stages (``check-data``, ``fast_dev_run``, ``build-sids``) are timed from outside (interpreter start and
imports included) and their peak RSS is the child's ``ru_maxrss`` from ``wait4``.

Stages:
  generate       the synthetic folder (always first; reused from ``--work_dir`` when already there)
  load           ``load_rec_data(folder, category, ("train",))``: catalog + train CSV, validated
  check-data     ``python -m rec_lightning check-data --data_dir F --category C`` (all three splits)
  bpe-train      training the data's byte-level BPE (``RecDataModule.tokenizer`` with an empty cache_dir);
                 run automatically before the stages that need the tokenizer, which then find it cached
  tokenize       ``RecDataModule(<configs/quickstart.yaml data args>).setup("fit")`` with that BPE cached:
                 load train + valid, build the task mix, tokenize it and the valid prompts
  fast_dev_run   ``python -m rec_lightning fit --config configs/quickstart.yaml ... --trainer.fast_dev_run true``
                 (REC_LIGHTNING_CACHE = the point's cache, so the BPE is not trained again)
  trie           ``SIDTrie.from_catalog`` for the catalog (catalog load untimed)
  decode         one ``constrained_beam_search`` batch: 16 valid prompts, 50 beams, a random tiny Qwen2
                 (hidden 64, 2 layers), so the constraint machinery dominates (trie build untimed)
  build-sids     ``python -m rec_lightning build-sids`` (balanced RQ-KMeans, 3 x 256) on random 32-dim
                 vectors (``--max_build_sids_items``, default 1e5)
  collaborative  ``ppmi_svd_vectors(train records, num_items, dim=32)`` (records load untimed)
  memory         RSS checkpoints between the steps of ``setup("fit")`` in one process: retained RSS and
                 each step's own peak (VmHWM reset per step), per train row
  memory-trace   the same steps under ``tracemalloc``: Python bytes retained per step (exact, but not the
                 tokenizer's Rust memory) and the source lines that hold them; both write a breakdown to
                 ``--breakdown`` (default: ``<table>`` with ``_memory`` before the suffix)

Results are appended to ``--table`` (Markdown) as each stage ends; the notes' ``load`` is the 1-minute
load average when the stage started (the machine may be shared: then pass ``--threads 1``, or torch's
thread pool spins against the other process and torch stages run up to 25x slower). At the end the
log-log slopes of time and peak RSS between the two largest completed points of each stage are
printed (against rows when the items are equal, against items when the rows are equal).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
CATEGORY = "Synthetic_Shop"
SUFFIX = "_5_2016-10-2018-11"  # MiniOneRec's file suffix, as in the real folders
STAGES = ("load", "check-data", "tokenize", "fast_dev_run", "trie", "decode", "build-sids", "collaborative")
EXTRA_STAGES = ("memory", "memory-trace")
NEEDS_BPE = {"tokenize", "fast_dev_run", "decode", "memory", "memory-trace"}
HEADER = ("| point (items x rows) | stage | seconds | peak RSS MiB | RSS before MiB | status | notes |\n"
          "|---|---|---|---|---|---|---|\n")
MAX_HISTORY = 10

# Rows per user in the real Industrial_and_Scientific train split (rows -> users): a user with r rows
# has a sequence of r + 1 items and its rows are the sliding windows over it (history <= 10 items).
REAL_ROWS_PER_USER = {1: 283, 2: 426, 3: 682, 4: 2417, 5: 1263, 6: 631, 7: 429, 8: 240, 9: 153, 10: 120,
                      11: 92, 12: 75, 13: 44, 14: 37, 15: 33, 16: 32, 17: 14, 18: 15, 19: 6, 20: 4, 21: 4,
                      22: 5, 23: 3, 24: 4, 25: 5, 26: 1, 27: 2, 29: 1, 30: 2, 31: 2, 32: 2, 33: 1, 34: 1,
                      36: 1, 39: 1, 47: 1, 48: 1, 82: 1}


# Common English words, then product words: the head of the synthetic text's vocabulary.
ENGLISH_WORDS = """
the of and to a in for is on that by this with you it not or be are from at as your all have new more an was we
will home can us about if page my has search free but our one other do no information time they site he up may what
which their news out use any there see only so his when contact here business who web also now help get view online
first been would how were me some these its like service than find price date back top people had list name just
over state year day into email two health world next used go work last most products music buy data make them should
product system post her city add policy number such please available copyright support message after best software
then jan good video well where info rights public books high school through each links she review years order very
privacy book items company read group need many user said does set under general research university january mail
full map reviews program life know games way days management part could great united hotel real item international
center store travel comments made development report off member details line terms before did send right type because
local those using results office education national car design take posted internet address community within states
area want phone shipping reserved subject between forum family long based code show even black check special prices
website index being women much sign file link open today technology south case project same pages version section own
found sports house related security both county american photo game members power while care network down computer
systems three total place end following download him without per access think north resources current posts big media
law control water history pictures size art personal since including guide shop directory board location change white
text small rating rate government children during return students shopping account times sites level digital profile
previous form events love old john main call hours image department title description non insurance another why shall
property class still money quality every listing content country private little visit save tools low reply customer
december compare movies include college value article york man card jobs provide food source author different press
learn sale around print course job canada process room stock training too credit point join science men categories
advanced west sales look english left team estate box conditions select windows photos thread week category note
live large gallery table register however june october november market library really action start series model
features air industry plan human provided yes required second hot accessories cost movie forums march la september
better say questions july going medical test friend come dec server pc study application cart staff articles san
feedback again play looking issues april never users complete street topic comment financial things working against
standard tax person below mobile less got blog party payment equipment login student let programs offers legal above
recent park stores side act problem red give memory performance social august quote language story sell options
experience rates create key body young america important field few east paper single age activities club example girls
additional password latest something road gift question changes night ca hard texas oct pay four status browse
issue range building seller court february always result audio light write war nov offer blue groups al easy given
files event release analysis request fax china making picture needs possible might professional yet month major star
areas future space committee hand sun cards problems london washington meeting rss become interest id child keep enter
california share similar garden schools million added reference companies listed baby learning energy run
delivery net popular term film stories put computers journal reports co try welcome central images president notice
god original head radio until cell color self council away includes track australia discussion archive once others
entertainment agreement format least society months log safety friends sure faq trade edition cars messages marketing
tell further updated association able having provides david fun already green studies close common drive specific
several gold feb living sep collection called short arts lot ask display limited powered solutions means director
daily beach past natural whether due et electronics five upon period planning database says official weather mar land
average done technical window france pro region island record direct conference environment records st
district calendar costs style url front statement update parts aug ever downloads early miles sound resource present
applications either ago document word works material bill apr written talk federal hosting rules final tickets
thing centre requirements via cheap kids finance true minutes else mark third rock gifts europe reading topics bad
individual tips plus auto cover usually edit together videos percent fast function fact unit getting global tech
meet far economic en player projects often subscribe submit germany amount watch included feel though bank
risk thanks everything deals various words linux jul production commercial james weight town heart advertising
received choose treatment newsletter archives points knowledge magazine error camera jun currently construction
toys registered clear golf receive domain methods chapter makes protection policies loan wide beauty manager india
position taken sort listings models michael known half cases step engineering florida simple quick none wireless
license paul friday lake whole annual published later basic shows corporate church method purchase customers
active response practice hardware figure materials fire holiday chat enough designed along among death writing speed
html countries loss face brand discount higher effects created remember standards oil bit yellow political increase
advertise kingdom base near environmental thought stuff french storage steel stainless tape wire filament printer pack
kit set tool tools drill bit bits screw screws nut nuts bolt bolts washer washers glove gloves safety mask filter
valve pump motor switch battery batteries charger cable cord adapter plug socket light lamp bulb led meter gauge
sensor probe thermometer scale caliper ruler level clamp vise wrench pliers hammer saw blade blades knife cutter
sandpaper abrasive disc wheel brush paint coating adhesive glue epoxy sealant silicone rubber plastic nylon acrylic
aluminum brass copper carbon titanium zinc iron metal alloy tube tubing pipe hose fitting fittings connector
coupling elbow tee flange gasket seal ring bearing bearings spring pin pins rod bar sheet plate roll rolls foil film
label labels marker pen lab beaker flask bottle jar container bag bags bin tray rack shelf cabinet cart hook hooks
holder mount bracket stand base cover case lid cap tip nozzle
"""

# ---------------------------------------------------------------------------------------------- helpers
def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux) in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (``/proc/self/clear_refs`` 5); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def hwm_bytes() -> int:
    """VmHWM (peak RSS since the last reset) of this process."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return peak_rss_bytes()


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def short_number(value: int) -> str:
    """``10000`` -> ``1e4``; other numbers as they are."""
    exponent = round(math.log10(value)) if value > 0 else 0
    return f"1e{exponent}" if value == 10 ** exponent and exponent >= 2 else str(value)


def parse_point(text: str) -> tuple[int, int]:
    items, _, rows = text.lower().partition("x")
    if not rows:
        raise argparse.ArgumentTypeError(f"a point is ITEMSxROWS, e.g. 1e4x1e5; got {text!r}")
    return int(float(items)), int(float(rows))


def point_label(items: int, rows: int) -> str:
    return f"{short_number(items)} x {short_number(rows)}"


def parse_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def quickstart_data_args() -> dict:
    """``data.init_args`` of configs/quickstart.yaml without ``data_dir`` (set per point)."""
    import yaml

    args = dict(yaml.safe_load(QUICKSTART.read_text())["data"]["init_args"])
    args.pop("data_dir", None)
    return args


# ---------------------------------------------------------------------------------------------- generator
def generate(folder: str | Path, num_items: int, num_rows: int, seed: int = 0, zipf: float = 0.8,
             codebook_size: int = 256, title_words: tuple[int, int] = (7, 17), description_sentences: int = 10,
             eval_fraction: float = 0.05, category: str = CATEGORY, text: str = "english") -> dict:
    """Write a synthetic catalog and its splits in the MiniOneRec layout (what ``load_rec_data`` reads).

    Items get distinct SIDs of 3 levels (a 4th only when ``codebook_size ** 3 < 2 * num_items``) drawn
    uniformly without replacement from the ``codebook_size ** levels`` codes, so every level uses the whole
    codebook once the catalog has a few thousand items. Titles are ``title_words`` words plus a model code
    (about 72 characters; real: 75); descriptions are ``description_sentences`` sentences from a fixed pool
    of 2,000, stored as a Python-list repr as MiniOneRec does (about 670 characters; real: 635-670).
    Words (``text="english"``) are drawn with ``p ~ 1 / rank`` from :data:`ENGLISH_WORDS` followed by 20,000
    pseudo-words (brand and model names): at a few thousand items the data-trained BPE then gives the
    real Industrial numbers (frame 74 tokens, title 32, SID-history prompt 90 vs 86 real).
    ``text="pseudo"`` draws uniformly from 3,000 pseudo-words only, which the BPE compresses badly
    (framed prompts 2-2.5x as long). Users have as many rows as the real Industrial train split's users
    (:data:`REAL_ROWS_PER_USER`); each user's items are drawn independently with popularity
    ``p ~ rank ** -zipf`` (rank order shuffled over item ids), and the user's rows are the sliding windows
    of at most 10 history items over them, so history lengths follow the real distribution. The first
    ``num_rows`` rows are train, the next ``eval_fraction * num_rows`` valid, then test.

    Returns:
        Statistics of what was written (rows, users, mean history length, SID levels, distinct tokens).
    """
    import numpy as np

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    levels = 3
    while codebook_size ** levels < 2 * num_items:
        levels += 1
    # -- the catalog: distinct codes, titles, descriptions
    codes = rng.choice(codebook_size ** levels, size=num_items, replace=False)
    digits = np.stack([(codes // codebook_size ** (levels - 1 - level)) % codebook_size for level in range(levels)], 1)
    level_tokens = [[f"<{chr(97 + level)}_{code}>" for code in range(codebook_size)] for level in range(levels)]
    sids = ["".join(level_tokens[level][code] for level, code in enumerate(row)) for row in digits.tolist()]
    token_lists = [[level_tokens[level][code] for level, code in enumerate(row)] for row in digits.tolist()]
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    pseudo = ["".join(letters[rng.integers(0, 26, size=n)]) for n in rng.integers(3, 11, size=20_000)]
    if text == "english":  # English words first, then pseudo-words (brands, model names), p ~ 1 / rank
        vocabulary = list(dict.fromkeys(ENGLISH_WORDS.split())) + pseudo
        weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    elif text == "pseudo":  # pseudo-words only, uniform: text a data-trained BPE compresses badly
        vocabulary, weights = pseudo[:3000], np.ones(3000)
    else:
        raise ValueError(f"text must be 'english' or 'pseudo', got {text!r}")
    weights /= weights.sum()

    def phrases(count: int, low: int, high: int, capitalize: bool) -> list[str]:
        lengths = rng.integers(low, high + 1, size=count)
        words = rng.choice(len(vocabulary), size=int(lengths.sum()), p=weights).tolist()
        ends = np.cumsum(lengths).tolist()
        shaped = [w.capitalize() for w in vocabulary] if capitalize else vocabulary
        return [" ".join([shaped[w] for w in words[end - n:end]]) for n, end in zip(lengths.tolist(), ends)]

    # a title = a head phrase + a tail phrase from fixed pools (a few lookups per item: fast at 10^6 items)
    low, high = title_words
    heads = phrases(20_000, low // 2, high // 2, True)
    tails = phrases(20_000, low - low // 2, high - high // 2, True)
    head_ids = rng.integers(0, len(heads), size=num_items).tolist()
    tail_ids = rng.integers(0, len(tails), size=num_items).tolist()
    titles = [f"{heads[h]} {tails[t]} {i:05X}".strip() for i, (h, t) in enumerate(zip(head_ids, tail_ids))]
    pool = [phrase.capitalize() + "." for phrase in phrases(2000, 8, 16, False)]
    # -- users and their windows
    num_eval = max(1, round(eval_fraction * num_rows))
    total_rows = num_rows + 2 * num_eval
    per_user = np.array(list(REAL_ROWS_PER_USER)), np.array(list(REAL_ROWS_PER_USER.values()), dtype=float)
    mean_rows = float((per_user[0] * per_user[1]).sum() / per_user[1].sum())
    user_rows = rng.choice(per_user[0], size=int(total_rows / mean_rows * 1.2) + 10,
                           p=per_user[1] / per_user[1].sum())
    while user_rows.sum() < total_rows:  # (the 1.2 margin makes this rare)
        user_rows = np.concatenate([user_rows, user_rows])
    cut = int(np.searchsorted(np.cumsum(user_rows), total_rows)) + 1
    user_rows = user_rows[:cut]
    user_rows[-1] -= int(user_rows.sum() - total_rows)  # the last user is cut so that the total is exact
    user_rows = user_rows[user_rows > 0]
    popularity = np.arange(1, num_items + 1, dtype=float) ** -zipf
    rank_to_item = rng.permutation(num_items)
    sequence_lengths = user_rows + 1
    flat = rank_to_item[rng.choice(num_items, size=int(sequence_lengths.sum()), p=popularity / popularity.sum())]
    starts = np.concatenate([[0], np.cumsum(sequence_lengths)[:-1]])
    row_user = np.repeat(np.arange(len(user_rows)), user_rows)
    row_position = np.arange(total_rows) - np.repeat(np.cumsum(user_rows) - user_rows, user_rows) + 1  # 1..r
    row_end = starts[row_user] + row_position  # target index in flat; history = flat[begin:end]
    row_begin = starts[row_user] + np.maximum(0, row_position - MAX_HISTORY)
    # -- write (staging folder, then one rename)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        shutil.rmtree(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    for sub in ("index", "info", "train", "valid", "test"):
        (staging / sub).mkdir()
    (staging / "index" / f"{category}.index.json").write_text(
        json.dumps({str(i): tokens for i, tokens in enumerate(token_lists)}), encoding="utf-8")
    description_chars = 0
    with open(staging / "index" / f"{category}.item.json", "w", encoding="utf-8") as handle:
        handle.write("{\n")
        for first in range(0, num_items, 50_000):
            last = min(num_items, first + 50_000)
            chosen = rng.integers(0, len(pool), size=(last - first, description_sentences)).tolist()
            # MiniOneRec's list repr; only letters, spaces and periods, so neither repr nor JSON escapes anything
            descriptions = ["['" + " ".join([pool[s] for s in row]) + "']" for row in chosen]
            description_chars += sum(map(len, descriptions))
            handle.write(",\n".join(
                f'  "{i}": {{\n    "title": "{titles[i]}",\n    "description": "{description}",\n'
                f'    "brand": "Brand{i % 997}",\n    "categories": ""\n  }}'
                for i, description in zip(range(first, last), descriptions)))
            handle.write(",\n" if last < num_items else "\n")
        handle.write("}\n")
    with open(staging / "info" / f"{category}{SUFFIX}.txt", "w", encoding="utf-8") as handle:
        handle.writelines(f"{sid}\t{title}\t{i}\n" for i, (sid, title) in enumerate(zip(sids, titles)))
    import csv

    title_repr = ["'" + title + "'" for title in titles]  # = repr(): no quotes or backslashes in them
    sid_repr = ["'" + sid + "'" for sid in sids]
    id_text = [str(i) for i in range(num_items)]
    flat_items = flat.tolist()
    begins, ends, users = row_begin.tolist(), row_end.tolist(), row_user.tolist()
    bounds = {"train": (0, num_rows), "valid": (num_rows, num_rows + num_eval),
              "test": (num_rows + num_eval, total_rows)}
    for split, (first, last) in bounds.items():
        with open(staging / split / f"{category}{SUFFIX}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["user_id", "history_item_title", "item_title", "history_item_id", "item_id",
                             "history_item_sid", "item_sid"])
            rows = []
            for row in range(first, last):
                history = flat_items[begins[row]:ends[row]]
                target = flat_items[ends[row]]
                rows.append((f"A{users[row]}", "[" + ", ".join([title_repr[i] for i in history]) + "]", titles[target],
                             "[" + ", ".join([id_text[i] for i in history]) + "]", target,
                             "[" + ", ".join([sid_repr[i] for i in history]) + "]", sids[target]))
                if len(rows) == 50_000:
                    writer.writerows(rows)
                    rows = []
            writer.writerows(rows)
    history_lengths = (row_end - row_begin)[:num_rows]
    stats = {"items": num_items, "train_rows": num_rows, "valid_rows": num_eval, "test_rows": num_eval,
             "users": int(len(user_rows)), "mean_history": round(float(history_lengths.mean()), 2),
             "history_1_to_10": np.bincount(history_lengths, minlength=MAX_HISTORY + 1)[1:].tolist(),
             "sid_levels": levels, "distinct_tokens_per_level": [int(len(np.unique(digits[:, level])))
                                                                  for level in range(levels)],
             "distinct_prefixes_per_level": [int(len(np.unique(codes // codebook_size ** (levels - 1 - level))))
                                             for level in range(levels)],
             "items_in_train": int(len(np.unique(flat[: int(row_end[num_rows - 1]) + 1]))),
             "seed": seed, "zipf": zipf, "title_words": list(title_words),
             "description_sentences": description_sentences, "text": text,
             "mean_title_chars": round(sum(map(len, titles)) / num_items, 1),
             "mean_description_chars": round(description_chars / num_items, 1),
             "bytes": {sub: sum(p.stat().st_size for p in (staging / sub).iterdir()) for sub in
                       ("index", "info", "train", "valid", "test")}}
    os.replace(staging, folder)
    return stats


# ---------------------------------------------------------------------------------------------- child stages
def _datamodule(args, **overrides):
    from rec_lightning.data.datamodule import RecDataModule

    kwargs = {**quickstart_data_args(), "data_dir": args.folder, "category": args.category, "cache_dir": args.cache,
              **overrides}
    return RecDataModule(**kwargs)


def child_generate(args) -> dict:
    items, rows = parse_point(args.point)
    before = rss_bytes()
    start = time.perf_counter()
    stats = generate(args.folder, items, rows, seed=args.seed, zipf=args.zipf, title_words=parse_range(args.title_words),
                     description_sentences=args.description_sentences, category=args.category, text=args.text)
    seconds = time.perf_counter() - start
    (Path(args.folder) / "synthetic.json").write_text(json.dumps({**stats, "seconds": seconds}, indent=1) + "\n")
    size = sum(stats["bytes"].values())
    note = (f"{size / 2**20:,.0f} MiB on disk, {stats['users']:,} users, mean history {stats['mean_history']}, "
            f"SID levels {stats['sid_levels']} (distinct tokens "
            f"{'/'.join(map(str, stats['distinct_tokens_per_level']))})")
    return {"seconds": seconds, "rss_before": before, "note": note, "stats": stats}


def child_load(args) -> dict:
    from rec_lightning.data.records import load_rec_data

    before = rss_bytes()
    start = time.perf_counter()
    data = load_rec_data(args.folder, args.category, ("train",))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_before": before,
            "note": f"{len(data.splits['train']):,} rows + catalog of {len(data.catalog):,} items"}


def child_bpe_train(args) -> dict:
    dm = _datamodule(args)
    dm.catalog  # noqa: B018 (loaded before the clock starts)
    cached = any((Path(args.cache) / "tokenizers").glob("bpe-*/tokenizer_check.json"))
    before = rss_bytes()
    start = time.perf_counter()
    tokenizer = dm.tokenizer
    seconds = time.perf_counter() - start
    what = "cache hit: loaded, NOT trained" if cached else "BPE trained on titles + descriptions, cached"
    return {"seconds": seconds, "rss_before": before,
            "note": f"{what}; {len(tokenizer):,} tokens with the SID tokens (catalog load untimed)"}


def child_tokenize(args) -> dict:
    dm = _datamodule(args)
    before = rss_bytes()
    start = time.perf_counter()
    dm.setup("fit")
    seconds = time.perf_counter() - start
    train, valid = dm.datasets["train"], dm.datasets["valid"]
    tokens = int(train.lengths.sum())
    return {"seconds": seconds, "rss_before": before,
            "note": f"setup('fit') with the BPE cached: {len(train):,} train examples ({tokens / len(train):.0f} "
                    f"tokens each), {len(valid):,} valid"}


def child_trie(args) -> dict:
    from rec_lightning.generation.trie import SIDTrie
    from rec_lightning.sids.codec import ItemCatalog

    catalog = ItemCatalog.from_data_dir(args.folder, args.category)
    token_ids = {token: i for i, token in enumerate(catalog.sid_tokens)}
    before = rss_bytes()
    start = time.perf_counter()
    trie = SIDTrie.from_catalog(catalog, token_ids, eos_token_id=len(token_ids))
    seconds = time.perf_counter() - start
    nodes = "/".join(str(t.shape[0]) for t in trie.tokens)
    return {"seconds": seconds, "rss_before": before,
            "note": f"{trie.num_items:,} SIDs, nodes per depth {nodes} (catalog load untimed)"}


def child_decode(args) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rec_lightning.generation.decoding import constrained_beam_search
    from rec_lightning.generation.trie import SIDTrie

    dm = _datamodule(args)
    tokenizer = dm.tokenizer
    batch = next(iter(dm.generation_dataloader("valid", limit=16, batch_size=16)))
    start = time.perf_counter()
    trie = SIDTrie.from_catalog(dm.catalog, tokenizer.get_vocab(), tokenizer.eos_token_id)
    trie_seconds = time.perf_counter() - start
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).eval()
    before = rss_bytes()
    start = time.perf_counter()
    out = constrained_beam_search(model, batch["input_ids"], batch["attention_mask"], trie, num_beams=50)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    constrained_beam_search(model, batch["input_ids"], batch["attention_mask"], trie, num_beams=50)
    again = time.perf_counter() - start
    found = int((out.items >= 0).sum())
    return {"seconds": seconds, "rss_before": before,
            "note": f"16 prompts x 50 beams, prompt length {batch['input_ids'].shape[1]}, vocab {len(tokenizer):,}; "
                    f"second call {again:.2f} s; trie build {trie_seconds:.2f} s (untimed); {found} items returned"}


def child_collaborative(args) -> dict:
    from rec_lightning.data.collaborative import ppmi_svd_vectors
    from rec_lightning.data.records import load_rec_data

    data = load_rec_data(args.folder, args.category, ("train",))
    records = data.splits["train"]
    before = rss_bytes()
    start = time.perf_counter()
    vectors = ppmi_svd_vectors(records, num_items=max(data.catalog.item_ids) + 1, dim=32)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_before": before,
            "note": f"[{vectors.shape[0]:,}, {vectors.shape[1]}] vectors from {len(records):,} rows (load untimed)"}


def child_memory(args, trace: bool) -> dict:
    """The steps of ``RecDataModule.setup("fit")`` one by one, with memory checkpoints between them."""
    import gc
    import random
    import tracemalloc

    from rec_lightning.data.dataset import RecDataset
    from rec_lightning.data.records import RecData, read_split, split_warnings
    from rec_lightning.data.sampling import sample_task_mix
    from rec_lightning.data.tasks import build_examples, next_item_example
    from rec_lightning.files.layout import find_split_csv
    from rec_lightning.sids.codec import ItemCatalog

    dm = _datamodule(args)
    gc.collect()
    steps: list[dict] = []
    can_reset = reset_peak_rss()
    if trace:
        tracemalloc.start(1)
    state = {"snapshot": tracemalloc.take_snapshot() if trace else None}
    state.update(rss=rss_bytes(), traced=tracemalloc.get_traced_memory()[0] if trace else 0,
                 blocks=sys.getallocatedblocks())
    start_rss = state["rss"]

    def checkpoint(name: str, seconds: float, count: int | None = None, unit: str = "") -> None:
        gc.collect()
        entry = {"step": name, "seconds": seconds, "count": count, "unit": unit}
        rss = rss_bytes()
        entry["rss_delta"] = rss - state["rss"]
        entry["step_peak_over_start"] = (hwm_bytes() - state["rss"]) if can_reset else None
        blocks = sys.getallocatedblocks()  # live pymalloc/PyMem blocks: Python objects, whatever the RSS says
        entry["blocks_delta"] = blocks - state["blocks"]
        state["blocks"] = blocks
        if trace:
            # measured while the previous snapshot still exists, as it did when the baseline was taken: a
            # snapshot's own Python objects are traced, so they must be in both or in neither
            current, peak = tracemalloc.get_traced_memory()
            entry["traced_delta"] = current - state["traced"]
            entry["traced_peak_over_start"] = peak - state["traced"]
            snapshot = tracemalloc.take_snapshot()
            top = [s for s in snapshot.compare_to(state["snapshot"], "lineno")
                   if s.size_diff > 0 and Path(s.traceback[0].filename).name != "tracemalloc.py"]
            entry["top_lines"] = [(f"{Path(s.traceback[0].filename).name}:{s.traceback[0].lineno}", s.size_diff,
                                   s.count_diff) for s in top[:4]]
            state["snapshot"] = snapshot
            gc.collect()
            state["traced"] = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        state["rss"] = rss
        steps.append(entry)
        print(json.dumps(entry), flush=True)  # in the stage's log, also when it runs out of time
        reset_peak_rss()

    t = time.perf_counter()
    catalog = ItemCatalog.from_data_dir(args.folder, args.category)
    checkpoint("catalog (ItemCatalog: items, titles, descriptions, SID index)", time.perf_counter() - t,
               len(catalog), "item")
    t = time.perf_counter()
    records = read_split(find_split_csv(args.folder, "train", args.category), catalog, "train")
    checkpoint("train records (SequenceRecord per CSV row)", time.perf_counter() - t, len(records), "row")
    t = time.perf_counter()
    warnings = split_warnings(records, catalog)
    checkpoint("split_warnings (transient)", time.perf_counter() - t)
    dm.data = RecData(Path(args.folder), args.category, catalog, {"train": records}, warnings)
    t = time.perf_counter()
    tokenizer = dm.tokenizer
    prompt_label_ids = dm.sid_token_ids if dm.history_loss else None
    checkpoint("tokenizer (cached BPE + SID tokens; Rust memory only in RSS)", time.perf_counter() - t,
               len(tokenizer), "token")
    by_task = {}
    for task, weight in dm.train_tasks.items():
        if weight > 0:
            t = time.perf_counter()
            by_task[task] = build_examples(task, records, catalog, dm.category_name)
            checkpoint(f"examples {task} (Example objects + prompt strings)", time.perf_counter() - t,
                       len(by_task[task]), "example")
    t = time.perf_counter()
    mix = sample_task_mix(by_task, dm.train_tasks, dm.seed)
    random.Random(dm.seed).shuffle(mix)
    del by_task
    checkpoint("task mix list (by-task lists freed)", time.perf_counter() - t, len(mix), "example")
    t = time.perf_counter()
    train = RecDataset(mix, tokenizer, dm.max_length, with_response=dm.train_format == "sft",
                       prompt_label_ids=prompt_label_ids)
    tokens = int(train.lengths.sum())
    checkpoint("train RecDataset (token id lists; peak = tokenization)", time.perf_counter() - t, tokens, "token")
    del mix
    t = time.perf_counter()
    checkpoint("mix list freed (RecDataset keeps its own copy)", time.perf_counter() - t)
    t = time.perf_counter()
    trimmed = _malloc_trim()
    checkpoint(f"malloc_trim(0): free C heap given back to the OS{'' if trimmed else ' (unavailable)'}",
               time.perf_counter() - t)
    t = time.perf_counter()
    valid_records = read_split(find_split_csv(args.folder, "valid", args.category), catalog, "valid")
    valid = RecDataset([next_item_example(r, dm.category_name, dm.next_item_task) for r in valid_records], tokenizer,
                       dm.max_length)
    assert len(valid) == len(valid_records)
    checkpoint("valid records + examples + token ids", time.perf_counter() - t, len(valid_records), "row")
    if trace:
        tracemalloc.stop()
    result = {"rows": len(records), "items": len(catalog), "train_examples": len(train), "train_tokens": tokens,
              "tasks": {task: w for task, w in dm.train_tasks.items() if w > 0}, "max_length": dm.max_length,
              "history_loss": dm.history_loss, "start_rss": start_rss, "end_rss": rss_bytes(), "steps": steps,
              "peak_reset": can_reset, "trace": trace}
    if trace:
        retained = sum(s["traced_delta"] for s in steps) / len(records)
        note = f"tracemalloc breakdown (steps slowed by tracing): {retained:,.0f} Python bytes retained per train row"
    else:
        note = f"RSS breakdown: {(result['end_rss'] - start_rss) / len(records):,.0f} B RSS retained per train row"
    return {"seconds": sum(s["seconds"] for s in steps), "rss_before": start_rss, "note": note + " (breakdown file)",
            "breakdown": result}


def _malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: what the C heap holds free but has not returned shows up as a drop in RSS."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) or True)
    except (OSError, AttributeError):
        return False


CHILDREN = {"generate": child_generate, "load": child_load, "bpe-train": child_bpe_train, "tokenize": child_tokenize,
            "trie": child_trie, "decode": child_decode, "collaborative": child_collaborative,
            "memory": lambda a: child_memory(a, trace=False), "memory-trace": lambda a: child_memory(a, trace=True)}


def run_child(args) -> None:
    result = CHILDREN[args.child](args)
    result["peak_rss"] = peak_rss_bytes()
    Path(args.result).write_text(json.dumps(result) + "\n")


# ---------------------------------------------------------------------------------------------- parent
def run_process(command: list[str], timeout: float, log_path: Path, env: dict | None = None,
                cwd: Path | None = None) -> tuple[str, float, int, int]:
    """Run ``command`` in its own session; ``(status, wall seconds, exit code, peak RSS bytes)``."""
    with open(log_path, "w") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   start_new_session=True)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                wall = time.perf_counter() - start
                process.returncode = os.waitstatus_to_exitcode(status)
                return ("ok" if process.returncode == 0 else "error"), wall, process.returncode, usage.ru_maxrss * 1024
            if time.perf_counter() - start > timeout:
                os.killpg(process.pid, signal.SIGKILL)
                _, status, usage = os.wait4(process.pid, 0)
                return "timeout", time.perf_counter() - start, -9, usage.ru_maxrss * 1024
            time.sleep(0.05)


def last_error(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    useful = [line for line in lines if "Error" in line or "error" in line] or lines
    return (useful[-1] if useful else "no output")[:160].replace("|", "/")


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.results: list[dict] = []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                    "HF_HUB_OFFLINE": "1"}
        if args.threads:  # torch's pool and the Rust tokenizers' pool
            self.env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                            RAYON_NUM_THREADS=str(args.threads))
            if args.threads == 1:
                self.env["TOKENIZERS_PARALLELISM"] = "false"

    # -- table
    def record(self, label: str, stage: str, result: dict) -> None:
        result = {"point": label, "stage": stage, **result}
        self.results.append(result)
        seconds = result.get("seconds")
        shown = "-" if seconds is None else (f">= {seconds:.0f}" if result["status"] == "timeout" else f"{seconds:.2f}")
        threads = f", threads {self.args.threads}" if self.args.threads else ""
        note = f"load {result['load']:.1f}{threads}; {result.get('note', '')}".rstrip("; ")
        line = (f"| {label} | {stage} | {shown} | {mib(result.get('peak_rss'))} | {mib(result.get('rss_before'))} | "
                f"{result['status']} | {note.replace('|', '/')} |\n")
        print(line, end="", flush=True)
        if self.args.table != "-" and result["status"] != "reused":  # a reused folder's row is already there
            table = Path(self.args.table)
            if not table.exists() or not table.read_text().strip():
                table.parent.mkdir(parents=True, exist_ok=True)
                table.write_text(f"Written by `benchmarks/scaling.py` (see its docstring). Machine: "
                                 f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.\n"
                                 "`load` in the notes: 1-minute load average when the stage started; `threads`: "
                                 "OMP_NUM_THREADS and RAYON_NUM_THREADS of the stage.\n\n" + HEADER)
            with open(table, "a") as handle:
                handle.write(line)

    # -- stages
    def child(self, stage: str, point: str, folder: Path, cache: Path, work: Path) -> dict:
        result_path = work / f"{stage}.json"
        result_path.unlink(missing_ok=True)
        a = self.args
        command = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--point", point, "--folder",
                   str(folder), "--cache", str(cache), "--result", str(result_path), "--category", CATEGORY,
                   "--seed", str(a.seed), "--zipf", str(a.zipf), "--title_words", a.title_words,
                   "--description_sentences", str(a.description_sentences), "--text", a.text]
        status, wall, code, peak = run_process(command, a.timeout, work / f"{stage}.log", env=self.env, cwd=work)
        if status == "ok":
            result = json.loads(result_path.read_text())
            return {**result, "status": "ok", "wall": wall}
        if status == "timeout":
            note = f"killed after {a.timeout:.0f} s"
        else:
            note = f"exit {code}: {last_error(work / f'{stage}.log')}"
        return {"status": status, "seconds": wall, "peak_rss": peak, "note": note}

    def command(self, stage: str, command: list[str], work: Path, env: dict | None = None, note: str = "") -> dict:
        status, wall, code, peak = run_process(command, self.args.timeout, work / f"{stage}.log", env=env or self.env,
                                               cwd=work)
        if status == "timeout":
            note = f"killed after {self.args.timeout:.0f} s"
        elif status == "error":
            note = f"exit {code}: {last_error(work / f'{stage}.log')}"
        return {"status": status, "seconds": wall, "peak_rss": peak, "note": note}

    def run_point(self, items: int, rows: int) -> None:
        a = self.args
        label = point_label(items, rows)
        point = f"{items}x{rows}"
        work = Path(a.work_dir) / f"synthetic-{point}-seed{a.seed}"
        folder, cache = work / "data", work / "cache"
        work.mkdir(parents=True, exist_ok=True)
        cache.mkdir(exist_ok=True)
        marker = folder / "synthetic.json"
        wanted = {"seed": a.seed, "zipf": a.zipf, "title_words": list(parse_range(a.title_words)),
                  "description_sentences": a.description_sentences, "text": a.text}
        reuse = marker.is_file() and all(json.loads(marker.read_text()).get(k) == v for k, v in wanted.items())
        if reuse:
            stats = json.loads(marker.read_text())
            self.record(label, "generate", {"status": "reused", "seconds": stats["seconds"], "load": os.getloadavg()[0],
                                            "note": f"reused (generated earlier in {stats['seconds']:.1f} s)"})
        else:
            shutil.rmtree(cache, ignore_errors=True)  # a tokenizer of other data would be a stale hit
            cache.mkdir()
            load = os.getloadavg()[0]
            result = self.child("generate", point, folder, cache, work)
            self.record(label, "generate", {**result, "load": load})
            if result["status"] != "ok":
                return
        stages = list(a.stages)
        if NEEDS_BPE & set(stages) and not any((cache / "tokenizers").glob("bpe-*/tokenizer_check.json")):
            stages.insert(0, "bpe-train")
        for stage in stages:
            load = os.getloadavg()[0]
            skip = self.skip_reason(stage, items, rows)
            if skip:
                self.record(label, stage, {"status": "skipped", "load": load, "note": skip})
                continue
            if stage in CHILDREN:
                result = self.child(stage, point, folder, cache, work)
            elif stage == "check-data":
                result = self.command(stage, [sys.executable, "-m", "rec_lightning", "check-data", "--data_dir",
                                              str(folder), "--category", CATEGORY], work,
                                      note="whole command (start-up + imports included), all three splits")
            elif stage == "fast_dev_run":
                root = work / "fit"
                shutil.rmtree(root, ignore_errors=True)
                result = self.command(stage, [sys.executable, "-m", "rec_lightning", "fit", "--config", str(QUICKSTART),
                                              "--data.data_dir", str(folder), "--data.category", CATEGORY,
                                              "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(root)],
                                      work, env={**self.env, "REC_LIGHTNING_CACHE": str(cache)},
                                      note="whole command (start-up + imports included), BPE cached")
            elif stage == "build-sids":
                import numpy as np

                vectors = work / "random_vectors.npy"
                if not vectors.exists():
                    np.save(vectors, np.random.default_rng(a.seed).standard_normal((items, 32)).astype(np.float32))
                out = work / "built_sids"
                shutil.rmtree(out, ignore_errors=True)
                iters = [] if a.build_sids_iters is None else ["--kmeans_iters", str(a.build_sids_iters)]
                result = self.command(stage, [sys.executable, "-m", "rec_lightning", "build-sids", "--embeddings",
                                              str(vectors), "--output", str(out), "--category", CATEGORY,
                                              "--method", "rq-kmeans-balanced", "--progress", "false", *iters], work,
                                      note="whole command, rq-kmeans-balanced 3 x 256 on random 32-dim vectors, "
                                           f"kmeans_iters {a.build_sids_iters or 'default (100)'}")
                if a.build_sids_iters is not None:
                    stage = f"build-sids(iters={a.build_sids_iters})"  # not comparable with the default: own slope
            else:
                raise ValueError(stage)
            self.record(label, stage, {**result, "load": load})
            if "breakdown" in result:
                self.write_breakdown(label, stage, result["breakdown"])

    def skip_reason(self, stage: str, items: int, rows: int) -> str:
        if stage == "build-sids" and items > self.args.max_build_sids_items:
            return f"items > --max_build_sids_items {self.args.max_build_sids_items:.0e}"
        if stage == "fast_dev_run" and items + rows > self.args.max_fast_dev_run_size:
            return f"items + rows > --max_fast_dev_run_size {self.args.max_fast_dev_run_size:.0e}"
        return ""

    # -- breakdown
    def write_breakdown(self, label: str, stage: str, b: dict) -> None:
        rows = b["rows"]
        trace = b["trace"]
        lines = [f"\n### {label}, {stage} ({'tracemalloc: Python bytes' if trace else 'RSS checkpoints'}; "
                 f"{rows:,} train rows, {b['items']:,} items, {b['train_examples']:,} train examples, "
                 f"{b['train_tokens']:,} train tokens; tasks {b['tasks']}, max_length {b['max_length']}, "
                 f"history_loss {b['history_loss']})\n\n"]
        if trace:
            lines.append("| step | seconds (traced) | retained MiB | B per train row | B per unit | step peak over start MiB "
                         "| lines holding the new memory (size, blocks) |\n|---|---|---|---|---|---|---|\n")
        else:
            lines.append("| step | seconds | retained RSS MiB | B per train row | B per unit | step peak RSS over start MiB | "
                         "live Python blocks added |\n|---|---|---|---|---|---|---|\n")
        for s in b["steps"]:
            delta = s["traced_delta"] if trace else s["rss_delta"]
            peak = s["traced_peak_over_start"] if trace else s["step_peak_over_start"]
            unit = f"{delta / s['count']:,.1f} / {s['unit']}" if s.get("count") else "-"
            line = (f"| {s['step']} | {s['seconds']:.2f} | {delta / 2**20:,.1f} | {delta / rows:,.0f} | {unit} | "
                    f"{'-' if peak is None else f'{peak / 2**20:,.1f}'} |")
            if trace:
                held = "; ".join(f"{where} {size / 2**20:,.1f} MiB ({count:+,})" for where, size, count in s["top_lines"])
                line += f" {held} |"
            else:
                line += f" {s['blocks_delta']:+,} |"
            lines.append(line + "\n")
        if trace:
            lines.append(f"\nPython bytes retained by all steps: {sum(s['traced_delta'] for s in b['steps']) / rows:,.0f} "
                         "per train row (the RSS of this run also holds tracemalloc's own tables).\n")
        else:
            lines.append(f"\nRSS: {b['start_rss'] / 2**20:,.0f} MiB after imports, {b['end_rss'] / 2**20:,.0f} MiB at the "
                         f"end ({(b['end_rss'] - b['start_rss']) / rows:,.0f} B per train row).\n")
        text = "".join(lines)
        print(text)
        if self.args.table != "-":
            path = Path(self.args.breakdown) if self.args.breakdown else \
                Path(self.args.table).with_name(Path(self.args.table).stem + "_memory.md")
            if not path.exists():
                path.write_text("Written by `benchmarks/scaling.py --stages memory memory-trace`: the steps of "
                                "`RecDataModule.setup('fit')` (configs/quickstart.yaml's data arguments) one by one in "
                                "one process.\n")
            with open(path, "a") as handle:
                handle.write(text)


# ---------------------------------------------------------------------------------------------- slopes
def read_table(path: Path) -> list[dict]:
    """The ok rows of a results table (the last one of each point and stage)."""
    latest: dict[tuple[str, str], dict] = {}
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or " x " not in cells[0] or cells[5] != "ok":
            continue
        items, rows = (int(float(v)) for v in cells[0].split(" x "))
        latest[(cells[0], cells[1])] = {"items": items, "rows": rows, "stage": cells[1], "seconds": float(cells[2]),
                                        "peak": None if cells[3] == "-" else float(cells[3].replace(",", "")),
                                        "before": None if cells[4] == "-" else float(cells[4].replace(",", ""))}
    return list(latest.values())


def slopes(entries: list[dict]) -> list[str]:
    """Log-log slope of seconds and peak RSS between the two largest completed points of each stage."""
    lines = []
    by_stage: dict[str, list[dict]] = {}
    for entry in entries:
        by_stage.setdefault(entry["stage"], []).append(entry)
    for stage, points in by_stage.items():
        points = sorted(points, key=lambda e: (e["items"] * e["rows"], e["rows"]))
        if len(points) < 2:
            lines.append(f"{stage:<14} one completed point only")
            continue
        small, large = points[-2], points[-1]
        if small["items"] == large["items"] and small["rows"] != large["rows"]:
            axis, ratio = "rows (items fixed)", large["rows"] / small["rows"]
        elif small["rows"] == large["rows"] and small["items"] != large["items"]:
            axis, ratio = "items (rows fixed)", large["items"] / small["items"]
        else:
            axis, ratio = "items x rows (both changed)", large["items"] * large["rows"] / (small["items"] * small["rows"])
        time_slope = (math.log(large["seconds"] / small["seconds"]) / math.log(ratio)
                      if small["seconds"] > 0 and large["seconds"] > 0 else float("nan"))
        peak = (f"{math.log(large['peak'] / small['peak']) / math.log(ratio):+.2f}"
                if small["peak"] and large["peak"] else "-")
        if small.get("before") and large.get("before") and small["peak"] - small["before"] > 0 < large["peak"] - large["before"]:
            growth = (large["peak"] - large["before"]) / (small["peak"] - small["before"])
            peak += f" (of peak minus RSS before: {math.log(growth) / math.log(ratio):+.2f})"
        lines.append(f"{stage:<14} vs {axis:<28} {point_label(small['items'], small['rows'])} -> "
                     f"{point_label(large['items'], large['rows'])}: time slope {time_slope:+.2f}, peak RSS slope {peak}")
    return lines


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--points", nargs="+", default=["1e4x1e5", "1e5x1e5"], help="ITEMSxROWS, e.g. 1e5x1e6")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES + EXTRA_STAGES + ("bpe-train",))
    parser.add_argument("--table", default=str(REPO / "benchmarks" / "scaling_results.md"),
                        help="Markdown file the rows are appended to; '-' prints only")
    parser.add_argument("--breakdown", default=None, help="file of the memory breakdowns (default: <table>_memory.md)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per stage")
    parser.add_argument("--work_dir", default=None,
                        help="where the synthetic folders and caches live; given: kept and reused by later runs "
                             "(same point and generator settings); default: a temporary folder, removed at the end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zipf", type=float, default=0.8, help="item popularity p ~ rank ** -zipf")
    parser.add_argument("--title_words", default="7-17", help="words per title (uniform range)")
    parser.add_argument("--description_sentences", type=int, default=10, help="sentences per description")
    parser.add_argument("--text", choices=("english", "pseudo"), default="english",
                        help="words of titles and descriptions (see generate())")
    parser.add_argument("--max_build_sids_items", type=float, default=1e5)
    parser.add_argument("--build_sids_iters", type=int, default=None,
                        help="build-sids --kmeans_iters (default: the command's 100); the stage is then named "
                             "build-sids(iters=N)")
    parser.add_argument("--max_fast_dev_run_size", type=float, default=1e6,
                        help="skip fast_dev_run when items + rows exceed it")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS and RAYON_NUM_THREADS of every stage (1: TOKENIZERS_PARALLELISM=false "
                             "too; default: torch's and tokenizers' choice, one per core); on a shared "
                             "machine 1 avoids the spinning of torch's thread pool (decode ran 25x slower with 2 "
                             "threads beside another busy process)")
    parser.add_argument("--slopes", action="store_true", help="only print the slopes of --table")
    # internal: one stage in this fresh interpreter
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    for name in ("--point", "--folder", "--cache", "--result"):
        parser.add_argument(name, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--category", default=CATEGORY, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return
    if args.slopes:
        print("\n".join(slopes(read_table(Path(args.table)))))
        return
    points = [parse_point(p) for p in args.points]
    temporary = args.work_dir is None
    if temporary:
        args.work_dir = tempfile.mkdtemp(prefix="rec_lightning_scaling.")
    bench = Bench(args)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"work dir {args.work_dir}\n\n" + HEADER, end="", flush=True)
    try:
        for items, rows in points:
            bench.run_point(items, rows)
    finally:
        if temporary:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    if args.table != "-":
        entries = read_table(Path(args.table))
    else:
        entries = []
        for r in bench.results:
            if r["status"] == "ok":
                items, rows = parse_point(r["point"].replace(" ", ""))
                entries.append({"items": items, "rows": rows, "stage": r["stage"], "seconds": r["seconds"],
                                "peak": (r.get("peak_rss") or 0) / 2**20 or None,
                                "before": (r.get("rss_before") or 0) / 2**20 or None})
    print("\nlog-log slopes between the two largest completed points of each stage:")
    print("\n".join(slopes(entries)))


if __name__ == "__main__":
    main()

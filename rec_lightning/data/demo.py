"""The embedded demo data set: a small synthetic shop in the MiniOneRec layout, with real structure.

Items fall into topics (first SID level) and product lines (second level); titles name the topic's
product and the line's brand, so titles and SIDs agree. Each product line is an ordered chain
(starter kit -> refill -> upgrade ...). Users mostly move along a chain, sometimes repeat an item,
browse within their topic or drift to another topic. The next item is therefore predictable from
the history, and a model that learns the chains beats popularity. A few items share a SID on
purpose, as in the real data. Deterministic for a seed; all six files, same columns as upstream.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rec_lightning.errors import OutputExistsError

DEMO_CATEGORY = "Demo_Shop"
#: Written into every demo data folder: marks it as safe to regenerate.
DEMO_MARKER = "rec_lightning_demo.json"

_TOPICS = [
    ("Cordless Drill", "power tools"), ("Safety Gloves", "protective gear"), ("Duct Tape", "adhesives"),
    ("Lab Beaker", "lab glassware"), ("Digital Multimeter", "test instruments"), ("Shop Vacuum", "cleaning"),
    ("LED Work Light", "lighting"), ("Tool Chest", "storage"), ("Soldering Iron", "electronics"),
    ("Air Compressor", "pneumatics"), ("Caliper", "measuring tools"), ("Respirator Mask", "protective gear"),
]
_BRANDS = ["Acme", "Bolt", "Crest", "Dyna", "Ergo", "Forge", "Granite", "Helix", "Ion", "Jet", "Kraft", "Lumen"]
_STAGES = ["Starter Kit", "Refill Pack", "Pro Upgrade", "Accessory Set", "Replacement Part", "Carry Case",
           "Maintenance Kit", "Deluxe Bundle"]
_COLORS = ["Black", "Blue", "Red", "Yellow", "Gray", "Green"]


@dataclass(frozen=True)
class DemoItem:
    item_id: int
    tokens: tuple[str, str, str]
    title: str
    description: str
    brand: str
    topic: int
    line: int
    stage: int


def _make_items(rng: random.Random, num_topics: int, lines_per_topic: int, items_per_line: int,
                num_duplicate_sids: int) -> list[DemoItem]:
    items: list[DemoItem] = []
    topic_codes = rng.sample(range(64), num_topics)
    for topic in range(num_topics):
        product, area = _TOPICS[topic % len(_TOPICS)]
        line_codes = rng.sample(range(256), lines_per_topic)
        for line in range(lines_per_topic):
            brand = _BRANDS[(topic + line) % len(_BRANDS)]
            leaf_codes = rng.sample(range(256), items_per_line)
            for stage in range(items_per_line):
                color = _COLORS[rng.randrange(len(_COLORS))]
                title = f"{brand} {product} {_STAGES[stage % len(_STAGES)]}, {color} (Model {line + 1}{chr(65 + stage)})"
                description = str([f"{brand} {product.lower()} for {area}.", f"Part {stage + 1} of the {brand} line."])
                tokens = (f"<a_{topic_codes[topic]}>", f"<b_{line_codes[line]}>", f"<c_{leaf_codes[stage]}>")
                items.append(DemoItem(len(items), tokens, title, description, brand, topic, line, stage))
    # A few items share their SID with the item before them (as 31 real Industrial items do).
    for position in rng.sample(range(1, len(items)), num_duplicate_sids):
        prev = items[position - 1]
        if items[position].topic == prev.topic and items[position].line == prev.line:
            old = items[position]
            items[position] = DemoItem(old.item_id, prev.tokens, old.title, old.description, old.brand,
                                       old.topic, old.line, old.stage)
    return items


def _user_sequence(rng: random.Random, items: list[DemoItem], by_topic: dict[int, list[DemoItem]],
                   by_line: dict[tuple[int, int], list[DemoItem]], length: int) -> list[DemoItem]:
    topic = rng.randrange(len(by_topic))
    current = rng.choice(by_topic[topic])
    sequence = [current]
    while len(sequence) < length:
        roll = rng.random()
        chain = by_line[(current.topic, current.line)]
        if roll < 0.62:  # next step of the product line
            current = chain[(current.stage + 1) % len(chain)]
        elif roll < 0.74:  # buy the same item again
            pass
        elif roll < 0.92:  # another line of the same topic, from its start
            line = rng.randrange(len({k for k in by_line if k[0] == current.topic}))
            current = by_line[(current.topic, line)][rng.randrange(2)]
        else:  # drift to another topic
            current = rng.choice(items)
        sequence.append(current)
    return sequence


def check_replaceable(output_dir: str | Path) -> None:
    """Raise unless ``output_dir`` is missing, empty, or a demo data set written here before.

    Raises:
        OutputExistsError: it holds other files (e.g. real data), which the demo set would replace.
    """
    output_dir = Path(output_dir)
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise OutputExistsError(f"{output_dir} is a file, not a folder. Fix: choose another --output")
    if (output_dir / DEMO_MARKER).is_file() or not any(output_dir.iterdir()):
        return
    shown = ", ".join(sorted(p.name for p in output_dir.iterdir())[:5])
    raise OutputExistsError(f"{output_dir} already holds files the demo generator did not write ({shown}); writing "
                            "the demo data set there would replace them. Fix: choose a new or empty --output folder")


def make_demo_data(output_dir: str | Path, seed: int = 0, num_users: int = 500, num_topics: int = 12,
                   lines_per_topic: int = 5, items_per_line: int = 6, num_duplicate_sids: int = 3,
                   max_history: int = 10) -> Path:
    """Write the demo data set (category ``Demo_Shop``) into ``output_dir`` atomically.

    Args:
        output_dir: folder to create (its parent must be writable); an existing folder is replaced only
            if it is empty or an earlier demo data set (it holds ``rec_lightning_demo.json``).
        seed: everything is deterministic for a seed.
        num_users: users simulated; each has 6 to 20 interactions (about 11 windows each).
        num_topics, lines_per_topic, items_per_line: catalog shape (items = product of the three).
        num_duplicate_sids: items made to share a SID with a neighbour.
        max_history: history window, as upstream (10).

    Returns:
        ``output_dir`` as a Path.
    """
    rng = random.Random(seed)
    items = _make_items(rng, num_topics, lines_per_topic, items_per_line, num_duplicate_sids)
    by_topic: dict[int, list[DemoItem]] = {}
    by_line: dict[tuple[int, int], list[DemoItem]] = {}
    for item in items:
        by_topic.setdefault(item.topic, []).append(item)
        by_line.setdefault((item.topic, item.line), []).append(item)
    windows: list[tuple[float, str, list[DemoItem], DemoItem]] = []
    for user in range(num_users):
        start = rng.random() * 0.5
        sequence = _user_sequence(rng, items, by_topic, by_line, rng.randint(6, 20))
        times = sorted(start + rng.random() * 0.5 for _ in sequence)
        for i in range(1, len(sequence)):
            windows.append((times[i], f"U{user}", sequence[max(0, i - max_history):i], sequence[i]))
    windows.sort(key=lambda w: w[0])  # global chronological 8:1:1 split, as upstream
    n = len(windows)
    cut_train, cut_valid = int(n * 0.8), int(n * 0.9)
    splits = {"train": windows[:cut_train], "valid": windows[cut_train:cut_valid], "test": windows[cut_valid:]}
    files = {f"{split}/{DEMO_CATEGORY}.csv": _csv_text(rows) for split, rows in splits.items()}
    files[f"info/{DEMO_CATEGORY}.txt"] = "".join(f"{''.join(i.tokens)}\t{i.title}\t{i.item_id}\n" for i in items)
    files[f"index/{DEMO_CATEGORY}.index.json"] = json.dumps({str(i.item_id): list(i.tokens) for i in items})
    files[f"index/{DEMO_CATEGORY}.item.json"] = json.dumps(
        {str(i.item_id): {"title": i.title, "description": i.description, "brand": i.brand, "categories": ""}
         for i in items}, indent=2)
    return _write_tree_atomically(Path(output_dir), files)


def _csv_text(windows: list[tuple[float, str, list[DemoItem], DemoItem]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["user_id", "history_item_title", "item_title", "history_item_id", "item_id",
                     "history_item_sid", "item_sid"])
    for _, user, history, target in windows:
        writer.writerow([user, str([h.title for h in history]), target.title, str([h.item_id for h in history]),
                         target.item_id, str(["".join(h.tokens) for h in history]), "".join(target.tokens)])
    return buffer.getvalue()


def _write_tree_atomically(output_dir: Path, files: dict[str, str]) -> Path:
    check_replaceable(output_dir)
    files = {**files, DEMO_MARKER: json.dumps({"written_by": "rec_lightning make-demo-data",
                                               "category": DEMO_CATEGORY}) + "\n"}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    for relative, text in files.items():
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if output_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old.", dir=output_dir.parent))
        os.replace(output_dir, retired / "data")
        os.replace(staging, output_dir)
        _remove_tree(retired)
    else:
        os.replace(staging, output_dir)
    return output_dir


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

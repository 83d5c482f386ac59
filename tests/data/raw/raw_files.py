"""Tiny raw files in each exact published format, written by the tests (no network, no real data).

``REVIEWS`` rows are ``(user, item, unix seconds, rating)``; ``ITEMS`` maps an item key to its title,
description paragraphs, brand and category path. ``write_raw`` writes them as one format's review
and meta files, so the same logical data can be checked to give the same data folder in every format.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path


def write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def review_line(fmt: str, user: str, item: str, seconds: int, rating: float) -> str:
    if fmt == "amazon2023":
        return json.dumps({"rating": rating, "title": "Works well", "text": "Good <br />product.", "images": [],
                           "asin": item + "-V1", "parent_asin": item, "user_id": user, "timestamp": seconds * 1000,
                           "helpful_vote": 0, "verified_purchase": True})
    if fmt == "amazon2018":
        return json.dumps({"overall": rating, "verified": True, "reviewTime": "01 2, 2018", "reviewerID": user,
                           "asin": item, "style": {"Size:": " 1 Pack"}, "reviewerName": "Pat", "reviewText": "Fine.",
                           "summary": "Five Stars", "unixReviewTime": seconds})
    if fmt == "amazon2014":  # 2014 review files are JSON lines
        return json.dumps({"reviewerID": user, "asin": item, "reviewerName": "Pat", "helpful": [0, 0],
                           "reviewText": "Fine.", "overall": rating, "summary": "Good", "unixReviewTime": seconds,
                           "reviewTime": "01 2, 2014"})
    raise ValueError(fmt)


def meta_line(fmt: str, item: str, title: str, description: list[str], brand: str, path: list[str]) -> str:
    if fmt == "amazon2023":
        return json.dumps({"main_category": "Industrial & Scientific", "title": title, "average_rating": 4.5,
                           "rating_number": 12, "features": [], "description": description, "price": None, "images": [],
                           "videos": [], "store": brand, "categories": path, "details": {}, "parent_asin": item,
                           "bought_together": None})
    if fmt == "amazon2018":
        return json.dumps({"category": path, "tech1": "", "description": description, "fit": "", "title": title,
                           "also_buy": [], "tech2": "", "brand": brand, "feature": [], "rank": "", "also_view": [],
                           "main_cat": "Industrial & Scientific", "price": "", "asin": item, "imageURL": []})
    if fmt == "amazon2014":  # a Python literal, as published: single quotes, not JSON
        line = str({"asin": item, "title": title, "price": 12.99, "imUrl": "http://x/y.jpg",
                    "salesRank": {"Industrial & Scientific": 5}, "categories": [path],
                    "description": " ".join(description), "brand": brand})
        assert "'" in line and not line.startswith('{"')
        return line
    raise ValueError(fmt)


def write_raw(folder: Path, fmt: str, reviews: list[tuple], items: dict, gz: bool = False) -> tuple[Path, Path]:
    """Write ``reviews`` and ``items`` as format ``fmt``; returns ``(reviews_path, meta_path)``."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "table":
        reviews_path, meta_path = folder / "interactions.csv", folder / "items.csv"
        with reviews_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user", "item", "timestamp", "rating"])
            writer.writerows([u, i, t, r] for u, i, t, r in reviews)
        with meta_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["item", "title", "description", "brand", "categories"])
            writer.writerows([k, v[0], " ".join(v[1]), v[2], " > ".join(v[3])] for k, v in items.items())
        return reviews_path, meta_path
    suffix = ".jsonl.gz" if gz else ".jsonl"
    reviews_path = write_lines(folder / f"reviews{suffix}", [review_line(fmt, *r) for r in reviews], gz)
    meta_path = write_lines(folder / f"meta{suffix}", [meta_line(fmt, k, *v) for k, v in items.items()], gz)
    return reviews_path, meta_path


def item(title: str) -> tuple:
    return (title, [f"About {title}.", "Second paragraph."], "Acme", ["Industrial & Scientific", "Lab"])


# Two users, six items each, 10 s apart; U2 is listed first in the file, so U2 is user rank 0 and
# its items are indexed first. Items I1..I6 each have 2 interactions.
SPLIT_REVIEWS = [("U2", f"I{n}", 5 + 10 * n, 5.0) for n in range(1, 7)] + \
                [("U1", f"I{n}", 10 * n, 4.0) for n in range(1, 7)]
SPLIT_ITEMS = {f"I{n}": item(f"Item {n} Beaker") for n in range(1, 7)}


def cyclic_shop(num_users: int = 40, num_items: int = 30, per_user: int = 8) -> tuple[list[tuple], dict]:
    """Users walk the catalog in steps of 1 from a user-specific start, 1000 s apart (every item >= 5 times)."""
    reviews = [(f"user{u:03d}", f"B{(u + j) % num_items:04d}", 1_500_000_000 + 1000 * (u + 7 * j), 5.0)
               for u in range(num_users) for j in range(per_user)]
    return reviews, {f"B{i:04d}": item(f"Acme Lab Part {i}") for i in range(num_items)}

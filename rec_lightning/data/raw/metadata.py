"""Item metadata from the raw meta files: cleaned title, description, brand, categories, and the title rule.

Cleaning follows MiniOneRec (unescape HTML, drop ``"`` characters, keep items whose title has more
than one character and at most 20 words) without its defects: every HTML entity is unescaped (the
original only undid ``&quot;`` and ``&amp;``), tags are stripped, runs of whitespace become one space,
and descriptions become plain text (paragraphs joined by a space) instead of a list repr.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from rec_lightning.data.raw.formats import SPECS

_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACE_RE = re.compile(r"\s+")


def clean_field(text: object) -> str:
    """``'Ultra &amp; <b>Pro</b>\\n "Kit"'`` -> ``'Ultra & Pro Kit'``; lists are joined by a space."""
    if isinstance(text, (list, tuple)):
        text = " ".join(clean_field(part) for part in text)
    if not isinstance(text, str):
        return ""
    text = html.unescape(html.unescape(text))  # Amazon meta is often escaped twice (&amp;quot;)
    text = _TAG_RE.sub(" ", text).replace('"', "")
    return _SPACE_RE.sub(" ", text).strip()


def _categories(value: object) -> str:
    """Flat ``"A > B"`` text: 2014 stores a list of category paths, 2018/2023 one path."""
    if isinstance(value, str):
        return clean_field(value)
    if not isinstance(value, (list, tuple)):
        return ""
    if value and all(isinstance(v, (list, tuple)) for v in value):
        return " | ".join(" > ".join(clean_field(c) for c in path) for path in value)
    return " > ".join(clean_field(c) for c in value)


@dataclass(frozen=True)
class ItemMeta:
    """The cleaned fields written to ``item.json``; ``source_id`` is the raw item key (asin)."""

    source_id: str
    title: str
    description: str
    brand: str
    categories: str


def title_problem(title: str, max_title_words: int | None) -> str | None:
    """Why a cleaned title is unusable (MiniOneRec's rule), or None if it is usable."""
    if len(title) <= 1:
        return "no title" if not title else "one-character title"
    if max_title_words is not None and len(title.split()) > max_title_words:
        return f"title longer than {max_title_words} words"
    return None


def item_meta(fmt: str, key: str, record: dict) -> ItemMeta:
    """The cleaned metadata of one raw record of format ``fmt``."""
    spec = SPECS[fmt]
    return ItemMeta(key, clean_field(record.get("title")), clean_field(record.get("description")),
                    clean_field(record.get(spec.brand)), _categories(record.get(spec.categories)))

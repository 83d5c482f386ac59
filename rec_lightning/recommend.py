"""``Recommender``: top-K items for users' histories from any final checkpoint, in one call.

    from rec_lightning import Recommender

    recommender = Recommender.from_checkpoint("outputs/quickstart/final_checkpoint")
    print(recommender.recommend([[12, 7, 301]], k=5, as_frame=True))

It wires the pieces ``evaluate`` uses, in the same way, so its rankings are ``evaluate``'s for the
same rows and beam width: the checkpoint loaded by the same loader
(:func:`rec_lightning.modules.inference.load_checkpoint`: the checkpoint's tokenizer, verified against
the saved probes, the item catalog it carries or the given data folder's, the next-item prompt and
category name recorded in ``rec_lightning.json``), the data module's
tokenization (prompts cut from the left at the recorded ``max_length``), left padding,
:meth:`SIDTrie.from_catalog` and :func:`constrained_beam_search`. A history item is a catalog item
id, a SID (``"<a_1><b_2><c_3>"``) or an exact title; anything else raises :class:`UnknownItemError`
naming the user, the position and how to fix it.

This is an entry point like the commands (it sits above ``modules/`` and ``data/``), not a core file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch

from rec_lightning.errors import ConfigurationError
from rec_lightning.prompts import NEXT_ITEM, get_template, join_titles
from rec_lightning.sids.codec import ItemCatalog, SIDFormatError, parse_sid

HistoryItem = Union[int, str]


class UnknownItemError(ValueError):
    """A history names an item the catalog does not hold (or a title several items share)."""


@dataclass(frozen=True)
class Recommendation:
    """One user's ranked items, best first (all lists have the same length).

    ``item_ids[i]`` is the first catalog item with ``sids[i]``; ``shared_item_ids[i]`` lists every item
    with that SID (more than one only where the index has duplicate SIDs). ``scores`` are the beam
    search's summed log-probabilities of each SID.
    """

    history_item_ids: tuple[int, ...]
    item_ids: list[int]
    sids: list[str]
    titles: list[str]
    scores: list[float]
    shared_item_ids: list[tuple[int, ...]]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per ranked item: ``rank`` (1 = best), ``item_id``, ``sid``, ``title``, ``score``."""
        return [{"rank": rank, "item_id": item_id, "sid": sid, "title": title, "score": score}
                for rank, (item_id, sid, title, score) in
                enumerate(zip(self.item_ids, self.sids, self.titles, self.scores), start=1)]


class Recommender:
    """A model, its tokenizer and the item catalog, ready to rank next items.

    Args:
        model: a causal LM with the SID rows (PEFT-wrapped is fine), in eval mode.
        tokenizer: its tokenizer, with the SID tokens.
        catalog: the items (the SID index the model was trained on).
        next_item_task: the prompt (``sid_history_to_sid`` or ``sid_history_to_sid_compact``).
        category_name: words used in framed prompts.
        max_length: longest prompt in tokens; longer histories lose their oldest items' tokens.
        batch_size: prompts decoded together.
        renormalize: renormalise step log-probabilities over the allowed tokens.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, catalog: ItemCatalog, next_item_task: str = NEXT_ITEM,
                 category_name: str = "items", max_length: int = 512, batch_size: int = 16,
                 renormalize: bool = False) -> None:
        from rec_lightning.data.tasks import NEXT_ITEM_TASKS
        from rec_lightning.generation.trie import SIDTrie

        if next_item_task not in NEXT_ITEM_TASKS:
            raise ConfigurationError(f"next_item_task must be one of {list(NEXT_ITEM_TASKS)}, got {next_item_task!r}")
        if batch_size < 1 or max_length < 1:
            raise ConfigurationError(f"batch_size and max_length must be at least 1, got {batch_size} and {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.catalog = catalog
        self.next_item_task = next_item_task
        self.category_name = category_name
        self.max_length = max_length
        self.batch_size = batch_size
        self.renormalize = renormalize
        self.device = next(model.parameters()).device
        self.trie = SIDTrie.from_catalog(catalog, tokenizer.get_vocab(), tokenizer.eos_token_id).to(self.device)
        self._titles: dict[str, tuple[int, ...]] | None = None
        self.prior = None  # see use_transition_prior

    def use_transition_prior(self, train_records: Sequence[Any], weight: float, decay: float = 0.3) -> "Recommender":
        """Re-rank every beam list by ``log p + weight * log p_transition`` (``evaluate --prior transition``'s
        :class:`~rec_lightning.modules.transition_prior.TransitionPrior`), counted on ``train_records`` (the train
        split the model was trained on, e.g. ``load_rec_data(dir, category, splits=("train",)).splits["train"]``).
        Choose ``weight`` on the valid split. ``weight`` 0 switches it off."""
        from rec_lightning.modules.transition_prior import TransitionPrior

        self.prior = None if weight == 0 else TransitionPrior(
            train_records, self.catalog, self.trie.catalog_item_index(self.catalog), len(self.trie.keys), weight, decay)
        return self

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, data_dir: str | None = None, category: str | None = None,
                        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        batch_size: int = 16, max_length: int | None = None, cache_dir: str | None = None,
                        renormalize: bool = False) -> "Recommender":
        """Load a final checkpoint (adapter, merged export or full model) with its item catalog.

        Args:
            checkpoint: ``final_checkpoint/`` or an ``export`` output.
            data_dir: the MiniOneRec-layout folder the model was trained on (None: the catalog the checkpoint
                carries in ``item_catalog.json``; a checkpoint written before it carried one needs ``data_dir``).
            category: its file-name category (None: the one recorded in the checkpoint, else the only one).
            device: ``"cpu"``, ``"cuda"``, ... (default: CPU).
            dtype: weight dtype (default: as saved).
            max_length: longest prompt (default: the training ``max_length`` recorded in the checkpoint).
            cache_dir: unused (the demo data set is no longer the default catalog); kept for compatibility.

        Raises:
            FileNotFoundError: ``checkpoint`` is not a checkpoint folder.
            MissingCatalogError: no ``data_dir`` and the checkpoint carries no catalog.
            CheckpointMismatchError: the data's SID index or the tokenizer is not the checkpoint's.
        """
        from rec_lightning.modules.inference import load_checkpoint

        loaded = load_checkpoint(checkpoint, data_dir=data_dir, category=category, max_length=max_length,
                                 device=device, dtype=dtype)
        settings = loaded.settings
        return cls(loaded.model, loaded.tokenizer, loaded.catalog, next_item_task=settings.next_item_task,
                   category_name=settings.category_name, max_length=settings.max_length, batch_size=batch_size,
                   renormalize=renormalize)

    # ------------------------------------------------------------------ histories
    def resolve_item(self, value: HistoryItem, user: int = 0, position: int = 0) -> int:
        """The catalog item id of a history entry: an item id, a SID or an exact title.

        Raises:
            UnknownItemError: no such item, or a title shared by items with different SIDs.
        """
        where = f"history {user}, position {position}"
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UnknownItemError(f"{where}: expected an item id (int), a SID or a title (str), got "
                                   f"{type(value).__name__} {value!r}")
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if isinstance(value, int):
            if value not in self.catalog:
                raise UnknownItemError(f"{where}: item id {value} is not in the catalog {self.catalog.source} "
                                       f"({len(self.catalog)} items, ids {min(self.catalog.item_ids)}.."
                                       f"{max(self.catalog.item_ids)}). Fix: pass an id from the index.json the "
                                       "model was trained on")
            return value
        text = value.strip()
        if text.startswith("<"):
            try:
                parse_sid(text)
            except SIDFormatError as err:
                raise UnknownItemError(f"{where}: {text!r} is not a well-formed SID ({err})") from None
            ids = self.catalog.items_with_sid(text)
            if not ids:
                raise UnknownItemError(f"{where}: SID {text} belongs to no item of the catalog {self.catalog.source}. "
                                       "Fix: use a SID from the index.json the model was trained on")
            return ids[0]
        ids = self.titles().get(text, ())
        if not ids:
            raise UnknownItemError(f"{where}: no item has the title {text!r} in the catalog {self.catalog.source}. "
                                   "Fix: pass the exact title (case and spaces as in the item file), the item id "
                                   "or its SID")
        if len({self.catalog.sid_of(i) for i in ids}) > 1:
            raise UnknownItemError(f"{where}: the title {text!r} belongs to items {list(ids)} with different SIDs. "
                                   "Fix: pass one of those item ids instead")
        return ids[0]

    def titles(self) -> dict[str, tuple[int, ...]]:
        """Title -> the item ids with it (built on first use)."""
        if self._titles is None:
            titles: dict[str, tuple[int, ...]] = {}
            for item in self.catalog:
                if item.title:
                    titles[item.title] = titles.get(item.title, ()) + (item.item_id,)
            self._titles = titles
        return self._titles

    def prompt(self, history_item_ids: Sequence[int]) -> str:
        """The next-item prompt of a history (oldest item first), exactly as training and ``evaluate`` render it."""
        template = get_template(self.next_item_task)
        return template.render(history_sids=template.join_history([self.catalog.sid_of(i) for i in history_item_ids]),
                               history_titles=join_titles([self.catalog.title_of(i) for i in history_item_ids]),
                               category=self.category_name)

    # ------------------------------------------------------------------ ranking
    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[HistoryItem]], k: int = 10, num_beams: int | None = None,
                  as_frame: bool = False):
        """Rank the next item of each history.

        Args:
            histories: one list per user, oldest first, of item ids, SIDs or titles (mixed is fine).
            k: items returned per user.
            num_beams: beam width (default ``k``); the best ``k`` of the ``num_beams`` beams are returned,
                so ``num_beams=50, k=10`` gives ``evaluate --num_beams 50``'s top 10.
            as_frame: return a pandas DataFrame (``user, rank, item_id, sid, title, score``) instead.

        Returns:
            a list of :class:`Recommendation`, one per history, or the DataFrame.

        Raises:
            UnknownItemError: a history entry is not in the catalog.
            ValueError: an empty history, or ``k``/``num_beams`` out of range.
        """
        from rec_lightning.data.collate import Collator
        from rec_lightning.data.dataset import RecDataset
        from rec_lightning.data.tasks import Example
        from rec_lightning.generation.decoding import constrained_beam_search

        if isinstance(histories, (str, bytes)) or not isinstance(histories, Sequence):
            raise ConfigurationError("histories must be a list of histories, e.g. [[12, 7, 301]] for one user")
        num_beams = k if num_beams is None else num_beams
        if k < 1 or num_beams < k:
            raise ConfigurationError(f"need 1 <= k <= num_beams, got k={k}, num_beams={num_beams}")
        if num_beams > self.trie.num_items:
            raise ConfigurationError(f"num_beams={num_beams} exceeds the {self.trie.num_items} distinct SIDs of the catalog")
        resolved = []
        for user, history in enumerate(histories):
            if isinstance(history, (str, int)) or not isinstance(history, Sequence) or len(history) == 0:
                raise ConfigurationError(f"history {user}: expected a non-empty list of items, got {history!r}. "
                                 "Fix: pass one list per user, e.g. [[12, 7, 301]]")
            resolved.append(tuple(self.resolve_item(v, user, p) for p, v in enumerate(history)))
        examples = [Example(self.next_item_task, self.prompt(ids), "", None, None, user, ids)
                    for user, ids in enumerate(resolved)]
        dataset = RecDataset(examples, self.tokenizer, self.max_length, with_response=False)
        collate = Collator(self.tokenizer.pad_token_id, "left")
        results: list[Recommendation] = []
        for start in range(0, len(dataset), self.batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + self.batch_size, len(dataset)))])
            output = constrained_beam_search(self.model, batch["input_ids"].to(self.device),
                                             batch["attention_mask"].to(self.device), self.trie, num_beams,
                                             self.renormalize)
            ranked, scored = output.items, output.scores
            if self.prior is not None:  # the same beams, re-ranked (scores become the fused ones)
                ranked, scored = self.prior(ranked, scored, batch["history_item_ids"])
            for index, items, scores in zip(batch["index"].tolist(), ranked.cpu().tolist(), scored.cpu().tolist()):
                results.append(self._recommendation(resolved[index], items[:k], scores[:k]))
        return self.to_frame(results) if as_frame else results

    def _recommendation(self, history: tuple[int, ...], items: list[int], scores: list[float]) -> Recommendation:
        kept = [(self.trie.keys[i], s) for i, s in zip(items, scores) if i >= 0]
        shared = [self.catalog.items_with_sid(sid) for sid, _ in kept]
        return Recommendation(history_item_ids=history, item_ids=[ids[0] for ids in shared],
                              sids=[sid for sid, _ in kept], titles=[self.catalog.title_of(ids[0]) for ids in shared],
                              scores=[float(s) for _, s in kept], shared_item_ids=shared)

    @staticmethod
    def to_frame(recommendations: Sequence[Recommendation]):
        """A pandas DataFrame with one row per (user, rank): ``user, rank, item_id, sid, title, score``."""
        import pandas as pd

        rows = [{"user": user, **row} for user, rec in enumerate(recommendations) for row in rec.rows()]
        return pd.DataFrame(rows, columns=["user", "rank", "item_id", "sid", "title", "score"])

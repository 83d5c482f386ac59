"""Prompt tasks: one small function per task turns records (or catalog items) into examples.

Sequence tasks make one example per CSV row; item tasks (``title_to_sid``, ``sid_to_title``) make
one per catalog item, so duplicate SIDs and duplicate titles each keep all their items instead of
collapsing into a dict as the original did (defect 4). Every example carries its own target.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from rec_lightning.data.records import SequenceRecord
from rec_lightning.errors import ConfigurationError
from rec_lightning.prompts import NEXT_ITEM, get_template, join_titles
from rec_lightning.sids.codec import ItemCatalog


@dataclass(frozen=True)
class Example:
    """A prompt and its response text (no EOS); the prompt ends in ``"### Response:\\n"`` (``"\\n"`` if compact)."""

    task: str
    prompt: str
    response: str
    target_item_id: int | None
    target_sid: str | None
    row: int  # row in the split for sequence tasks, item id for item tasks
    history_item_ids: tuple[int, ...] = ()
    history_sids: tuple[str, ...] = ()  # with the titles and category name: what re-renders a shorter history
    history_titles: tuple[str, ...] = ()
    category_name: str = ""


def _sequence_example(task: str, record: SequenceRecord, category_name: str, catalog: ItemCatalog | None) -> Example:
    template = get_template(task)
    prompt = _render_history(task, record.history_sids, record.history_titles, category_name)
    title = catalog.title_of(record.item_id) if catalog is not None and record.item_id in catalog else record.item_title
    response = record.item_sid if template.response == "sid" else (title or record.item_title)
    return Example(task, prompt, response, record.item_id, record.item_sid, record.row, record.history_item_ids,
                   record.history_sids, record.history_titles, category_name)


def _render_history(task: str, sids: Sequence[str], titles: Sequence[str], category_name: str) -> str:
    template = get_template(task)
    return template.render(history_sids=template.join_history(sids), history_titles=join_titles(titles),
                           category=category_name)


def drop_oldest_history(example: Example, count: int) -> Example | None:
    """The example with its ``count`` oldest history items removed and the prompt re-rendered.

    Returns:
        None when the example has no re-renderable history (item tasks, hand-built examples) or
        ``count`` would leave no history item.
    """
    if not example.history_sids or not 0 < count < len(example.history_sids):
        return None
    sids, titles = example.history_sids[count:], example.history_titles[count:]
    return replace(example, prompt=_render_history(example.task, sids, titles, example.category_name),
                   history_item_ids=example.history_item_ids[count:], history_sids=sids, history_titles=titles)


def next_item_example(record: SequenceRecord, category_name: str, task: str = NEXT_ITEM) -> Example:
    """The next-item example (SID history -> next SID) of a run, used by SFT validation, GRPO and evaluation.

    Args:
        task: a SID-history task with a SID answer (:data:`NEXT_ITEM_TASKS`).
    """
    if task not in NEXT_ITEM_TASKS:
        raise ConfigurationError(f"next_item_task must be one of {list(NEXT_ITEM_TASKS)}, got {task!r}")
    return _sequence_example(task, record, category_name, None)


def _sequence_task(task: str) -> Callable[..., list[Example]]:
    def build(records: Sequence[SequenceRecord], catalog: ItemCatalog, category_name: str) -> list[Example]:
        return [_sequence_example(task, record, category_name, catalog) for record in records]

    build.__name__ = task
    build.__doc__ = f"One ``{task}`` example per record."
    return build


def _item_example(task: str, item, category_name: str) -> Example:
    template = get_template(task)
    return Example(task, template.render(title=item.title, sid=item.sid, category=category_name),
                   item.sid if template.response == "sid" else item.title, item.item_id, item.sid, item.item_id)


def _item_task(task: str) -> Callable[..., list[Example]]:
    def build(records: Sequence[SequenceRecord], catalog: ItemCatalog, category_name: str) -> list[Example]:
        return [_item_example(task, item, category_name) for item in catalog if item.title]

    build.item_task = True  # one example per catalog item, not per record
    build.__name__ = task
    build.__doc__ = f"One ``{task}`` example per catalog item that has a title."
    return build


TASKS: dict[str, Callable[[Sequence[SequenceRecord], ItemCatalog, str], list[Example]]] = {
    "sid_history_to_sid": _sequence_task("sid_history_to_sid"),
    "title_history_to_sid": _sequence_task("title_history_to_sid"),
    "sid_history_to_title": _sequence_task("sid_history_to_title"),
    "title_history_to_title": _sequence_task("title_history_to_title"),
    "title_to_sid": _item_task("title_to_sid"),
    "sid_to_title": _item_task("sid_to_title"),
    "sid_history_to_sid_compact": _sequence_task("sid_history_to_sid_compact"),
    "title_to_sid_compact": _item_task("title_to_sid_compact"),
}

#: Tasks that can serve as a run's next-item prompt (validation, evaluation, GRPO).
NEXT_ITEM_TASKS = (NEXT_ITEM, "sid_history_to_sid_compact")

# MiniOneRec's SFT mix (its five datasets), with the answer leak fixed.
DEFAULT_TRAIN_TASKS: dict[str, float] = {
    "sid_history_to_sid": 1.0,
    "title_to_sid": 1.0,
    "sid_to_title": 1.0,
    "sid_history_to_title": 1.0,
    "title_history_to_title": 1.0,
    "title_history_to_sid": 1.0,
}


def build_examples(task: str, records: Sequence[SequenceRecord], catalog: ItemCatalog, category_name: str) -> list[Example]:
    """Build every example of ``task``.

    Raises:
        KeyError: unknown task, listing the known ones.
    """
    try:
        builder = TASKS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}") from None
    return builder(records, catalog, category_name)


class TaskMix(SequenceABC):
    """The seeded training mix, rendered on demand: ``[(task, source)]`` pairs, examples built when read.

    Equal, example for example and in order, to sampling every task's :func:`build_examples` list with
    :func:`~rec_lightning.data.sampling.sample_task_mix` and shuffling with ``random.Random(seed)`` (a
    test checks it), but it holds two small integers per example instead of the examples' prompt
    texts; reading a slice renders just that slice (what tokenization does, a chunk at a time).
    """

    def __init__(self, weights: Mapping[str, float], records: Sequence[SequenceRecord], catalog: ItemCatalog,
                 category_name: str, seed: int) -> None:
        import random

        import numpy as np

        from rec_lightning.data.sampling import sample_task_mix

        self.records, self.category_name, self.catalog = records, category_name, catalog
        self.tasks = [task for task, weight in weights.items() if weight > 0]
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; known tasks: {sorted(TASKS)}")
        self.items = [item for item in catalog if item.title]  # the sources of item tasks (references)
        self.item_task = [getattr(TASKS[task], "item_task", False) for task in self.tasks]
        sizes = {task: len(self.items) if is_item else len(records) for task, is_item in zip(self.tasks, self.item_task)}
        ranges = {task: _Pairs(code, sizes[task]) for code, task in enumerate(self.tasks)}
        chosen = sample_task_mix(ranges, {task: weights[task] for task in self.tasks}, seed)
        random.Random(seed).shuffle(chosen)
        pairs = np.asarray(chosen, dtype=np.int64).reshape(-1, 2)
        self.task_codes, self.sources = pairs[:, 0].astype(np.int16), pairs[:, 1]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        code, source = int(self.task_codes[index]), int(self.sources[index])
        task = self.tasks[code]
        if self.item_task[code]:
            return _item_example(task, self.items[source], self.category_name)
        return _sequence_example(task, self.records[source], self.category_name, self.catalog)


class _Pairs(SequenceABC):
    """``[(code, 0), (code, 1), ...]`` without holding them (what :func:`sample_task_mix` samples from)."""

    def __init__(self, code: int, size: int) -> None:
        self.code, self.size = code, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [(self.code, i) for i in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        return (self.code, index % self.size)

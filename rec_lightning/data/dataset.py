"""One dataset class for every task and stage: examples tokenized once, loss on the response only.

``input_ids = prompt_ids + response_ids + [eos]`` and ``labels = [-100] * len(prompt_ids) +
response_ids + [eos]``; with ``prompt_label_ids`` the prompt's tokens of those ids (the history's SID
tokens) are labelled too, so a causal LM also learns to predict every history item from the ones
before it, as SASRec does. An over-long example keeps its template's fixed head and loses its
*oldest* history items until it fits (its example then holds the prompt the model saw); only an
example with no history to drop (or one item that still does not fit) is cut from the left. The
response is always kept whole (an example whose response alone does not fit raises an error).
Without a response (generation), an item is the prompt alone.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Collection, NamedTuple, Sequence

import numpy as np
import torch

from rec_lightning.data.tasks import Example, drop_oldest_history
from rec_lightning.errors import ConfigurationError
from rec_lightning.sids.codec import SID_TOKEN_SPLIT

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Tokenize prompts the way generation sees them: BOS kept if the tokenizer adds one, no EOS.

    SID tokens are added tokens, which a tokenizer splits out before running BPE on the text
    between them; so a prompt's ids are the ids of its text segments and SID tokens, concatenated.
    The segments repeat across prompts (the prompt frame, ``", "``), so each distinct segment is
    tokenized once. A sample of prompts is checked against whole-string tokenization, and any
    tokenizer for which they differ is used whole-string instead.
    """
    prompts = list(prompts)
    if not prompts:
        return []
    whole = _encode_whole(tokenizer, prompts[:64])
    fast = _encode_by_segments(tokenizer, prompts[:64])
    if fast != whole:
        log.info("segment tokenization differs from whole-string tokenization for this tokenizer; using the slow path")
        return whole + _encode_whole(tokenizer, prompts[64:])
    return whole + _encode_by_segments(tokenizer, prompts[64:])


def _encode_whole(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"] if prompts else []
    eos = tokenizer.eos_token_id
    return [ids[:-1] if ids and ids[-1] == eos else ids for ids in encoded]


def _encode_by_segments(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    prefix = _encode_whole(tokenizer, [""])[0]  # e.g. [BOS] for Llama-style tokenizers, [] for Qwen
    pieces = [SID_TOKEN_SPLIT.split(prompt) for prompt in prompts]  # text, token, text, token, ..., text
    vocab = tokenizer.get_vocab()
    distinct = sorted({piece for split in pieces for piece in split[0::2] if piece})
    encoded = _batch_ids(tokenizer, distinct)
    table = dict(zip(distinct, encoded))
    result = []
    for split in pieces:
        ids = list(prefix)
        for position, piece in enumerate(split):
            if position % 2:
                ids.append(vocab[piece])
            elif piece:
                ids.extend(table[piece])
        result.append(ids)
    return result


def _batch_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added.

    A fast tokenizer's Rust backend is called directly when it has no truncation or padding set: the
    same ids without building a ``BatchEncoding`` (a third of the tokenization time at 10^5 items).
    """
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_responses(tokenizer, responses: Sequence[str]) -> list[list[int]]:
    """Tokenize responses without special tokens and append EOS (each distinct response once)."""
    distinct = sorted(set(responses))
    encoded = _batch_ids(tokenizer, distinct)
    table = {text: ids + [tokenizer.eos_token_id] for text, ids in zip(distinct, encoded)}
    return [list(table[text]) for text in responses]


class ExampleFields(NamedTuple):
    """What a tokenized dataset keeps of each example when it does not keep the :class:`Example` itself."""

    task: str
    row: int
    target_item_id: int | None
    history_item_ids: tuple[int, ...]


class _ExampleView(Sequence):
    """``dataset.examples`` of a dataset that keeps only compact arrays: :class:`ExampleFields` per index."""

    def __init__(self, dataset: "RecDataset") -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        d = self.dataset
        target = int(d.target_item_ids[index])
        return ExampleFields(d.task_names[int(d.task_codes[index])], int(d.rows[index]), None if target < 0 else target,
                             d.history_item_ids(index))


class RecDataset(torch.utils.data.Dataset):
    """Tokenized examples, held as compact arrays (about 4 bytes per token and 30 per example).

    Args:
        examples: from :mod:`rec_lightning.data.tasks`.
        tokenizer: a Hugging Face tokenizer with the SID tokens added and an EOS token.
        max_length: longest sequence (prompt + response + EOS); prompts are cut from the left.
        with_response: False for generation (prompt only, no labels).
        prompt_label_ids: token ids that also get a label where they occur in the prompt (e.g. the SID
            token ids: the loss then covers each history item too); None = loss on the response only.
        keep_examples: keep the :class:`Example` objects (prompt texts included) as ``examples``; False
            keeps only :class:`ExampleFields` (task, row, target, history), which is what training needs.

    Raises:
        ValueError: a tokenizer without EOS, or a response longer than ``max_length``.
    """

    CHUNK = 50_000  # examples tokenized at a time: bounds the Python lists alive at once

    def __init__(self, examples: Sequence[Example], tokenizer, max_length: int = 512, with_response: bool = True,
                 prompt_label_ids: Collection[int] | None = None, keep_examples: bool = True) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token before building datasets")
        examples = list(examples) if keep_examples else examples
        self.max_length = max_length
        self.with_response = with_response
        self.prompt_label_ids = frozenset(prompt_label_ids) if prompt_label_ids else None
        self.num_truncated = 0  # cut from the left (no history left to drop)
        self.num_shortened = 0  # oldest history items dropped
        tasks: dict[str, int] = {}
        parts: dict[str, list[np.ndarray]] = {name: [] for name in ("tokens", "lengths", "prompt", "target", "row",
                                                                     "task", "history", "history_lengths")}
        for start in range(0, len(examples), self.CHUNK):
            chunk = list(examples[start:start + self.CHUNK])
            prompts = encode_prompts(tokenizer, [e.prompt for e in chunk])
            responses = encode_responses(tokenizer, [e.response for e in chunk]) if with_response else None
            tokens: list[int] = []
            lengths, prompt_lengths, histories = [], [], []
            for offset, prompt in enumerate(prompts):
                i = start + offset
                response = responses[offset] if responses is not None else []
                if len(response) >= max_length:
                    example = chunk[offset]
                    raise ConfigurationError(f"the response of example {i} (task {example.task}, row {example.row}) "
                                             f"is {len(response)} tokens, not shorter than max_length={max_length}; "
                                             "raise max_length")
                room = max_length - len(response)
                if len(prompt) > room:
                    chunk[offset], prompt = self._fit_prompt(i, chunk[offset], prompt, room, tokenizer)
                    if keep_examples:
                        examples[i] = chunk[offset]
                tokens += prompt
                tokens += response
                lengths.append(len(prompt) + len(response))
                prompt_lengths.append(len(prompt))
                histories += chunk[offset].history_item_ids
            parts["tokens"].append(np.asarray(tokens, dtype=np.int32))
            parts["lengths"].append(np.asarray(lengths, dtype=np.int64))
            parts["prompt"].append(np.asarray(prompt_lengths, dtype=np.int32))
            parts["target"].append(np.asarray([-1 if e.target_item_id is None else e.target_item_id for e in chunk],
                                              dtype=np.int64))
            parts["row"].append(np.asarray([e.row for e in chunk], dtype=np.int64))
            parts["task"].append(np.asarray([tasks.setdefault(e.task, len(tasks)) for e in chunk], dtype=np.int16))
            parts["history"].append(np.asarray(histories, dtype=np.int64))
            parts["history_lengths"].append(np.asarray([len(e.history_item_ids) for e in chunk], dtype=np.int64))
        joined = {name: np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
                  for name, arrays in parts.items()}
        self._set_arrays(token_ids=joined["tokens"].astype(np.int32), token_offsets=_offsets(joined["lengths"]),
                         prompt_lengths=joined["prompt"].astype(np.int32), target_item_ids=joined["target"],
                         rows=joined["row"], task_codes=joined["task"].astype(np.int16),
                         history_ids=joined["history"], history_offsets=_offsets(joined["history_lengths"]),
                         task_names=list(tasks))
        self._folder = None
        self.examples = examples if keep_examples else _ExampleView(self)
        _return_freed_memory()
        if self.num_shortened:
            log.warning("%d of %d examples were longer than max_length=%d; their oldest history items were dropped "
                        "until they fit", self.num_shortened, len(self), max_length)
        if self.num_truncated:
            log.warning("%d of %d examples were longer than max_length=%d even with one history item (or have no "
                        "history); their prompts were cut from the left", self.num_truncated, len(self), max_length)

    def _set_arrays(self, *, token_ids, token_offsets, prompt_lengths, target_item_ids, rows, task_codes, history_ids,
                    history_offsets, task_names) -> None:
        self.token_ids = token_ids  # [T] int32, every example's tokens back to back
        self.token_offsets = token_offsets  # [N + 1] int64
        self.prompt_lengths = prompt_lengths  # [N] int32
        self.target_item_ids = target_item_ids  # [N] int64, -1 = none
        self.rows = rows  # [N] int64
        self.task_codes = task_codes  # [N] int16 into task_names
        self.history_ids = history_ids  # [H] int64
        self.history_offsets = history_offsets  # [N + 1] int64
        self.task_names = list(task_names)

    @classmethod
    def from_arrays(cls, arrays: dict, task_names: Sequence[str], max_length: int, with_response: bool,
                    prompt_label_ids: Collection[int] | None = None, num_shortened: int = 0,
                    num_truncated: int = 0, folder=None) -> "RecDataset":
        """A dataset over arrays saved by :mod:`rec_lightning.data.dataset_cache` (memory-mapped is fine).

        ``folder``: where the arrays are mapped from; a pickled copy (a spawned DataLoader worker) maps
        them again from there instead of carrying a private copy.
        """
        dataset = cls.__new__(cls)
        dataset._folder = folder
        dataset.max_length, dataset.with_response = max_length, with_response
        dataset.prompt_label_ids = frozenset(prompt_label_ids) if prompt_label_ids else None
        dataset.num_shortened, dataset.num_truncated = num_shortened, num_truncated
        dataset._set_arrays(task_names=task_names, **arrays)
        dataset.examples = _ExampleView(dataset)
        return dataset

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if getattr(self, "_folder", None) is not None:  # mapped arrays: send the folder, not the contents
            for name in ARRAY_NAMES:
                state.pop(name)
        if isinstance(state.get("examples"), _ExampleView):
            state.pop("examples")  # rebuilt on the other side (it points back at the dataset)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if getattr(self, "_folder", None) is not None:
            self.__dict__.update(map_arrays(self._folder))
        if "examples" not in self.__dict__:
            self.examples = _ExampleView(self)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays :meth:`from_arrays` takes (what a cache stores)."""
        return {name: getattr(self, name) for name in ARRAY_NAMES}

    def _fit_prompt(self, i: int, example: Example, prompt: list[int], room: int, tokenizer) -> tuple[Example, list[int]]:
        """The longest history suffix whose prompt fits ``room`` tokens (binary search on the items dropped)."""
        low, high, best = 1, len(example.history_sids) - 1, None  # drop between 1 and all but one item
        while low <= high:
            count = (low + high) // 2
            shorter = drop_oldest_history(example, count)
            ids = encode_prompts(tokenizer, [shorter.prompt])[0]
            if len(ids) <= room:
                best, high = (shorter, ids), count - 1
            else:
                low = count + 1
        if best is not None:
            self.num_shortened += 1
            return best
        self.num_truncated += 1
        prompt = prompt[len(prompt) - room:]
        return replace(example, prompt=tokenizer.decode(prompt)), prompt  # what the model saw

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of each item (used for length-grouped batching)."""
        return np.diff(self.token_offsets)

    def history_item_ids(self, index: int) -> tuple[int, ...]:
        return tuple(self.history_ids[self.history_offsets[index]:self.history_offsets[index + 1]].tolist())

    def __getitem__(self, index: int) -> dict:
        ids = self.token_ids[self.token_offsets[index]:self.token_offsets[index + 1]].tolist()
        target = int(self.target_item_ids[index])
        item = {"input_ids": ids, "index": index, "target_item_id": target,
                "history_item_ids": self.history_item_ids(index)}
        if self.with_response:
            n_prompt = int(self.prompt_lengths[index])
            if self.prompt_label_ids is None:
                prompt_labels = [IGNORE_INDEX] * n_prompt
            else:
                prompt_labels = [i if i in self.prompt_label_ids else IGNORE_INDEX for i in ids[:n_prompt]]
            item["labels"] = prompt_labels + ids[n_prompt:]
        return item


ARRAY_NAMES = ("token_ids", "token_offsets", "prompt_lengths", "target_item_ids", "rows", "task_codes",
               "history_ids", "history_offsets")


def map_arrays(folder) -> dict[str, np.ndarray]:
    """The :data:`ARRAY_NAMES` arrays saved in ``folder`` (``<name>.npy``), memory-mapped read-only."""
    return {name: np.load(Path(folder) / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAY_NAMES}


def _return_freed_memory() -> None:
    """Give the C heap's freed pages back to the system (glibc keeps them: up to 1.1 GB after tokenizing
    10^5 item titles, benchmarks/scaling_results_memory.md); a no-op where ``malloc_trim`` is missing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets

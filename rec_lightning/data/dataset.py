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
from typing import Collection, Sequence

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
    encoded = tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
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


def encode_responses(tokenizer, responses: Sequence[str]) -> list[list[int]]:
    """Tokenize responses without special tokens and append EOS (each distinct response once)."""
    distinct = sorted(set(responses))
    encoded = tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
    table = {text: ids + [tokenizer.eos_token_id] for text, ids in zip(distinct, encoded)}
    return [list(table[text]) for text in responses]


class RecDataset(torch.utils.data.Dataset):
    """Tokenized examples.

    Args:
        examples: from :mod:`rec_lightning.data.tasks`.
        tokenizer: a Hugging Face tokenizer with the SID tokens added and an EOS token.
        max_length: longest sequence (prompt + response + EOS); prompts are cut from the left.
        with_response: False for generation (prompt only, no labels).
        prompt_label_ids: token ids that also get a label where they occur in the prompt (e.g. the SID
            token ids: the loss then covers each history item too); None = loss on the response only.

    Raises:
        ValueError: a tokenizer without EOS, or a response longer than ``max_length``.
    """

    def __init__(self, examples: Sequence[Example], tokenizer, max_length: int = 512, with_response: bool = True,
                 prompt_label_ids: Collection[int] | None = None) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token before building datasets")
        self.examples = list(examples)
        self.max_length = max_length
        self.with_response = with_response
        self.prompt_label_ids = frozenset(prompt_label_ids) if prompt_label_ids else None
        prompts = encode_prompts(tokenizer, [e.prompt for e in self.examples])
        responses = encode_responses(tokenizer, [e.response for e in self.examples]) if with_response else None
        self.input_ids: list[list[int]] = []
        self.num_prompt_tokens: list[int] = []
        self.num_truncated = 0  # cut from the left (no history left to drop)
        self.num_shortened = 0  # oldest history items dropped
        for i, prompt in enumerate(prompts):
            response = responses[i] if responses is not None else []
            if len(response) >= max_length:
                example = self.examples[i]
                raise ConfigurationError(f"the response of example {i} (task {example.task}, row {example.row}) is "
                                 f"{len(response)} tokens, not shorter than max_length={max_length}; raise max_length")
            room = max_length - len(response)
            if len(prompt) > room:
                prompt = self._fit_prompt(i, prompt, room, tokenizer)
            self.input_ids.append(prompt + response)
            self.num_prompt_tokens.append(len(prompt))
        if self.num_shortened:
            log.warning("%d of %d examples were longer than max_length=%d; their oldest history items were dropped "
                        "until they fit", self.num_shortened, len(self.examples), max_length)
        if self.num_truncated:
            log.warning("%d of %d examples were longer than max_length=%d even with one history item (or have no "
                        "history); their prompts were cut from the left", self.num_truncated, len(self.examples),
                        max_length)

    def _fit_prompt(self, i: int, prompt: list[int], room: int, tokenizer) -> list[int]:
        """The longest history suffix whose prompt fits ``room`` tokens (binary search on the items dropped)."""
        example = self.examples[i]
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
            self.examples[i], prompt = best
            self.num_shortened += 1
            return prompt
        self.num_truncated += 1
        prompt = prompt[len(prompt) - room:]
        self.examples[i] = replace(example, prompt=tokenizer.decode(prompt))  # what the model saw
        return prompt

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        """Token count of each item (used for length-grouped batching)."""
        return [len(ids) for ids in self.input_ids]

    def __getitem__(self, index: int) -> dict:
        ids = self.input_ids[index]
        target = self.examples[index].target_item_id
        item = {"input_ids": ids, "index": index, "target_item_id": -1 if target is None else target,
                "history_item_ids": self.examples[index].history_item_ids}
        if self.with_response:
            n_prompt = self.num_prompt_tokens[index]
            if self.prompt_label_ids is None:
                prompt_labels = [IGNORE_INDEX] * n_prompt
            else:
                prompt_labels = [i if i in self.prompt_label_ids else IGNORE_INDEX for i in ids[:n_prompt]]
            item["labels"] = prompt_labels + ids[n_prompt:]
        return item

"""The prefix tree of valid responses (item SID tokens, then EOS), held as tensors for decoding.

Nodes are numbered per depth. For depth ``d`` the trie keeps two padded tables of shape
``[num_nodes_d, fanout_d]``: the tokens allowed after each node (``-1`` pads) and where each
token leads: the child's number at depth ``d + 1``, or, for the EOS token, the index of the item
the path spells. Decoding gathers these rows for every beam at once, so constraining a step is a
few tensor indexing operations on the model's device, whatever the number of beams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from rec_lightning.sids.codec import ItemCatalog


@dataclass
class SIDTrie:
    """Valid responses as per-depth transition tables.

    Build it with :meth:`from_sequences` or :meth:`from_catalog`; do not fill the fields by hand.

    Attributes:
        tokens: per depth, ``[num_nodes_d, fanout_d]`` allowed token ids, ``-1`` where padded.
        targets: per depth, same shape: child node number at depth ``d + 1`` for a SID token, item
            index for the EOS token, ``0`` where padded.
        item_tokens: ``[num_items, max_length]`` each item's SID token ids (no EOS), ``-1`` padded.
        keys: one label per item (the SID string), in item-index order.
        eos_token_id: the token that ends every response.
        ends_at: per depth, whether some response ends (takes EOS) there.
    """

    tokens: list[torch.Tensor]
    targets: list[torch.Tensor]
    item_tokens: torch.Tensor
    keys: list[str]
    eos_token_id: int

    def __post_init__(self) -> None:
        # which depths can end a response (host-side flags, so decoding skips EOS work elsewhere)
        self.ends_at: list[bool] = [bool((t == self.eos_token_id).any()) for t in self.tokens]

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[Sequence[int]],
        eos_token_id: int,
        keys: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> "SIDTrie":
        """Build the trie of ``sequence + [eos_token_id]`` for every sequence.

        Args:
            sequences: one token-id list per distinct item (SID tokens only, no EOS); lengths may differ.
            eos_token_id: appended to every sequence; it must not occur inside one.
            keys: one label per sequence (e.g. its SID string); defaults to the ids joined by ``-``.
            device: where the tables live (the model's device).

        Raises:
            ValueError: on an empty list, an empty or duplicate sequence, EOS inside a sequence, or
                ``keys`` of the wrong length.
        """
        sequences = [tuple(int(t) for t in seq) for seq in sequences]
        if not sequences:
            raise ValueError("cannot build a trie from no sequences; the catalog is empty")
        keys = list(keys) if keys is not None else ["-".join(map(str, seq)) for seq in sequences]
        if len(keys) != len(sequences):
            raise ValueError(f"got {len(keys)} keys for {len(sequences)} sequences; pass one key per sequence")
        seen: dict[tuple[int, ...], int] = {}
        for index, seq in enumerate(sequences):
            if not seq:
                raise ValueError(f"sequence {index} ({keys[index]!r}) is empty; every item needs at least one token")
            if eos_token_id in seq:
                raise ValueError(f"sequence {index} ({keys[index]!r}) contains the EOS token {eos_token_id}")
            if min(seq) < 0:
                raise ValueError(f"sequence {index} ({keys[index]!r}) has a negative token id")
            if seq in seen:
                raise ValueError(f"sequences {seen[seq]} and {index} are identical ({keys[index]!r}); "
                                 "decode distinct SIDs and map each back to its items")
            seen[seq] = index
        tokens, targets = _build_tables(sequences, eos_token_id)
        max_length = max(len(seq) for seq in sequences)
        item_tokens = torch.full((len(sequences), max_length), -1, dtype=torch.long)
        for index, seq in enumerate(sequences):
            item_tokens[index, : len(seq)] = torch.tensor(seq)
        return cls(tokens, targets, item_tokens, keys, int(eos_token_id)).to(device)

    @classmethod
    def from_catalog(
        cls,
        catalog: ItemCatalog,
        token_ids: Mapping[str, int],
        eos_token_id: int,
        device: torch.device | str | None = None,
    ) -> "SIDTrie":
        """The trie of the catalog's distinct SIDs (one path per SID, shared by duplicate items).

        Args:
            catalog: the items.
            token_ids: SID token string -> token id, e.g. ``tokenizer.get_vocab()`` or
                ``dict(zip(catalog.sid_tokens, datamodule.sid_token_ids))``.
            eos_token_id: the tokenizer's EOS id.
            device: where the tables live.

        Raises:
            KeyError: a SID token the tokenizer does not know, with how to fix it.
        """
        sids = catalog.sids
        level_tokens = {sid: catalog.item(catalog.items_with_sid(sid)[0]).tokens for sid in sids}
        missing = sorted({token for tokens in level_tokens.values() for token in tokens} - set(token_ids))
        if missing:
            raise KeyError(f"{len(missing)} SID tokens are not in the tokenizer's vocabulary, e.g. {missing[:5]}; "
                           "add them with tokenizer.add_tokens(catalog.sid_tokens) and resize the model's embeddings")
        sequences = [[token_ids[token] for token in level_tokens[sid]] for sid in sids]
        return cls.from_sequences(sequences, eos_token_id, keys=sids, device=device)

    # ------------------------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.keys)

    @property
    def max_depth(self) -> int:
        """Decoding steps of the longest response (SID tokens + EOS)."""
        return len(self.tokens)

    @property
    def device(self) -> torch.device:
        return self.item_tokens.device

    def to(self, device: torch.device | str | None) -> "SIDTrie":
        """This trie with its tables on ``device`` (``self`` if already there or ``device`` is None)."""
        if device is None or torch.device(device) == self.device:
            return self
        return SIDTrie([t.to(device) for t in self.tokens], [t.to(device) for t in self.targets],
                       self.item_tokens.to(device), self.keys, self.eos_token_id)

    def key_index(self) -> dict[str, int]:
        """Key (SID string) -> item index."""
        return {key: index for index, key in enumerate(self.keys)}

    def catalog_item_index(self, catalog: ItemCatalog) -> torch.Tensor:
        """``[max item id + 1]`` trie index of each catalog item's SID (``-1`` for ids not in the catalog),
        on the trie's device: maps a batch's ``target_item_id`` to the decoded items in one gather."""
        key_of = self.key_index()
        table = torch.full((max(catalog.item_ids) + 1,), -1, dtype=torch.long)
        for item in catalog:
            table[item.item_id] = key_of[item.sid]
        return table.to(self.device)

    def lookup(self, items: torch.Tensor) -> list[list[str]]:
        """Map item indices ``[B, N]`` to keys; ``-1`` (no item) is dropped. One host copy per call."""
        return [[self.keys[i] for i in row if i >= 0] for row in items.tolist()]

    def responses(self, items: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        """Response token ids of item indices: SID tokens, EOS, then ``pad_token_id``.

        Args:
            items: item indices of any shape ``[*]``; ``-1`` (no item) gives a row of padding.
            pad_token_id: fills the positions after EOS.

        Returns:
            ``[*, max_depth]`` token ids, on the trie's device.
        """
        num_items, max_length = self.item_tokens.shape
        lengths = (self.item_tokens >= 0).sum(dim=1)  # [num_items]
        table = torch.full((num_items + 1, max_length + 1), pad_token_id, dtype=torch.long, device=self.device)
        table[:num_items, :max_length] = self.item_tokens.where(self.item_tokens >= 0, pad_token_id)
        table[torch.arange(num_items, device=self.device), lengths] = self.eos_token_id
        # the extra last row is all padding, so index -1 (no item) selects it
        return table[items]  # [*, max_depth]


def _build_tables(sequences: list[tuple[int, ...]], eos_token_id: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-depth ``(tokens, targets)`` tables; node numbers are assigned in order of first appearance."""
    max_depth = max(len(seq) for seq in sequences) + 1
    # children[d][node] = {token: child number at depth d + 1, or item index for EOS}
    children: list[list[dict[int, int]]] = [[{}]] + [[] for _ in range(max_depth - 1)]
    for item_index, seq in enumerate(sequences):
        node = 0
        for depth, token in enumerate(seq):
            level = children[depth][node]
            if token not in level:
                level[token] = len(children[depth + 1])
                children[depth + 1].append({})
            node = level[token]
        children[len(seq)][node][eos_token_id] = item_index
    tokens, targets = [], []
    for depth in range(max_depth):
        nodes = children[depth]
        fanout = max(len(node) for node in nodes)
        depth_tokens = torch.full((len(nodes), fanout), -1, dtype=torch.long)
        depth_targets = torch.zeros((len(nodes), fanout), dtype=torch.long)
        for number, node in enumerate(nodes):
            ordered = sorted(node.items())
            if ordered:
                depth_tokens[number, : len(ordered)] = torch.tensor([token for token, _ in ordered])
                depth_targets[number, : len(ordered)] = torch.tensor([target for _, target in ordered])
        tokens.append(depth_tokens)
        targets.append(depth_targets)
    return tokens, targets

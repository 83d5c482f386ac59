"""SIDTrie: per-depth transition tables checked by hand, catalog construction, bad input."""

import pytest
import torch

from rec_lightning.sids.codec import ItemCatalog
from rec_lightning.generation.trie import SIDTrie

EOS = 1
# three items, 2 and 3 levels: a shared first token, a shared second token under different parents
SEQUENCES = [[10, 20], [10, 21], [11, 20, 30]]


def test_tables_by_hand():
    trie = SIDTrie.from_sequences(SEQUENCES, EOS, keys=["x", "y", "z"])
    assert trie.max_depth == 4 and trie.num_items == 3
    # depth 0, the root: tokens 10 and 11 lead to depth-1 nodes 0 and 1
    assert trie.tokens[0].tolist() == [[10, 11]]
    assert trie.targets[0].tolist() == [[0, 1]]
    # depth 1: node 0 (after 10) allows 20, 21 -> nodes 0, 1; node 1 (after 11) allows 20 -> node 2
    assert trie.tokens[1].tolist() == [[20, 21], [20, -1]]
    assert trie.targets[1].tolist() == [[0, 1], [2, 0]]
    # depth 2: (10,20) and (10,21) end (EOS -> items 0 and 1); (11,20) continues with 30 -> node 0
    assert trie.tokens[2].tolist() == [[EOS], [EOS], [30]]
    assert trie.targets[2].tolist() == [[0], [1], [0]]
    # depth 3: (11,20,30) ends -> item 2
    assert trie.tokens[3].tolist() == [[EOS]] and trie.targets[3].tolist() == [[2]]
    assert trie.item_tokens.tolist() == [[10, 20, -1], [10, 21, -1], [11, 20, 30]]


def test_responses_and_lookup():
    trie = SIDTrie.from_sequences(SEQUENCES, EOS, keys=["x", "y", "z"])
    items = torch.tensor([[2, 0], [1, -1]])
    assert trie.responses(items, pad_token_id=0).tolist() == [
        [[11, 20, 30, EOS], [10, 20, EOS, 0]],
        [[10, 21, EOS, 0], [0, 0, 0, 0]],  # -1 (no item) is all padding
    ]
    assert trie.lookup(items) == [["z", "x"], ["y"]]
    assert trie.key_index() == {"x": 0, "y": 1, "z": 2}


def test_prefix_sequences_branch_on_eos():
    # not produced by a valid catalog, but the tables still say both "end" and "go on" after 10
    trie = SIDTrie.from_sequences([[10], [10, 20]], EOS)
    assert trie.tokens[1].tolist() == [[EOS, 20]]
    assert trie.targets[1].tolist() == [[0, 0]]  # EOS -> item 0; 20 -> depth-2 node 0


def test_from_catalog_uses_distinct_sids():
    catalog = ItemCatalog({0: ["<a_1>", "<b_2>"], 1: ["<a_1>", "<b_3>"], 2: ["<a_1>", "<b_2>"]})  # 0, 2 share a SID
    vocab = {"<a_1>": 50, "<b_2>": 60, "<b_3>": 61}
    trie = SIDTrie.from_catalog(catalog, vocab, EOS)
    assert trie.keys == ["<a_1><b_2>", "<a_1><b_3>"]
    assert trie.item_tokens.tolist() == [[50, 60], [50, 61]]


@pytest.mark.parametrize("sequences, message", [
    ([], "no sequences"),
    ([[10], []], "empty"),
    ([[10, 20], [10, 20]], "identical"),
    ([[10, EOS]], "EOS"),
    ([[10, -3]], "negative"),
])
def test_bad_sequences(sequences, message):
    with pytest.raises(ValueError, match=message):
        SIDTrie.from_sequences(sequences, EOS)


def test_missing_sid_token_names_it_and_the_fix():
    catalog = ItemCatalog({0: ["<a_1>", "<b_2>"]})
    with pytest.raises(KeyError, match=r"<b_2>.*add_tokens"):
        SIDTrie.from_catalog(catalog, {"<a_1>": 50}, EOS)


def test_wrong_number_of_keys():
    with pytest.raises(ValueError, match="one key per sequence"):
        SIDTrie.from_sequences([[10], [11]], EOS, keys=["only one"])

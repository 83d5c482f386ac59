"""``ranked_rows``: predict's answer for a decoded batch keeps the real rows and drops sharding's padding rows."""

import torch

from rec_lightning.callbacks.predictions import ranked_rows


class Catalog:
    """The one method ranked_rows uses: the items of an SID (first one is reported)."""

    def items_with_sid(self, sid: str) -> list[int]:
        return {"<a_0><b_0>": [10, 11], "<a_0><b_1>": [12], "<a_1><b_0>": [13]}[sid]


def test_padding_rows_are_dropped_and_items_resolved():
    keys = ["<a_0><b_0>", "<a_0><b_1>", "<a_1><b_0>"]
    items = torch.tensor([[1, 0], [2, -1], [0, 2]])  # [B=3, N=2] trie keys, -1 past the end
    scores = torch.tensor([[-0.1, -0.2], [-0.3, float("-inf")], [-0.5, -0.6]])
    index = torch.tensor([4, -1, 7])  # the middle row is padding (EqualShardSampler + PaddedRows)
    answer = ranked_rows(items, scores, index, keys, Catalog())
    assert answer["index"].tolist() == [4, 7]
    assert answer["item_ids"].tolist() == [[12, 10], [10, 13]]
    assert answer["sids"] == [["<a_0><b_1>", "<a_0><b_0>"], ["<a_0><b_0>", "<a_1><b_0>"]]
    assert torch.equal(answer["scores"], scores[[0, 2]])


def test_a_batch_of_padding_only_answers_nothing_and_short_rows_keep_minus_one():
    keys = ["<a_0><b_0>"]
    empty = ranked_rows(torch.tensor([[0, -1]]), torch.zeros(1, 2), torch.tensor([-1]), keys, Catalog())
    assert empty["index"].numel() == 0 and empty["item_ids"].shape == (0, 2) and empty["sids"] == []
    short = ranked_rows(torch.tensor([[0, -1]]), torch.zeros(1, 2), torch.tensor([0]), keys, Catalog())
    assert short["item_ids"].tolist() == [[10, -1]]

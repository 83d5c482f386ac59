"""The ``cf`` GRPO reward (SASRec probability of each completion after the user's history), the batch's
item histories it reads, and its wiring into GRPOModule."""

import math

import pytest
import torch

from rec_lightning.data.collate import Collator, pad_histories, unpad_histories
from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.cf_reward import CollaborativeReward
from rec_lightning.modules.grpo import GRPOModule
from rec_lightning.modules.sasrec import SASRec, save_sasrec
from rec_lightning.sids.codec import ItemCatalog

A, B, C = "<a_1><b_2><c_3>", "<a_4><b_2><c_3>", "<a_5><b_0><c_0>"
# items 1 and 3 share SID B
CATALOG = ItemCatalog({0: ["<a_1>", "<b_2>", "<c_3>"], 1: ["<a_4>", "<b_2>", "<c_3>"], 2: ["<a_5>", "<b_0>", "<c_0>"],
                       3: ["<a_4>", "<b_2>", "<c_3>"]})


def saved_sasrec(directory, catalog=CATALOG, max_history=3):
    torch.manual_seed(0)
    network = SASRec(num_columns=4, max_history=max_history, hidden_size=8, num_layers=1, num_heads=1)
    config = {"model": "sasrec", "num_columns": 4, "max_history": max_history, "hidden_size": 8, "num_layers": 1,
              "num_heads": 1, "dropout": 0.2, "catalog_checksum": catalog.checksum()}
    return save_sasrec(network, config, directory)


class FixedLogits(torch.nn.Module):
    """Stands in for the SASRec network: logits log(1), log(2), log(3), log(1) -> probabilities 1/7, 2/7, 3/7, 1/7."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def score_histories(self, tokens):
        self.seen.append(tokens.tolist())
        return torch.log(torch.tensor([[1.0, 2.0, 3.0, 1.0]])).expand(len(tokens), 4)


def test_reward_is_the_sid_probability_hand_worked(tmp_path):
    reward = CollaborativeReward(saved_sasrec(tmp_path / "sasrec"), CATALOG)
    reward.network = FixedLogits()
    # two prompts, groups of 2; SID B = items 1 and 3: 2/7 + 1/7; "" (nothing decoded) = 0
    values = reward([A, B, C, ""], [A] * 4, 2, histories=[(2,), (0, 1, 2, 3)])
    assert values == pytest.approx([1 / 7, 3 / 7, 3 / 7, 0.0])
    # tokens = item id + 1, left-padded with 0 to max_history 3; the longer history keeps its last 3 items
    assert reward.network.seen == [[[0, 0, 3], [2, 3, 4]]]


def test_reward_of_every_sid_sums_to_one_and_long_histories_are_truncated(tmp_path):
    reward = CollaborativeReward(saved_sasrec(tmp_path / "sasrec"), CATALOG)
    full = reward([A, B, C], [A] * 3, 3, histories=[(3, 0, 1, 2)])
    assert sum(full) == pytest.approx(1.0, abs=1e-6)  # the distinct SIDs cover every item once
    assert full == pytest.approx(reward([A, B, C], [A] * 3, 3, histories=[(0, 1, 2)]))  # max_history = 3
    probs = reward.network.score_histories(torch.tensor([[1, 2, 3]])).softmax(-1)[0]
    assert full == pytest.approx([probs[0].item(), (probs[1] + probs[3]).item(), probs[2].item()], abs=1e-6)
    with pytest.raises(ValueError, match="not an item of the catalog"):
        reward(["<a_9><b_9><c_9>"], [A], 1, histories=[(0,)])
    with pytest.raises(ValueError, match="2 completions for 2 histories in groups of 2"):
        reward([A, B], [A, A], 2, histories=[(0,), (1,)])


def test_sasrec_of_another_catalog_is_refused(tmp_path):
    other = ItemCatalog({0: ["<a_1>", "<b_2>", "<c_3>"], 1: ["<a_4>", "<b_2>", "<c_3>"], 2: ["<a_6>", "<b_0>", "<c_0>"],
                         3: ["<a_4>", "<b_2>", "<c_3>"]})
    directory = saved_sasrec(tmp_path / "sasrec", catalog=other)
    with pytest.raises(ConfigurationError, match="trained on another item index"):
        CollaborativeReward(directory, CATALOG)


def test_batches_carry_each_examples_history():
    assert pad_histories([(4, 5), (), (1, 2, 3)]).tolist() == [[-1, 4, 5], [-1, -1, -1], [1, 2, 3]]
    assert unpad_histories(pad_histories([(4, 5), (), (1, 2, 3)])) == [(4, 5), (), (1, 2, 3)]
    batch = Collator(0, "left")([{"input_ids": [7, 8], "index": 0, "target_item_id": 3, "history_item_ids": (1, 2)},
                                 {"input_ids": [9], "index": 1, "target_item_id": 0, "history_item_ids": (2,)}])
    assert batch["history_item_ids"].tolist() == [[1, 2], [-1, 2]]


def test_grpo_needs_a_cf_checkpoint():
    with pytest.raises(ConfigurationError, match="needs cf_checkpoint"):
        GRPOModule("x", rewards={"cf": 1.0})


def test_grpo_rollout_scores_groups_with_the_users_history(demo_dir, tmp_path):
    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.modules.export import load_for_inference
    from rec_lightning.modules.sft import SFTModule

    dm = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    tiny = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
    sft = SFTModule(backbone={"config": tiny}, finetune="full")
    sft.build(dm.tokenizer, dm.catalog.sid_tokens, dm.catalog.checksum())
    checkpoint = sft.save_final_checkpoint(tmp_path / "sft" / "final_checkpoint")
    num_columns = max(dm.catalog.item_ids) + 1
    network = SASRec(num_columns=num_columns, max_history=10, hidden_size=8, num_layers=1, num_heads=1)
    sasrec = save_sasrec(network, {"model": "sasrec", "num_columns": num_columns, "max_history": 10, "hidden_size": 8,
                                   "num_layers": 1, "num_heads": 1, "dropout": 0.2,
                                   "catalog_checksum": dm.catalog.checksum()}, tmp_path / "sasrec")
    rl = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(tmp_path / "cache"),
                       tokenizer=str(checkpoint), train_format="prompts", batch_size=4, max_length=256)
    rl.setup("fit")
    module = GRPOModule(sft_checkpoint=str(checkpoint), finetune="full", group={"size": 4}, rewards={"cf": 1.0},
                        cf_checkpoint=str(sasrec), loss={"beta": 0.0})
    model, tokenizer, metadata = load_for_inference(checkpoint, catalog=rl.catalog)
    module.build(model, tokenizer, rl.catalog, metadata)
    batch = next(iter(rl.train_dataloader()))
    examples = rl.datasets["train"].examples
    assert unpad_histories(batch["history_item_ids"]) == [examples[i].history_item_ids for i in batch["index"].tolist()]
    calls = []
    cf = module._model_rewards["cf"]
    original = cf.__call__

    class Spy:
        uses_histories = True

        def __call__(self, completions, targets, group_size, *, histories):
            calls.append(histories)
            return original(completions, targets, group_size, histories=histories)

    module._model_rewards["cf"] = Spy()
    rollout, metrics = module.rollout(batch)
    assert calls[-1] == [examples[i].history_item_ids for i in batch["index"].tolist()]
    assert 0.0 < metrics["rewards/cf"] <= 1.0 and math.isfinite(rollout.advantages.sum().item())

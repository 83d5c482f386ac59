"""The ``transition`` GRPO reward (the transition baseline's probability of each completion after the user's
history), hand-worked, and its wiring into GRPOModule through a Trainer (the train split comes from the data
module)."""

import math

import pytest
import torch

from rec_lightning.data.records import SequenceRecord
from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.grpo import GRPOModule
from rec_lightning.modules.transition_reward import LogTransitionReward, TransitionReward
from rec_lightning.sids.codec import ItemCatalog

A, B, C, D = "<a_1><b_2><c_3>", "<a_4><b_2><c_3>", "<a_5><b_0><c_0>", "<a_6><b_0><c_0>"
# items 1 and 3 share SID B
CATALOG = ItemCatalog({0: ["<a_1>", "<b_2>", "<c_3>"], 1: ["<a_4>", "<b_2>", "<c_3>"], 2: ["<a_5>", "<b_0>", "<c_0>"],
                       3: ["<a_4>", "<b_2>", "<c_3>"], 4: ["<a_6>", "<b_0>", "<c_0>"]})


def record(user, history, target, row):
    return SequenceRecord("train", row, user, tuple(history), ("t",) * len(history), ("s",) * len(history),
                          target, "t", "s")


# each pair once per user: 0->1 (u1, u2), 1->2 (u1, u2), 2->0 (u2), 0->2 (u3); train targets: 1, 2, 1, 0, 2
TRAIN = [record("u1", [0], 1, 0), record("u1", [0, 1], 2, 1), record("u2", [0], 1, 2), record("u2", [0, 1, 2], 0, 3),
         record("u3", [0], 2, 4)]


def test_reward_is_the_normalised_transition_probability_hand_worked():
    reward = TransitionReward(TRAIN, CATALOG, decay=0.5)
    assert reward.model.pair_counts() == {(0, 1): 2, (0, 2): 1, (1, 2): 2, (2, 0): 1}
    # history (0,): T = [0, 2, 1, 0, 0] / 3; history (1, 0) with decay 0.5: T = 0->. + 0.5 * 1->. = [0, 2, 2, 0, 0] / 4
    values = reward([A, B, C, D, A, B, C, D], [A] * 8, 4, histories=[(0,), (1, 0)])
    # SID B = items 1 and 3
    assert values == pytest.approx([0.0, 2 / 3, 1 / 3, 0.0, 0.0, 0.5, 0.5, 0.0])
    assert sum(values[:4]) == pytest.approx(1.0)  # the distinct SIDs cover every item once


def test_histories_without_transitions_fall_back_to_popularity():
    reward = TransitionReward(TRAIN, CATALOG, decay=0.0)
    # item 4 never appears; item 3 has no outgoing transition; () is an empty history
    popularity = [1 / 5, 2 / 5, 2 / 5, 0.0, 0.0]  # train targets 1, 2, 1, 0, 2
    for history in [(4,), (3,), ()]:
        assert reward([A, B, C, D], [A] * 4, 4, histories=[history]) == pytest.approx(
            [popularity[0], popularity[1] + popularity[3], popularity[2], popularity[4]])
    # decay 0: only the last item counts: (1, 3) -> 3 has none -> popularity; (3, 1) -> 1 -> 2 only
    assert reward([C], [A], 1, histories=[(3, 1)]) == [1.0]


def test_reward_errors_and_empty_completions():
    reward = TransitionReward(TRAIN, CATALOG)
    assert reward(["", A], [A, A], 2, histories=[(0,)])[0] == 0.0  # "": nothing decoded
    with pytest.raises(ValueError, match="not an item of the catalog"):
        reward(["<a_9><b_9><c_9>"], [A], 1, histories=[(0,)])
    with pytest.raises(ValueError, match="2 completions for 2 histories in groups of 2"):
        reward([A, B], [A, A], 2, histories=[(0,), (1,)])


def test_log_reward_is_the_decoding_priors_term_hand_worked():
    """transition_log = log(0.9 p_T + 0.1 p_pop), p_pop the add-one smoothed train targets: the very term that
    ``evaluate --prior transition`` adds to the LM score (TransitionPrior.key_log_probs), so its KL optimum is the
    fused model."""
    from rec_lightning.generation.trie import SIDTrie
    from rec_lightning.modules.transition_prior import TransitionPrior

    reward = LogTransitionReward(TRAIN, CATALOG, decay=0.5)
    # train targets 1, 2, 1, 0, 2 -> counts [1, 2, 2, 0, 0] -> (c + 1) / 10 = [0.2, 0.3, 0.3, 0.1, 0.1]
    # history (0,): T = [0, 2/3, 1/3, 0, 0] -> 0.9 T + 0.1 p_pop = [0.02, 0.63, 0.33, 0.01, 0.01]; B = items 1 + 3
    values = reward([A, B, C, D], [A] * 4, 4, histories=[(0,)])
    assert values == pytest.approx([math.log(0.02), math.log(0.64), math.log(0.33), math.log(0.01)])
    trie = SIDTrie.from_catalog(CATALOG, {t: i for i, t in enumerate(sorted(set(CATALOG.sid_tokens)) + ["</s>"])}, 99)
    prior = TransitionPrior(TRAIN, CATALOG, trie.catalog_item_index(CATALOG), trie.num_items, weight=1.0, decay=0.5)
    key_log = prior.key_log_probs([(0,)])[0]
    assert [float(key_log[trie.keys.index(sid)]) for sid in (A, B, C, D)] == pytest.approx(values)
    with pytest.raises(ValueError, match="empty completion"):
        reward(["", A], [A, A], 2, histories=[(0,)])
    with pytest.raises(ValueError, match=r"mix must lie in \(0, 1\]"):
        LogTransitionReward(TRAIN, CATALOG, mix=0.0)


def test_grpo_transition_reward_options():
    with pytest.raises(ConfigurationError, match=r"transition_decay must lie in \[0, 1\]"):
        GRPOModule("x", rewards={"transition": 1.0}, transition_decay=1.5)
    module = GRPOModule("x", rewards={"transition": 1.0})
    with pytest.raises(ConfigurationError, match="pass train_records=datamodule.records"):
        module.build(None, None, CATALOG)


def test_leave_one_out_takes_the_prompts_own_pair_and_target_count_out_hand_worked():
    """A train prompt's own transition (last history item -> target, once per user) and its target's popularity
    count leave the counts: the prior a user with an unknown next item gets."""
    reward = TransitionReward(TRAIN, CATALOG, decay=0.5, leave_one_out=True)
    # u3's row (0,) -> 2: T(0) = [0, 2, 1, 0, 0]; its own 0->2 (the only one) goes: [0, 2, 0, 0, 0]
    assert reward([A, B, C, D], [C] * 4, 4, histories=[(0,)], target_items=[2]) == pytest.approx([0, 1, 0, 0])
    assert TransitionReward(TRAIN, CATALOG, decay=0.5)([A, B, C, D], [C] * 4, 4, histories=[(0,)]) == pytest.approx(
        [0, 2 / 3, 1 / 3, 0])  # with it: the answer, 1/3
    # u2's row (0, 1, 2) -> 0: T = 2->. + 0.5 * 1->. + 0.25 * 0->. = [1, 0.5, 1.25, 0, 0]; 2->0 goes: total 1.75
    assert reward([A, B, C, D], [A] * 4, 4, histories=[(0, 1, 2)], target_items=[0]) == pytest.approx(
        [0, 0.5 / 1.75, 1.25 / 1.75, 0])
    # decay 0, history (2,) -> 0: the own pair was the only transition -> popularity without this target:
    # targets [1, 2, 2, 0, 0] - [1, 0, 0, 0, 0] -> [0, 2, 2, 0, 0] / 4
    last_only = TransitionReward(TRAIN, CATALOG, decay=0.0, leave_one_out=True)
    assert last_only([A, B, C, D], [A] * 4, 4, histories=[(2,)], target_items=[0]) == pytest.approx([0, 0.5, 0.5, 0])
    # a pair never counted (history (1,) -> 0) takes nothing out: T(1) = [0, 0, 2, 0, 0] stays, so A and B get 0
    assert last_only([A, B], [A] * 2, 2, histories=[(1,)], target_items=[0]) == pytest.approx([0, 0])
    with pytest.raises(ValueError, match="needs each prompt's target item id"):
        reward([A], [A], 1, histories=[(0,)])
    with pytest.raises(ValueError, match="2 target items for 1 histories"):
        reward([A], [A], 1, histories=[(0,)], target_items=[0, 1])
    with pytest.raises(ValueError, match="needs each prompt's target item id; got -1 for prompt 0"):
        reward([A], [A], 1, histories=[(0,)], target_items=[-1])
    # combine_rewards hands the ids over, and refuses to score without them
    from rec_lightning.rl.rewards import combine_rewards

    combined = combine_rewards({"transition": reward}, {"transition": 1.0}, [B], [C], 1, [(0,)], [2])
    assert combined.total == pytest.approx([1.0])
    with pytest.raises(ValueError, match="the transition reward needs the prompts' target item ids"):
        combine_rewards({"transition": reward}, {"transition": 1.0}, [B], [C], 1, [(0,)])
    # transition_log: p_T = [0, 1, 0, 0, 0]; add-one popularity without the target 2: ([1, 2, 1, 0, 0] + 1) / 9
    log_reward = LogTransitionReward(TRAIN, CATALOG, decay=0.5, leave_one_out=True)
    values = log_reward([A, B, C, D], [C] * 4, 4, histories=[(0,)], target_items=[2])
    assert values == pytest.approx([math.log(0.2 / 9), math.log(0.9 + 0.4 / 9), math.log(0.2 / 9), math.log(0.1 / 9)])
    assert log_reward.uses_target_items and not LogTransitionReward(TRAIN, CATALOG).uses_target_items


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_grpo_fit_counts_the_data_modules_train_split(demo_dir, tmp_path, monkeypatch, leave_one_out):
    """Through a Trainer: configure_model builds the reward from the data module's train rows, and the rollout
    logs it; with leave-one-out every call gets the batch's target item ids."""
    import lightning.pytorch as pl

    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.modules.sft import SFTModule

    dm = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    tiny = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
    sft = SFTModule(backbone={"config": tiny}, finetune="full")
    sft.build(dm.tokenizer, dm.catalog.sid_tokens, dm.catalog.checksum())
    checkpoint = sft.save_final_checkpoint(tmp_path / "sft" / "final_checkpoint")
    rl = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(tmp_path / "cache"),
                       tokenizer=str(checkpoint), train_format="prompts", batch_size=4, max_length=256)
    # with the target in every group, each group holds an item with p > 0: a train row's target follows its last
    # history item in that very row, and decay 0 scores by the last item alone
    module = GRPOModule(sft_checkpoint=str(checkpoint), finetune="full", group={"size": 4, "add_ground_truth": True},
                        rewards={"transition": 1.0, "transition_log": 1.0}, transition_decay=0.0, loss={"beta": 0.0},
                        transition_leave_one_out=leave_one_out)
    calls = []
    original = TransitionReward.probabilities

    def spy(self, histories, target_items=None):
        calls.append((len(histories), target_items))
        return original(self, histories, target_items)

    monkeypatch.setattr(TransitionReward, "probabilities", spy)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=rl)
    reward = module._model_rewards["transition"]
    expected = TransitionReward(rl.records("train"), rl.catalog, decay=0.0)
    assert reward.model.pair_counts() == expected.model.pair_counts() and reward.model.decay == 0.0
    assert module.hparams["transition_decay"] == 0.0
    assert module.hparams["transition_leave_one_out"] is leave_one_out and reward.leave_one_out is leave_one_out
    assert calls and all((t is not None) is leave_one_out for _, t in calls)
    assert all(t is None or (len(t) == n and all(isinstance(i, int) and i >= 0 for i in t)) for n, t in calls), calls
    value = float(trainer.logged_metrics["train/rewards/transition"])
    assert 0.0 < value <= 1.0 and math.isfinite(value)
    log_reward = module._model_rewards["transition_log"]  # same rows, same decay, the log of the mixed prior
    assert log_reward.model.pair_counts() == expected.model.pair_counts() and log_reward.model.decay == 0.0
    assert math.isfinite(float(trainer.logged_metrics["train/rewards/transition_log"]))
    assert float(trainer.logged_metrics["train/rewards/transition_log"]) < 0.0

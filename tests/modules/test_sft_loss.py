"""SFT training-loss options: per-SID-level token weights and label smoothing, checked against hand-made losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_lm import SID_TOKENS, make_tokenizer, sample_batch, tiny_config

from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.backbone import BackboneOptions
from rec_lightning.modules.sft import SFTModule, response_loss_sum
from rec_lightning.modules.sft_loss import LossOptions, sid_level_token_weights


def test_token_weights_by_hand():
    weights = sid_level_token_weights([2.0, 0.5], 10, ["<a_0>", "<b_1>", "<c_2>"], [5, 6, 7])
    # <a_0> (level 0) -> 2, <b_1> (level 1) -> 0.5, <c_2> (level 2, beyond the list) and non-SID ids -> 1
    assert weights.tolist() == [1, 1, 1, 1, 1, 2.0, 0.5, 1, 1, 1]
    assert sid_level_token_weights(None, 10, ["<a_0>"], [5]) is None


def test_options_are_checked_with_the_option_named():
    with pytest.raises(ConfigurationError, match=r"loss.label_smoothing must be in \[0, 1\).*got 1.0"):
        LossOptions(label_smoothing=1.0).check()
    with pytest.raises(ConfigurationError, match=r"loss.level_weights must be non-negative.*got \[-1.0, 1.0\]"):
        SFTModule(loss=LossOptions(level_weights=(-1.0, 1.0)))
    with pytest.raises(ConfigurationError, match=r"at least one > 0.*got \[0.0, 0.0\]"):
        LossOptions(level_weights=(0.0, 0.0)).check()


def _module(loss: LossOptions):
    torch.manual_seed(0)
    module = SFTModule(backbone=BackboneOptions(config=tiny_config(tied=True)), finetune="full", loss=loss)
    tokenizer = make_tokenizer()
    module.build(tokenizer, SID_TOKENS)
    return module, sample_batch(tokenizer, module.sid_token_ids)


def _per_token(module, batch, label_smoothing=0.0):
    """Per-response-token CE from the model's full logits (the reference), and the target ids."""
    logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    return F.cross_entropy(logits[keep].float(), targets[keep], reduction="none",
                           label_smoothing=label_smoothing), targets[keep]


def test_level_weights_give_the_weighted_mean_of_token_losses():
    module, batch = _module(LossOptions(level_weights=(2.0, 1.0, 0.5)))
    per_token, targets = _per_token(module, batch)
    level = {token_id: "abc".index(token[1]) for token, token_id in zip(SID_TOKENS, module.sid_token_ids)}
    # 4 rows x (<a_*>, <b_*>, <c_*>, EOS): weights 2, 1, 0.5, 1 -> summed weight 4 x 4.5 = 18
    weights = torch.tensor([[2.0, 1.0, 0.5][level[t]] if t in level else 1.0 for t in targets.tolist()])
    assert float(weights.sum()) == 18.0
    expected = (per_token * weights).sum() / weights.sum()
    assert torch.allclose(module.training_step(batch, 0), expected, atol=1e-6)
    # the plain loss is what weights of 1 give
    loss_sum, count = response_loss_sum(module.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    ones_sum, ones_count = response_loss_sum(module.model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                             token_weights=torch.ones(module.embedding_rows))
    assert int(count) == 16 and float(ones_count) == 16.0 and torch.allclose(loss_sum, ones_sum, atol=1e-5)
    assert torch.allclose(loss_sum / count, per_token.mean(), atol=1e-6)


def test_label_smoothing_in_training_only():
    module, batch = _module(LossOptions(label_smoothing=0.1))
    smoothed, _ = _per_token(module, batch, label_smoothing=0.1)
    plain, _ = _per_token(module, batch)
    assert torch.allclose(module.training_step(batch, 0), smoothed.mean(), atol=1e-6)
    assert not torch.allclose(smoothed.mean(), plain.mean(), atol=1e-3)
    module.on_validation_epoch_start()
    module.validation_step(batch, 0)  # validation keeps the plain cross-entropy
    assert torch.allclose((module._val_loss_sum / module._val_tokens).float(), plain.mean(), atol=1e-6)
    assert module.hparams["loss"] == {"label_smoothing": 0.1, "level_weights": None}
    assert "loss" not in SFTModule().hparams  # plain: the hyper-parameters read as before

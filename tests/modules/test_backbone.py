"""Backbone: from-config builds are seeded, SID rows are added deterministically, ordinary rows untouched."""

from __future__ import annotations

import pytest
import torch

from rec_lightning.modules.backbone import BackboneOptions, add_sid_tokens, build_backbone, embeddings_are_tied
from tiny_lm import SID_TOKENS, make_tokenizer, tiny_config, tiny_options


@pytest.fixture()
def tokenizer():
    return make_tokenizer()


def test_from_config_uses_tokenizer_vocab_and_init_seed(tokenizer):
    torch.manual_seed(1)
    first = build_backbone(tiny_options(), tokenizer)
    torch.manual_seed(2)  # the global seed must not matter: init_seed does
    second = build_backbone(tiny_options(), tokenizer)
    assert first.config.vocab_size == len(tokenizer)
    assert first.config.eos_token_id == tokenizer.eos_token_id
    assert first.config.use_cache is False
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    third = build_backbone(tiny_options(init_seed=1), tokenizer)
    assert not torch.equal(third.get_input_embeddings().weight, first.get_input_embeddings().weight)


def test_from_config_needs_a_tokenizer():
    with pytest.raises(ValueError, match="needs the tokenizer"):
        build_backbone(BackboneOptions())


def test_missing_model_says_what_to_do(tmp_path):
    with pytest.raises(OSError, match="HF_ENDPOINT"):
        build_backbone(BackboneOptions(model_name_or_path=str(tmp_path / "no-such-model")))


@pytest.mark.parametrize("tied", [True, False])
def test_add_sid_tokens_resizes_to_64_and_sets_mean_rows(tied):
    tokenizer = make_tokenizer()
    model = build_backbone(tiny_options(tied=tied), tokenizer)
    old_rows = len(tokenizer)  # e.g. 300
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    report = add_sid_tokens(model, tokenizer, SID_TOKENS)
    # 300 + 12 = 312 tokens -> ceil(312 / 64) * 64 = 320 rows
    assert len(tokenizer) == old_rows + 12
    assert report.sid_token_ids == list(range(old_rows, old_rows + 12))
    assert (report.old_num_rows, report.new_num_rows) == (old_rows, 320)
    assert report.initialised_rows == list(range(old_rows, 320))
    assert embeddings_are_tied(model) is tied
    for before, weight in ((before_in, model.get_input_embeddings().weight),
                           (before_out, model.get_output_embeddings().weight)):
        assert weight.shape[0] == 320
        assert torch.equal(weight[:old_rows], before)  # ordinary rows bit-identical
        expected = before.float().mean(dim=0)
        assert torch.allclose(weight[old_rows:], expected.expand(320 - old_rows, -1))
    assert model.config.vocab_size == 320


def test_add_sid_tokens_is_deterministic_and_ignores_global_rng():
    results = []
    for seed in (0, 123):
        tokenizer = make_tokenizer()
        model = build_backbone(tiny_options(tied=False), tokenizer)
        torch.manual_seed(seed)
        add_sid_tokens(model, tokenizer, SID_TOKENS)
        results.append(model.state_dict())
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name


def test_sid_rows_reusing_checkpoint_padding_rows_are_initialised():
    """Like Qwen2.5 (151,936 rows for 151,665 tokens): SID ids land on spare rows; those get the mean too."""
    tokenizer = make_tokenizer()
    options = BackboneOptions(config={**tiny_config(True), "vocab_size": len(tokenizer) + 40})  # 340 rows, 300 tokens
    model = build_backbone(options, tokenizer)
    before = model.get_input_embeddings().weight.detach().clone()
    report = add_sid_tokens(model, tokenizer, SID_TOKENS)
    # 312 tokens fit in 340 rows: no resize. SID ids 300..311 and spare rows 312..339 get the mean of rows 0..299.
    assert report.new_num_rows == 340
    assert report.initialised_rows == list(range(300, 340))
    weight = model.get_input_embeddings().weight
    assert torch.equal(weight[:300], before[:300])
    assert torch.allclose(weight[300:], before[:300].mean(dim=0).expand(40, -1))


def test_adding_twice_changes_nothing(tokenizer):
    model = build_backbone(tiny_options(), tokenizer)
    first = add_sid_tokens(model, tokenizer, SID_TOKENS)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    second = add_sid_tokens(model, tokenizer, SID_TOKENS)
    assert first.sid_token_ids == second.sid_token_ids
    # rows 312..319 were the mean already; the reference rows (0..299) are unchanged, so nothing moves
    for name, value in model.state_dict().items():
        assert torch.allclose(value, state[name]), name


def test_gradient_checkpointing_option(tokenizer):
    model = build_backbone(tiny_options(gradient_checkpointing=True), tokenizer)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_from_scratch_sft_keeps_random_distinct_sid_rows():
    """A model built from a config gets random SID rows like every other row (seeded), not 12 copies of the
    mean: identical rows would make every history item look the same to the untrained model."""
    from rec_lightning.modules.sft import SFTModule

    rows = []
    for _ in range(2):
        tokenizer = make_tokenizer()  # no SID tokens yet: build() adds them before the config's vocabulary is set
        module = SFTModule(backbone=tiny_options(tied=True), finetune="full")
        module.build(tokenizer, SID_TOKENS)
        weight = module.model.get_input_embeddings().weight.detach()
        sid = weight[module.sid_token_ids]  # [12, H]
        assert torch.cdist(sid, sid).fill_diagonal_(1.0).min() > 0.05  # pairwise distinct
        assert float(sid.std()) == pytest.approx(float(weight[:100].std()), rel=0.3)  # the same scale as ordinary rows
        rows.append(sid)
    assert torch.equal(rows[0], rows[1])  # deterministic (init_seed)

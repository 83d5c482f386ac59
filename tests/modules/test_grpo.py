"""GRPOModule on the demo data with tiny models: reference = SFT exactly, every trainable weight moves,
beta = 0 skips the reference, group options behave as documented."""

import lightning.pytorch as pl
import pytest
import torch

from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.generation.logprobs import completion_logprobs
from rec_lightning.modules.export import load_for_inference
from rec_lightning.modules.grpo import GroupOptions, GRPOLossOptions, GRPOModule
from rec_lightning.modules.sft import SFTModule

TINY = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "tie_word_embeddings": True}


TRAINED: dict = {}


@pytest.fixture(scope="module")
def sft_dirs(demo_dir, tmp_path_factory):
    """Untrained SFT final checkpoints in lora and full mode, plus the data module's cache folder."""
    cache = tmp_path_factory.mktemp("cache")
    dm = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(cache))
    out, trained = {}, {}
    for mode in ("lora", "full"):
        torch.manual_seed(0)
        module = SFTModule(backbone={"config": TINY}, finetune=mode, lora={"r": 4, "alpha": 8, "dropout": 0.0})
        module.build(dm.tokenizer, dm.catalog.sid_tokens, dm.catalog.checksum())
        if mode == "lora":  # give the SFT adapter non-trivial weights, so "adapter off" != SFT would show
            with torch.no_grad():
                for name, parameter in module.model.named_parameters():
                    if parameter.requires_grad:
                        parameter.add_(0.05 * torch.randn_like(parameter))
        out[mode] = module.save_final_checkpoint(tmp_path_factory.mktemp(mode) / "final_checkpoint")
        trained[mode] = module
    TRAINED.update(modules=trained, tokenizer=dm.tokenizer)  # the in-process SFT modules and training tokenizer
    return out, cache


def rl_datamodule(demo_dir, cache, checkpoint, batch_size=4):
    dm = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(cache), tokenizer=str(checkpoint),
                       train_format="prompts", batch_size=batch_size, eval_batch_size=8, max_length=256)
    dm.setup("fit")
    return dm


def built_module(dm, checkpoint, **kwargs):
    module = GRPOModule(sft_checkpoint=str(checkpoint), **kwargs)
    model, tokenizer, metadata = load_for_inference(checkpoint, catalog=dm.catalog)
    module.build(model, tokenizer, dm.catalog, metadata)
    return module


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_reference_logprobs_equal_the_sft_model(sft_dirs, demo_dir, mode):
    dirs, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, dirs[mode])
    module = built_module(dm, dirs[mode], finetune=mode, group={"size": 4}, loss={"beta": 0.1})
    batch = next(iter(dm.train_dataloader()))
    rollout, _ = module.rollout(batch)
    sft_model, _, _ = load_for_inference(dirs[mode])
    expected = completion_logprobs(sft_model, rollout.prompt_ids, rollout.prompt_mask, rollout.completions, 4)
    assert torch.allclose(rollout.ref_logp, expected, atol=1e-5)
    if mode == "lora":
        # no second copy of the base: the reference is the policy with its fresh adapter switched off
        assert module.reference_copy is None
        # ... and the fresh adapter starts as a no-op, so the policy starts equal to the SFT model too
        module.model.eval()  # no LoRA dropout for the comparison
        with torch.no_grad():
            policy = completion_logprobs(module.model, rollout.prompt_ids, rollout.prompt_mask, rollout.completions, 4)
        assert torch.allclose(policy, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_reference_is_the_trained_sft_model_on_the_prompts_it_was_trained_on(sft_dirs, demo_dir, mode):
    """Across the save/load boundary: GRPO's prompts (tokenizer reloaded from the SFT checkpoint) are the ids
    the SFT training tokenizer gives, and the reference's log-probs are the in-process SFT model's."""
    from rec_lightning.data.dataset import encode_prompts

    dirs, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, dirs[mode])
    module = built_module(dm, dirs[mode], finetune=mode, group={"size": 4}, loss={"beta": 0.1})
    batch = next(iter(dm.train_dataloader()))
    rollout, _ = module.rollout(batch)
    everything = dm.train_examples()  # the training set keeps token ids, not prompt texts: rebuild them (seeded)
    examples = [everything[i] for i in batch["index"].tolist()]
    trained_ids = encode_prompts(TRAINED["tokenizer"], [e.prompt for e in examples])
    rl_ids = [row[mask.bool()].tolist() for row, mask in zip(rollout.prompt_ids, rollout.prompt_mask)]
    assert rl_ids == trained_ids
    sft_model = TRAINED["modules"][mode].model
    sft_model.eval()
    with torch.no_grad():
        expected = completion_logprobs(sft_model, rollout.prompt_ids, rollout.prompt_mask, rollout.completions, 4)
    assert torch.allclose(rollout.ref_logp, expected, atol=1e-5)


def fit_steps(module, dm, steps, tmp_path):
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    return trainer


@pytest.mark.parametrize("mode, steps", [("full", 1), ("lora", 2)])
def test_training_changes_every_trainable_parameter(sft_dirs, demo_dir, tmp_path, mode, steps):
    # LoRA's B starts at zero, so A's gradient is exactly zero on the first step: LoRA needs two steps.
    dirs, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, dirs[mode])
    module = built_module(dm, dirs[mode], finetune=mode, group={"size": 4, "add_ground_truth": True},
                          rewards={"ranking": 1.0, "prefix": 0.5}, optimizer={"lr": 1e-2, "warmup_steps": 0},
                          max_grad_norm=0.0, loss={"beta": 0.01})
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    trainer = fit_steps(module, dm, steps, tmp_path)
    unchanged = [n for n, p in module.model.named_parameters() if p.requires_grad and torch.equal(before[n], p.detach())]
    assert before and not unchanged
    # reward and KL are what a GRPO run is watched by: on the progress bar; the rest only in the loggers
    assert {"train/reward", "train/kl"} <= set(trainer.progress_bar_metrics)
    assert "train/reward_std" in trainer.logged_metrics and "train/reward_std" not in trainer.progress_bar_metrics


def test_beta_zero_never_runs_the_reference(sft_dirs, demo_dir, monkeypatch):
    dirs, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, dirs["lora"])
    module = built_module(dm, dirs["lora"], group={"size": 4}, loss={"beta": 0.0})

    def forbidden(*args, **kwargs):
        raise AssertionError("the reference model ran with beta = 0")

    monkeypatch.setattr("rec_lightning.modules.grpo.reference_model", forbidden)
    rollout, metrics = module.rollout(next(iter(dm.train_dataloader())))
    assert rollout.ref_logp is None
    assert metrics["valid_fraction"] == 1.0


def test_groups_are_distinct_valid_items_and_ground_truth_is_added(sft_dirs, demo_dir):
    dirs, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, dirs["full"], batch_size=6)
    module = built_module(dm, dirs["full"], finetune="full", group={"size": 5, "add_ground_truth": True},
                          rewards={"rule": 1.0}, loss={"beta": 0.0})
    batch = next(iter(dm.train_dataloader()))
    rollout, metrics = module.rollout(batch)
    assert metrics["target_hit_rate"] == 1.0  # the target is in every group once it is added
    responses = rollout.completions.view(6, 5, -1)
    for row in range(6):
        assert len({tuple(r.tolist()) for r in responses[row]}) == 5  # beams are distinct items
    eos = dm.tokenizer.eos_token_id
    assert bool((rollout.completions[:, 3] == eos).all())  # 3 SID tokens then EOS
    assert rollout.completion_mask.sum(1).tolist() == [4] * 30
    # rule reward with the target in each group: advantages are +a for the target, -a/4 elsewhere
    adv = rollout.advantages.view(6, 5)
    assert torch.allclose(adv.sum(1), torch.zeros(6), atol=1e-5)


def test_option_errors():
    with pytest.raises(ValueError, match="use the beam rank"):
        GRPOModule("x", group=GroupOptions(mode="sample"), rewards={"ranking": 1.0})
    with pytest.raises(ValueError, match="needs group.mode=sample"):
        GRPOModule("x", group=GroupOptions(dynamic_sampling="resample"))
    with pytest.raises(ValueError, match="unknown reward"):
        GRPOModule("x", rewards={"nope": 1.0})
    with pytest.raises(ValueError, match="needs semantic_embeddings"):
        GRPOModule("x", rewards={"semantic": 1.0})


def test_sampled_groups_with_resampling_and_drop(sft_dirs, demo_dir):
    dirs, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, dirs["full"])
    module = built_module(dm, dirs["full"], finetune="full", loss=GRPOLossOptions(beta=0.0),
                          group={"size": 4, "mode": "sample", "temperature": 1.5, "dynamic_sampling": "resample"},
                          rewards={"prefix": 1.0})
    rollout, metrics = module.rollout(next(iter(dm.train_dataloader())))
    assert rollout.completions.shape[0] == 16 and metrics["valid_fraction"] == 1.0
    module.group.dynamic_sampling = "drop"
    module.reward_weights = {"rule": 1.0}  # an untrained model rarely hits: most groups carry no signal
    rollout, metrics = module.rollout(next(iter(dm.train_dataloader())))
    kept = rollout.prompt_ids.shape[0]
    assert rollout.completions.shape[0] == kept * 4


def test_reference_sync_moves_reference_towards_policy_and_keeps_policy(sft_dirs, demo_dir):
    from rec_lightning.modules.reference import sync_reference

    dirs, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, dirs["lora"])
    module = built_module(dm, dirs["lora"], group={"size": 4}, loss={"beta": 0.1})
    policy = module.model
    with torch.no_grad():  # pretend training happened: non-zero LoRA B and moved SID rows
        for parameter in policy.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    layer = next(m for m in policy.modules() if hasattr(m, "lora_B") and hasattr(m, "base_layer"))
    w_ref = layer.base_layer.weight.detach().clone()
    w_policy = w_ref + layer.get_delta_weight("default").detach()
    embed = next(m for m in policy.modules() if type(m).__name__ == "TrainableTokensLayer")
    ids = embed.token_indices["default"]
    rows_ref = embed.base_layer.weight[ids].detach().clone()
    rows_policy = embed.trainable_tokens_delta["default"].detach().clone()
    batch = next(iter(dm.train_dataloader()))
    rollout, _ = module.rollout(batch)
    policy.eval()  # no LoRA dropout for the comparison
    with torch.no_grad():
        before = completion_logprobs(policy, rollout.prompt_ids, rollout.prompt_mask, rollout.completions, 4)
    sync_reference(policy, None, alpha=0.25)
    assert torch.allclose(layer.base_layer.weight, 0.75 * w_ref + 0.25 * w_policy, atol=1e-6)
    assert torch.allclose(w_ref + (layer.base_layer.weight - w_ref) + layer.get_delta_weight("default"), w_policy, atol=1e-6)
    assert torch.allclose(embed.base_layer.weight[ids], 0.75 * rows_ref + 0.25 * rows_policy, atol=1e-6)
    with torch.no_grad():
        after = completion_logprobs(policy, rollout.prompt_ids, rollout.prompt_mask, rollout.completions, 4)
    assert torch.allclose(before, after, atol=1e-5)  # the policy itself is unchanged by a sync


@pytest.fixture(scope="module")
def sft_with_dropout(demo_dir, sft_dirs, tmp_path_factory):
    """A full SFT checkpoint whose model has attention dropout 0.5 (a from-scratch recipe's setting)."""
    _, cache = sft_dirs
    dm = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", cache_dir=str(cache))
    torch.manual_seed(0)
    module = SFTModule(backbone={"config": {**TINY, "attention_dropout": 0.5}}, finetune="full")
    module.build(dm.tokenizer, dm.catalog.sid_tokens, dm.catalog.checksum())
    return module.save_final_checkpoint(tmp_path_factory.mktemp("dropout") / "final_checkpoint")


@pytest.mark.parametrize("disable", [True, False])
def test_disable_dropout_makes_the_training_policy_the_model_that_generated(sft_dirs, sft_with_dropout, demo_dir,
                                                                            disable):
    """With dropout disabled, the policy in train mode gives the same log-probs on every pass, exactly the
    reference's (policy = SFT model at the start); with the model's attention dropout 0.5 left on, they differ."""
    _, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, sft_with_dropout)
    module = built_module(dm, sft_with_dropout, finetune="full", group={"size": 4}, loss={"beta": 0.1},
                          disable_dropout=disable)
    rollout, _ = module.rollout(next(iter(dm.train_dataloader())))
    module.model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        passes = [completion_logprobs(module.model, rollout.prompt_ids, rollout.prompt_mask, rollout.completions, 4)
                  for _ in range(2)]
    if disable:
        assert torch.equal(passes[0], passes[1])
        assert torch.allclose(passes[0], rollout.ref_logp, atol=1e-5)
    else:
        assert not torch.allclose(passes[0], passes[1], atol=1e-4)
        assert not torch.allclose(passes[0], rollout.ref_logp, atol=1e-4)


def test_disable_dropout_zeroes_attention_and_module_dropout():
    from transformers import AutoConfig, AutoModelForCausalLM

    from rec_lightning.modules.grpo import disable_dropout

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**TINY, "attention_dropout": 0.3}))
    model.model.extra = torch.nn.Dropout(0.2)
    assert disable_dropout(model) == 2 + 1  # two attention layers' rates and one nn.Dropout
    assert model.config.attention_dropout == 0.0 and model.model.extra.p == 0.0
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)


def test_bf16_reference_is_the_sft_model_and_sync_keeps_the_policy(sft_dirs, demo_dir):
    """A bf16 SFT LoRA model merged in bf16 rounds W + dW (per-token log-probs drift ~1e-2) and a bf16
    sync moves the policy; merged and synced in float32, both hold to float32 rounding. The yardstick
    is the SFT model's own bf16 weights run in float32 arithmetic (exact up to float32 rounding, which
    1e-5 covers at these sizes; bf16's own step, 2^-8 = 4e-3 relative, would fail it)."""
    from rec_lightning.modules.reference import sync_reference

    dirs, cache = sft_dirs
    dm = rl_datamodule(demo_dir, cache, dirs["lora"])
    module = GRPOModule(sft_checkpoint=str(dirs["lora"]), group={"size": 4}, loss={"beta": 0.1})
    model, tokenizer, metadata = load_for_inference(dirs["lora"], dtype="bfloat16", catalog=dm.catalog)
    module.build(model, tokenizer, dm.catalog, metadata)
    assert all(p.dtype == torch.float32 for p in module.model.parameters())
    batch = next(iter(dm.train_dataloader()))
    rollout, _ = module.rollout(batch)
    sft_model, _, _ = load_for_inference(dirs["lora"], dtype="bfloat16")
    sft_model = sft_model.float()  # the same bf16 weights, float32 arithmetic
    args = (rollout.prompt_ids, rollout.prompt_mask, rollout.completions, 4)
    with torch.no_grad():
        expected = completion_logprobs(sft_model, *args)
    torch.testing.assert_close(rollout.ref_logp, expected, atol=1e-5, rtol=0)
    policy = module.model.eval()
    with torch.no_grad():
        for parameter in policy.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
        before = completion_logprobs(policy, *args)
        sync_reference(policy, None, alpha=0.6)
        after = completion_logprobs(policy, *args)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_grpo_starts_through_the_one_loader_and_its_final_checkpoint_carries_the_catalog(sft_dirs, demo_dir, tmp_path):
    """configure_model loads the SFT checkpoint (here one without item_catalog.json) against the data module's catalog;
    the GRPO final checkpoint carries that catalog, so it is served without a data folder."""
    from rec_lightning.modules.export import read_item_catalog
    from rec_lightning.modules.inference import load_checkpoint

    dirs, cache = sft_dirs
    assert read_item_catalog(dirs["full"]) is None  # built with module.build(...) and no catalog: an old-style one
    dm = rl_datamodule(demo_dir, cache, dirs["full"])
    module = GRPOModule(sft_checkpoint=str(dirs["full"]), finetune="full", group={"size": 4},
                        rewards={"ranking": 1.0}, loss={"beta": 0.0})
    fit_steps(module, dm, 1, tmp_path)
    final = module.save_final_checkpoint(tmp_path / "final_checkpoint")
    carried = load_checkpoint(final).catalog
    assert carried.checksum() == dm.catalog.checksum()
    assert [(i.item_id, i.title) for i in carried] == [(i.item_id, i.title) for i in dm.catalog]

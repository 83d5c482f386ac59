"""SFTModule: response-only loss, schedule, logging, trainable-only checkpoints, exact resume, export."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_lm import SID_TOKENS, make_tokenizer, sample_batch, tiny_config

from rec_lightning.modules.export import CheckpointMismatchError
from rec_lightning.callbacks.export import FinalCheckpoint
from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.modules.backbone import BackboneOptions
from rec_lightning.modules.export import load_for_inference, read_metadata
from rec_lightning.modules.lora import LoraOptions
from rec_lightning.modules.optim import OptimizerOptions, build_optimizer, lr_multiplier
from rec_lightning.modules.sft import SFTModule, response_loss_sum


@pytest.fixture(scope="module")
def datamodule(demo_dir, tmp_path_factory):
    """Demo data, ~90 next-item training examples (2% of the rows), batches of 8."""
    return lambda: RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", batch_size=8, max_length=256,
                                 train_tasks={"sid_history_to_sid": 0.02},
                                 cache_dir=str(tmp_path_factory.getbasetemp() / "sft_cache"))


def tiny_module(finetune: str = "lora", dropout: float = 0.1) -> SFTModule:
    return SFTModule(backbone=BackboneOptions(config=tiny_config(tied=True)), finetune=finetune,
                     lora=LoraOptions(r=4, alpha=8, dropout=dropout),
                     optimizer=OptimizerOptions(lr=1e-2, warmup_steps=2))


def trainer(root, max_epochs: int, callbacks=(), **kwargs) -> pl.Trainer:
    settings = {"limit_train_batches": 3, "limit_val_batches": 2, **kwargs}
    return pl.Trainer(accelerator="cpu", precision="32-true", max_epochs=max_epochs, default_root_dir=str(root),
                      callbacks=list(callbacks), enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, **settings)


def test_response_loss_equals_hf_loss_on_response_tokens():
    tokenizer = make_tokenizer()
    module = tiny_module()
    module.build(tokenizer, SID_TOKENS)
    batch = sample_batch(tokenizer, module.sid_token_ids)
    loss_sum, count = response_loss_sum(module.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    # 4 rows x (3 SID tokens + EOS) = 16 labelled positions; HF shifts and averages over them too
    assert int(count) == 16
    hf = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert torch.allclose(loss_sum / count, hf, atol=1e-5)
    # an untrained model is close to uniform over the 320 rows: loss near ln(320) = 5.77
    assert abs(float(loss_sum / count) - math.log(320)) < 0.5


def test_lr_schedule_hand_values():
    # warmup 2 of 10 steps, floor 0.1: step 0 -> 1/2, step 1 -> 2/2
    assert lr_multiplier(0, 2, 10, "cosine", 0.1) == 0.5
    assert lr_multiplier(1, 2, 10, "cosine", 0.1) == 1.0
    # step 4: progress (4-2)/8 = 0.25; cosine 0.1 + 0.9 * (1 + cos(pi/4)) / 2 = 0.8682; linear 0.1 + 0.9 * 0.75 = 0.775
    assert lr_multiplier(4, 2, 10, "cosine", 0.1) == pytest.approx(0.86820, abs=1e-4)
    assert lr_multiplier(4, 2, 10, "linear", 0.1) == pytest.approx(0.775)
    assert lr_multiplier(10, 2, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(7, 2, 10, "constant", 0.1) == 1.0
    assert OptimizerOptions(warmup_ratio=0.03).num_warmup_steps(1000) == 30


def test_lr_schedule_follows_the_wall_time_budget():
    # time only (steps unbounded): half the time used -> cosine 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55
    assert lr_multiplier(4, 2, math.inf, "cosine", 0.1, time_fraction=0.5) == pytest.approx(0.55)
    # both budgets: whichever is closer to its end wins (steps 2/8 = 0.25 < time 0.5)
    assert lr_multiplier(4, 2, 10, "cosine", 0.1, time_fraction=0.5) == pytest.approx(0.55)
    assert lr_multiplier(4, 2, 10, "cosine", 0.1, time_fraction=0.1) == pytest.approx(0.86820, abs=1e-4)
    assert lr_multiplier(4, 2, math.inf, "linear", 0.1, time_fraction=1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="needs a budget.*max_time"):
        build_optimizer(torch.nn.Linear(2, 2).named_parameters(), OptimizerOptions(), math.inf)
    with pytest.raises(ValueError, match="warmup_ratio needs a step budget"):
        OptimizerOptions(warmup_ratio=0.1).num_warmup_steps(math.inf)


def test_max_time_sizes_the_schedule_through_lightnings_timer(monkeypatch):
    from lightning.pytorch.callbacks import Timer

    from rec_lightning.modules.optim import time_budget_fraction

    timer = Timer(duration={"seconds": 100})
    elapsed = {"train": 25.0}
    monkeypatch.setattr(timer, "time_elapsed", lambda stage: elapsed[stage])
    monkeypatch.setattr(timer, "time_remaining", lambda stage: 100 - elapsed[stage])
    trainer = pl.Trainer(accelerator="cpu", max_time={"seconds": 100}, max_epochs=-1, logger=False, enable_checkpointing=False,
                         callbacks=[timer])
    fraction = time_budget_fraction(trainer)
    config = build_optimizer(torch.nn.Linear(2, 2).named_parameters(), OptimizerOptions(lr=1.0, warmup_steps=0,
                             min_lr_ratio=0.0), trainer.estimated_stepping_batches, fraction)
    scheduler = config["lr_scheduler"]["scheduler"]
    assert fraction() == 0.25
    elapsed["train"] = 75.0
    scheduler.step()  # lr follows time: (1 + cos(0.75 pi)) / 2 = 0.1464
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(0.14645, abs=1e-4)
    assert time_budget_fraction(pl.Trainer(accelerator="cpu", max_steps=5, logger=False)) is None


def test_weight_decay_skips_vectors():
    layer = torch.nn.Linear(3, 2)
    config = build_optimizer(layer.named_parameters(), OptimizerOptions(weight_decay=0.1), total_steps=10)
    groups = config["optimizer"].param_groups
    assert [len(g["params"]) for g in groups] == [1, 1]
    assert groups[0]["params"][0] is layer.weight and groups[0]["weight_decay"] == 0.1
    assert groups[1]["params"][0] is layer.bias and groups[1]["weight_decay"] == 0.0


def test_fused_adamw_is_chosen_on_gpu_only_and_takes_the_same_steps():
    """fused=None: torch's default on CPU parameters (the fused kernel is picked for CUDA ones); fused=True on CPU
    gives the same three updates as the default loop to float32 rounding."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 3) for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    defaults = build_optimizer(layers[0].named_parameters(), OptimizerOptions(weight_decay=0.1), total_steps=10)
    fused = build_optimizer(layers[1].named_parameters(), OptimizerOptions(weight_decay=0.1, fused=True), total_steps=10)
    assert not defaults["optimizer"].defaults["fused"] and fused["optimizer"].defaults["fused"]
    inputs = torch.randn(5, 4)
    for _ in range(3):
        for layer, config in ((layers[0], defaults), (layers[1], fused)):
            layer(inputs).square().sum().backward()
            config["optimizer"].step()
            config["optimizer"].zero_grad()
    torch.testing.assert_close(layers[1].weight, layers[0].weight, rtol=1e-6, atol=1e-7)


def test_fit_logs_keeps_trainable_weights_and_exports(datamodule, tmp_path):
    pl.seed_everything(0)
    data = datamodule()
    module = tiny_module()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_top_k=1)
    run = trainer(tmp_path, max_epochs=2, callbacks=[checkpoint, FinalCheckpoint()],
                  logger=pl.loggers.CSVLogger(tmp_path, name="logs"))
    run.fit(module, datamodule=data)
    assert {"train/loss", "val/loss", "lr", "train/tokens_per_s", "train/padding_fraction"} <= set(run.logged_metrics)
    assert 0.0 <= float(run.logged_metrics["train/padding_fraction"]) < 1.0

    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(saved["state_dict"]) == trainable  # LoRA + SID rows only, no frozen base
    assert all("lora_" in k or "trainable_tokens_delta" in k for k in saved["state_dict"])
    assert saved["optimizer_states"]

    final = tmp_path / "final_checkpoint"
    metadata = read_metadata(final)
    assert metadata["format"] == "adapter" and metadata["finetune"]["mode"] == "lora"
    assert metadata["sid_index_checksum"] == data.catalog.checksum()
    assert metadata["sid_tokens"] == data.catalog.sid_tokens
    # the export holds the best checkpoint's weights, and reloads to the same logits
    best = {k: v for k, v in saved["state_dict"].items()}
    for name, parameter in module.named_parameters():
        if name in best:
            assert torch.equal(parameter, best[name]), name
    model, tokenizer, _ = load_for_inference(final, catalog=data.catalog)
    batch = next(iter(data.val_dataloader()))
    module.model.eval()
    with torch.no_grad():
        expected = module(batch["input_ids"], batch["attention_mask"])
        actual = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(actual, expected)


def test_resume_from_mid_run_checkpoint_is_exact(datamodule, tmp_path):
    """3 epochs straight vs 1 epoch, stop, resume from its .ckpt for 2 more: identical weights (with dropout)."""

    def run(root, ckpt_path=None):
        pl.seed_everything(0)
        module = tiny_module(dropout=0.1)
        saver = ModelCheckpoint(dirpath=root, save_top_k=-1, monitor=None, filename="{epoch}")
        trainer(root, max_epochs=3, callbacks=[saver], logger=False).fit(module, datamodule=datamodule(),
                                                                         ckpt_path=ckpt_path)
        return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    straight = run(tmp_path / "straight")
    resumed = run(tmp_path / "resumed", ckpt_path=tmp_path / "straight" / "epoch=0.ckpt")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    # and the run did train: a resumed run from epoch 0 is not a no-op
    first = torch.load(tmp_path / "straight" / "epoch=0.ckpt", weights_only=True)["state_dict"]
    assert any(not torch.equal(first[name], straight[f"{name}"]) for name in first)


def test_checkpoint_from_another_mode_is_rejected():
    lora = tiny_module("lora")
    lora.build(make_tokenizer(), SID_TOKENS)
    checkpoint = {"state_dict": lora.state_dict()}
    lora.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == lora.trainable_state_keys()
    frozen = tiny_module("freeze_lm")
    frozen.build(make_tokenizer(), SID_TOKENS)
    with pytest.raises(CheckpointMismatchError, match="does not fit this model \\(freeze_lm mode\\).*same model and finetune"):
        frozen.on_load_checkpoint(checkpoint)
    with pytest.raises(RuntimeError, match="build the model before loading"):
        tiny_module("lora").on_load_checkpoint(checkpoint)


def test_module_without_data_says_how_to_build():
    module = tiny_module()
    with pytest.raises(RuntimeError, match="module.build"):
        module.configure_model()
    with pytest.raises(RuntimeError, match="ranking evaluation"):
        module.test_step({}, 0)


@pytest.mark.parametrize("saved_at", ["train_batch_end", "validation_end"])
def test_resume_from_mid_epoch_checkpoint_is_exact(datamodule, tmp_path, saved_at):
    """2 epochs of 4 batches straight vs resuming from the checkpoint written after batch 2 of epoch 0
    (by step count, or at a mid-epoch validation): identical weights, because the data module's sampler
    skips exactly the batches already trained and the RNG (dropout) is restored."""

    def run(root, ckpt_path=None):
        pl.seed_everything(0)
        module = tiny_module(dropout=0.1)
        if saved_at == "train_batch_end":
            saver = ModelCheckpoint(dirpath=root, save_top_k=-1, monitor=None, every_n_train_steps=2,
                                    filename="{epoch}-{step}")
            extra = {"limit_val_batches": 0}
        else:
            saver = ModelCheckpoint(dirpath=root, save_top_k=-1, monitor=None, filename="{epoch}-{step}")
            extra = {"limit_val_batches": 1, "val_check_interval": 2}
        trainer(root, max_epochs=2, callbacks=[saver], logger=False, limit_train_batches=4, **extra
                ).fit(module, datamodule=datamodule(), ckpt_path=ckpt_path)
        return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    straight = run(tmp_path / "straight")
    middle = tmp_path / "straight" / "epoch=0-step=2.ckpt"
    assert middle.exists()
    resumed = run(tmp_path / "resumed", ckpt_path=middle)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name

"""Packed micro-batches: the layout by hand, no attention across examples, and the same loss and
gradients as the padded batch (per example and summed), through the data module and a Lightning fit."""

from __future__ import annotations

import pytest
import torch

from rec_lightning.data.collate import Collator
from rec_lightning.data.dataset import IGNORE_INDEX
from rec_lightning.data.packing import PackingCollator, first_fit
from rec_lightning.modules.lora import LoraOptions, apply_finetuning
from rec_lightning.modules.sft import response_loss_sum
from tests.modules.tiny_lm import tiny_config, tiny_options


def test_first_fit_places_each_length_in_the_first_bin_with_room():
    # in order: 5 -> bin 0 (room 3); 3 -> bin 0 (room 0); 4 -> bin 1 (room 4); 2 -> bin 1 (room 2); 6 -> bin 2; 2 -> bin 1
    assert first_fit([5, 3, 4, 2, 6, 2], capacity=8, decreasing=False) == [[0, 1], [2, 3, 5], [4]]
    # longest first: 6 -> bin 0 (room 2); 5 -> bin 1 (3); 4 -> bin 2 (4); 3 -> bin 1 (0); 2 -> bin 0 (0); 2 -> bin 2 (2)
    assert first_fit([5, 3, 4, 2, 6, 2], capacity=8) == [[4, 3], [0, 1], [2, 5]]
    assert first_fit([8], capacity=8) == [[0]]
    with pytest.raises(ValueError, match="example 1 has 9 tokens, more than the pack capacity 8"):
        first_fit([1, 9], capacity=8)


def _item(index, ids, labels, history=(1,)):
    return {"input_ids": list(ids), "labels": list(labels), "index": index, "target_item_id": 100 + index,
            "history_item_ids": tuple(history)}


def test_packed_layout_by_hand():
    items = [_item(0, [11, 12, 13, 14], [-100, -100, 13, 14]),
             _item(1, [21, 22, 23], [21, -100, 23], history=(5, 6)),  # a labelled first token (history_loss)
             _item(2, [31, 32], [-100, 32])]
    batch = PackingCollator(pad_token_id=0, pack_length=4)(items)  # rows of 4: 4 | 3 | 2 fit one per row
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14], [21, 22, 23, 0], [31, 32, 0, 0]]
    batch = PackingCollator(pad_token_id=0, pack_length=6)(items)  # 4 + 2 in row 0, 3 in row 1
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14, 31, 32], [21, 22, 23, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    # every example's first token unlabelled: example 1's 21 is predicted by nothing, as unpacked
    assert batch["labels"].tolist() == [[-100, -100, 13, 14, -100, 32], [-100, -100, 23, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert batch["example_index"].tolist() == [[0, 0, 0, 0, 2, 2], [1, 1, 1, -1, -1, -1]]
    assert batch["index"].tolist() == [0, 1, 2] and batch["target_item_id"].tolist() == [100, 101, 102]
    assert batch["history_item_ids"].tolist() == [[-1, 1], [5, 6], [-1, 1]]
    # chosen per batch: rows of 4 -> 3 x 4 = 12 positions, 5 -> 4+ | 3 2 = 10, ..., 9 -> one row of 9: the fewest
    assert PackingCollator(pad_token_id=0).layout([4, 3, 2]) == (9, [[0, 1, 2]])
    assert PackingCollator(pad_token_id=0, max_pack_length=6).layout([4, 3, 2]) == (5, [[0], [1, 2]])
    with pytest.raises(ValueError, match="pack_length must be a positive number of tokens or None, got 0"):
        PackingCollator(0, pack_length=0)
    with pytest.raises(ValueError, match="labelled items"):
        PackingCollator(0)([{"input_ids": [1], "index": 0, "target_item_id": 0}])


def _tiny_lora_model(vocab: int = 64, attn: str = "sdpa"):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    fields = {k: v for k, v in tiny_config(tied=True).items() if k != "model_type"}
    config = Qwen2Config(vocab_size=vocab, attn_implementation=attn, **fields)
    model = Qwen2ForCausalLM(config)
    return apply_finetuning(model, "lora", LoraOptions(r=4, dropout=0.0), sid_token_ids=list(range(50, 62)))


def _random_items(n: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    items = []
    for k in range(n):
        prompt = int(torch.randint(3, 20, (1,), generator=generator))
        ids = torch.randint(1, 50, (prompt,), generator=generator).tolist() + \
            torch.randint(50, 62, (3,), generator=generator).tolist() + [63]
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        labels[0] = ids[0] if k % 2 else IGNORE_INDEX  # history_loss-style labels on prompt tokens too
        labels[1] = ids[1]
        items.append(_item(k, ids, labels))
    return items


def _loss_and_grads(model, batch, only_example: int | None = None):
    labels = batch["labels"].clone()
    if only_example is not None:
        owner = batch["example_index"] if "example_index" in batch else \
            torch.arange(labels.shape[0])[:, None].expand_as(labels)
        labels[owner != only_example] = IGNORE_INDEX
    model.zero_grad(set_to_none=True)
    loss_sum, count = response_loss_sum(model, batch["input_ids"], batch["attention_mask"], labels,
                                        batch.get("position_ids"))
    loss_sum.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss_sum.detach(), int(count), grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_losses_and_gradients_equal_the_padded_batch(attn):
    model = _tiny_lora_model(attn=attn)
    items = _random_items(8, seed=1)
    padded = Collator(pad_token_id=0)(items)
    packed = PackingCollator(pad_token_id=0)(items)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # it did pack
    assert packed["attention_mask"].sum() == padded["attention_mask"].sum()
    for example in [None, *range(len(items))]:
        loss_a, count_a, grads_a = _loss_and_grads(model, padded, example)
        loss_b, count_b, grads_b = _loss_and_grads(model, packed, example)
        assert count_a == count_b
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
        for name in grads_a:
            torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-5, msg=name)


def test_no_token_attends_across_an_example_boundary():
    model = _tiny_lora_model()
    items = _random_items(6, seed=2)
    packed = PackingCollator(pad_token_id=0, pack_length=64)(items)  # all six in one row
    assert packed["input_ids"].shape[0] == 1
    decoder = model.get_base_model().get_decoder()

    def hidden(batch):
        return decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).last_hidden_state[0]

    before = hidden(packed)
    changed = dict(packed, input_ids=packed["input_ids"].clone())
    owner = packed["example_index"][0]
    changed["input_ids"][0, owner == 2] = 7  # rewrite example 2 entirely
    after = hidden(changed)
    assert not torch.allclose(after[owner == 2], before[owner == 2])
    torch.testing.assert_close(after[owner != 2], before[owner != 2], rtol=0, atol=1e-6)
    # and example 3, which follows it, sees only itself: its states equal those of example 3 alone
    alone = PackingCollator(pad_token_id=0)([items[3]])
    torch.testing.assert_close(hidden(packed)[owner == 3], hidden(alone), rtol=1e-5, atol=1e-5)


def _fit_three_steps(demo_dir, cache, packing: bool):
    import lightning.pytorch as pl

    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.modules.sft import SFTModule

    datamodule = RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", batch_size=8, max_length=256,
                               cache_dir=str(cache), packing=packing)
    pl.seed_everything(0)
    module = SFTModule(backbone=tiny_options(tied=True), finetune="full")
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append((float(outputs["loss"]), batch["input_ids"].shape[0], batch["index"].tolist()))

    trainer = pl.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=2, val_check_interval=3, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Record()], num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    return module, losses, trainer.callback_metrics["val/loss"]


@pytest.mark.slow  # the default tier's 8-minute limit (a clean clone took 9 min 10 s on this machine)
def test_a_packed_fit_trains_the_same_examples_to_the_same_weights(demo_dir, tmp_path):
    """Same sampler, same examples per step, same loss: three optimizer steps and a validation, packed or not."""
    plain, plain_steps, plain_val = _fit_three_steps(demo_dir, tmp_path / "cache", packing=False)
    packed, packed_steps, packed_val = _fit_three_steps(demo_dir, tmp_path / "cache", packing=True)
    assert [s[2] for s in packed_steps] == [s[2] for s in plain_steps]  # the same 8 examples each step
    assert sum(s[1] for s in packed_steps) < sum(s[1] for s in plain_steps)  # fewer rows
    for (loss_packed, _, _), (loss_plain, _, _) in zip(packed_steps, plain_steps):
        assert loss_packed == pytest.approx(loss_plain, rel=1e-5)
    assert float(packed_val) == pytest.approx(float(plain_val), rel=1e-5)
    plain_state, packed_state = plain.model.state_dict(), packed.model.state_dict()
    for name, value in plain_state.items():
        torch.testing.assert_close(packed_state[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_packing_is_refused_for_rl_prompts_and_empty_rows(demo_dir, tmp_path):
    from rec_lightning.data.datamodule import RecDataModule
    from rec_lightning.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="packing needs train_format='sft'"):
        RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", train_format="prompts", packing=True)
    with pytest.raises(ConfigurationError, match="pack_length must be a positive number of tokens or null, got 0"):
        RecDataModule(data_dir=str(demo_dir), category="Demo_Shop", packing=True, pack_length=0)


def test_the_cli_trains_packed_batches(lora_run):
    """``python -m rec_lightning fit ... --data.packing true`` (the shared LoRA + SID rows run): the saved config
    says so, and every logged step's padding is below the quickstart's padded random batches' (about half)."""
    import csv

    import yaml

    config = yaml.safe_load((lora_run / "run" / "logs" / "version_0" / "hparams.yaml").read_text()) \
        if (lora_run / "run" / "logs" / "version_0" / "hparams.yaml").exists() else None
    saved = yaml.safe_load((lora_run / "run" / "logs" / "version_0" / "config.yaml").read_text())
    assert saved["data"]["init_args"]["packing"] is True, config
    rows = list(csv.DictReader((lora_run / "run" / "logs" / "version_0" / "metrics.csv").open()))
    padding = [float(r["train/padding_fraction"]) for r in rows if r.get("train/padding_fraction")]
    assert len(padding) == 4
    assert max(padding) < 0.25, padding


def test_packing_removes_most_padding_from_random_batches(demo_datamodule):
    """The demo shop's first 20 shuffled micro-batches of 8 (max_length 256): padded to the longest, over a third
    of the positions are padding (0.365); packed, under half as much (0.149)."""
    from rec_lightning.data.collate import padding_fraction

    dataset = demo_datamodule.datasets["train"]
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:160].tolist()
    batches = [[dataset[i] for i in order[k:k + 8]] for k in range(0, 160, 8)]
    padded = [Collator(0)(b)["attention_mask"] for b in batches]
    packed = [PackingCollator(0, max_pack_length=256)(b)["attention_mask"] for b in batches]
    padded_fraction = 1 - sum(int(m.sum()) for m in padded) / sum(m.numel() for m in padded)
    packed_fraction = 1 - sum(int(m.sum()) for m in packed) / sum(m.numel() for m in packed)
    print(f"padding: padded {padded_fraction:.3f}, packed {packed_fraction:.3f}")
    assert sum(int(m.sum()) for m in packed) == sum(int(m.sum()) for m in padded)  # every token kept
    assert padded_fraction > 0.3 and packed_fraction < padded_fraction / 2
    assert padding_fraction(packed[0]) == pytest.approx(1 - float(packed[0].float().mean()))

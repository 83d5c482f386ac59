"""``ModelCheckpoint``: ``last.ckpt`` is the state the run ended in, also when the monitored metric got worse.

Lightning 2.6's own callback writes ``last.ckpt`` only together with a new top-k file, so with ``save_top_k=1``
and a metric that peaks early it holds the best step (resuming from it loses the rest of the run). A tiny module
whose validation metric falls at every validation makes the difference visible: the best file is step 2, the
last state step 6.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from rec_lightning.callbacks.checkpoint import ModelCheckpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class _Falling(pl.LightningModule):
    """One linear layer; ``val/score`` is 1 / global_step, so the first validation is the best one."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.steps_run = 0

    def training_step(self, batch, batch_idx):
        self.steps_run += 1
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", 1.0 / max(self.global_step, 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, callback: LightningModelCheckpoint, max_steps: int = 6) -> _Falling:
    pl.seed_everything(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)
    module = _Falling()
    trainer = pl.Trainer(max_steps=max_steps, val_check_interval=2, limit_val_batches=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                         default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(module, data, data)
    return module


def _kwargs(tmp_path: Path) -> dict:
    return dict(dirpath=tmp_path / "checkpoints", monitor="val/score", mode="max", save_top_k=1, save_last=True)


def test_last_ckpt_is_the_final_state_and_the_best_file_the_first_validation(tmp_path):
    callback = ModelCheckpoint(**_kwargs(tmp_path))
    module = _fit(tmp_path, callback)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(callback.best_model_path, weights_only=True)
    assert Path(callback.best_model_path).name == "epoch=0-step=2.ckpt"
    assert (best["global_step"], last["global_step"]) == (2, 6)
    assert torch.equal(last["state_dict"]["layer.weight"], module.layer.weight.detach())
    assert not torch.equal(best["state_dict"]["layer.weight"], module.layer.weight.detach())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]


def test_lightnings_own_callback_keeps_the_best_state_in_last_ckpt(tmp_path):
    """Why the subclass exists (Lightning 2.6.x): if this starts failing, Lightning writes the latest state again
    and the subclass can go."""
    _fit(tmp_path, LightningModelCheckpoint(**_kwargs(tmp_path)))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_resuming_from_last_ckpt_continues_from_the_final_step(tmp_path):
    _fit(tmp_path, ModelCheckpoint(**_kwargs(tmp_path)))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)
    trainer = pl.Trainer(max_steps=8, val_check_interval=2, limit_val_batches=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[ModelCheckpoint(**_kwargs(tmp_path))], default_root_dir=tmp_path)
    resumed = _Falling()
    trainer.fit(resumed, data, data, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    assert (resumed.steps_run, trainer.global_step) == (2, 8)  # steps 7 and 8 only
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_that_keeps_a_last_ckpt_uses_this_callback(path):
    callbacks = ((yaml.safe_load(path.read_text()) or {}).get("trainer") or {}).get("callbacks") or []
    for callback in callbacks:
        if (callback.get("init_args") or {}).get("save_last"):
            assert callback["class_path"] == "rec_lightning.callbacks.checkpoint.ModelCheckpoint", path.name

"""RQ-VAE LightningModule: k-means initialisation, gradients to every parameter, loss going down."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from rec_lightning.modules.rqvae import RQVAEModule, mlp


def embeddings(num_items: int = 96, dim: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(6, dim, generator=generator)
    return centers[torch.arange(num_items) % 6] + 0.2 * torch.randn(num_items, dim, generator=generator)


def tiny_module(**overrides) -> RQVAEModule:
    settings = dict(input_dim=16, hidden_dims=(32,), latent_dim=8, num_levels=2, codebook_size=8, lr=3e-3, seed=0)
    settings.update(overrides)
    return RQVAEModule(**settings)


def test_mlp_mirrors_dims_with_relu_between_layers_only():
    net = mlp([16, 32, 8])
    assert [type(layer).__name__ for layer in net] == ["Linear", "ReLU", "Linear"]
    assert net[0].bias.abs().sum() == 0  # zero-initialised biases


def test_forward_shapes_and_codes_range():
    torch.manual_seed(0)
    module = tiny_module()
    out = module(embeddings())
    assert out["reconstruction"].shape == (96, 16) and out["codes"].shape == (96, 2)
    assert out["codes"].min() >= 0 and out["codes"].max() < 8
    assert torch.isclose(out["loss"], out["recon_loss"] + out["vq_loss"])  # vq_loss_coef = 1


def test_every_parameter_receives_gradient():
    torch.manual_seed(0)
    module = tiny_module()
    x = embeddings()
    module.quantizer.init_from_data(module.encoder(x).detach())
    module(x)["loss"].backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_first_training_step_initialises_codebooks_by_kmeans():
    torch.manual_seed(0)
    module = tiny_module()
    x = embeddings()
    assert not bool(module.quantizer.initialized)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=96))
    assert bool(module.quantizer.initialized)
    assert module.state_dict()["quantizer.initialized"].item() is True


def test_training_with_the_trainer_lowers_the_loss():
    pl.seed_everything(0, verbose=False)
    module = tiny_module(lr=3e-3)
    x = torch.nn.functional.normalize(embeddings(), dim=1)  # unit rows, as embed-items writes them
    module.quantizer.init_from_data(module.encoder(x).detach())
    with torch.no_grad():
        before = float(module(x)["loss"])
    trainer = pl.Trainer(max_epochs=80, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", gradient_clip_val=1.0)
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=96))
    with torch.no_grad():
        after = float(module(x)["loss"])
    assert after < 0.5 * before, (before, after)
    codes, residual = module.encode(x)
    assert codes.shape == (96, 2) and residual.shape == (96, 8)
    assert module.training  # encode() restores the mode


def test_fit_rqvae_stops_at_max_steps():
    from rec_lightning.modules.rqvae import fit_rqvae
    from rec_lightning.sids.build import RQVAEOptions

    # 96 items in batches of 32: 3 steps per epoch; 50 epochs would be 150 steps, the cap stops at 5
    options = RQVAEOptions(epochs=50, batch_size=32, hidden_dims=(32,), latent_dim=8, accelerator="cpu", max_steps=5)
    q = fit_rqvae(embeddings(), 2, 8, 0, options, False)
    assert q.extra["rqvae_final_metrics"]["steps"] == 5.0 and q.codes.shape == (96, 2)


def test_bad_rq_vae_options_are_refused_naming_them(tmp_path):
    import numpy as np
    import pytest

    from rec_lightning.commands.build_sids import build_sids as build_sids_command
    from rec_lightning.sids.build import RQVAEOptions

    RQVAEOptions().check()  # the defaults are valid
    with pytest.raises(ValueError, match=r"--rqvae.epochs must be >= 1, got 0; --rqvae.latent_dim must be >= 1, got 0; "
                                         r"--rqvae.max_steps must be >= 1 or -1 \(no cap\), got 0"):
        RQVAEOptions(epochs=0, latent_dim=0, max_steps=0).check()
    path = tmp_path / "emb.npy"
    np.save(path, np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32))
    with pytest.raises(SystemExit, match=r"--rqvae.lr must be > 0, got 0"):  # before any training
        build_sids_command(str(path), str(tmp_path / "out"), method="rq-vae", levels=2, codebook_size=4,
                           category="Shop", progress=False, rqvae=RQVAEOptions(lr=0.0))
    assert not (tmp_path / "out").exists()

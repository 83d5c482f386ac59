"""RQ-VAE as a small LightningModule: MLP encoder -> residual VQ -> mirror MLP decoder (MiniOneRec's default).

Loss = ``mse(decoder(z_q), x) + vq_loss_coef * vq_loss`` with the VQ loss of
:class:`~rec_lightning.sids.quantize.ResidualVectorQuantizer` (codebook + 0.25 commitment, straight-through).
Codebooks are initialised by residual k-means on the encoder outputs of the first training batch
(use the full batch, as the original does with N ~ 3.6k). Xavier-normal weights, zero biases.
"""

from __future__ import annotations

from typing import Sequence

import lightning.pytorch as pl
import torch
from torch import nn

from rec_lightning.sids.build import Quantised, RQVAEOptions
from rec_lightning.sids.collisions import collision_rate
from rec_lightning.sids.quantize import ResidualVectorQuantizer


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers through ``dims`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(d_in, d_out)
        nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAEModule(pl.LightningModule):
    """Residual-quantised autoencoder over item embeddings; its codes become SIDs.

    Args:
        input_dim: embedding size (384 for MiniLM).
        hidden_dims: encoder hidden sizes (the decoder mirrors them).
        latent_dim: size of the quantised latent (code dimension).
        num_levels: residual levels L.
        codebook_size: codes per level K.
        commitment_coef: weight of the commitment term.
        vq_loss_coef: weight of the VQ loss against the reconstruction loss.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        kmeans_init: initialise codebooks by k-means on the first batch.
        kmeans_iters: Lloyd iterations of that initialisation.
        seed: seed of the k-means initialisation.
    """

    def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (512, 256, 128), latent_dim: int = 32,
                 num_levels: int = 3, codebook_size: int = 256, commitment_coef: float = 0.25,
                 vq_loss_coef: float = 1.0, lr: float = 1e-3, weight_decay: float = 0.0,
                 kmeans_init: bool = True, kmeans_iters: int = 50, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        self.quantizer = ResidualVectorQuantizer(num_levels, codebook_size, latent_dim, commitment_coef)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B, input_dim]`` -> reconstruction, codes ``[B, L]``, losses and the last level's residual."""
        z = self.encoder(x)  # [B, latent]
        z_q, codes, vq_loss, last_residual = self.quantizer(z)
        reconstruction = self.decoder(z_q)  # [B, input_dim]
        recon_loss = nn.functional.mse_loss(reconstruction, x)
        loss = recon_loss + self.hparams.vq_loss_coef * vq_loss
        return {"loss": loss, "recon_loss": recon_loss, "vq_loss": vq_loss, "codes": codes,
                "reconstruction": reconstruction, "last_residual": last_residual}

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x = batch[0]
        if self.hparams.kmeans_init and not bool(self.quantizer.initialized):
            with torch.no_grad():
                self.quantizer.init_from_data(self.encoder(x), self.hparams.seed, self.hparams.kmeans_iters)
        out = self(x)
        self.log_dict({"train/loss": out["loss"], "train/recon_loss": out["recon_loss"],
                       "train/vq_loss": out["vq_loss"],
                       "train/collision_rate": collision_rate(out["codes"])},
                      prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return out["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[N, L]`` and the last level's residuals ``[N, latent]`` of ``x [N, input_dim]``, in eval mode."""
        was_training = self.training
        self.eval()
        codes, residuals = [], []
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + batch_size].to(self.device)
            _, code, _, last_residual = self.quantizer(self.encoder(chunk))
            codes.append(code.cpu())
            residuals.append(last_residual.cpu())
        self.train(was_training)
        return torch.cat(codes), torch.cat(residuals)


def fit_rqvae(x: torch.Tensor, levels: int, codebook_size: int, seed: int, options: RQVAEOptions,
              progress: bool) -> Quantised:
    """Train an :class:`RQVAEModule` on ``x [N, D]`` with its own Trainer; the ``rq-vae`` quantiser of build-sids.

    Pass it as ``fit_rqvae`` to :func:`rec_lightning.sids.build.build_sids`. The result holds the codes, the last
    level's residuals and codebooks (CPU), the relative reconstruction error, the final metrics and the module.
    """
    pl.seed_everything(seed, verbose=False)
    module = RQVAEModule(x.shape[1], options.hidden_dims, options.latent_dim, levels, codebook_size,
                         options.commitment_coef, lr=options.lr, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=options.batch_size,
                                         shuffle=True, generator=torch.Generator().manual_seed(seed))
    trainer = pl.Trainer(max_epochs=options.epochs, max_steps=options.max_steps, accelerator=options.accelerator,
                         devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                         gradient_clip_val=1.0, deterministic=True)
    trainer.fit(module, loader)
    codes, last_residual = module.encode(x)
    with torch.no_grad():
        module.eval()
        out = module(x.to(module.device))
    error = float(((x - out["reconstruction"].cpu()) ** 2).sum() / (x ** 2).sum())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["steps"] = float(trainer.global_step)
    codebooks = [c.detach().cpu() for c in module.quantizer.codebooks]
    return Quantised(codes, last_residual, codebooks, error, {"rqvae_final_metrics": metrics, "module": module})

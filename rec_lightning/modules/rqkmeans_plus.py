"""RQ-KMeans+ (MiniOneRec): an RQ-VAE that starts exactly at the balanced RQ-KMeans solution, then trains.

Model, with latent dim = input dim D:

    z     = x + MLP_enc(x)                       # residual encoder, last Linear zero-initialised
    z_q   = residual VQ of z (argmin codes)      # codebooks [L, K, D] warm-started from RQ-KMeans
    x_hat = z_q + MLP_dec(z_q)                   # residual decoder, last Linear zero-initialised

Loss = ``mse(x_hat, x) + vq_loss`` (codebook + ``commitment_coef`` x commitment, straight-through; see
:class:`~rec_lightning.sids.quantize.ResidualVectorQuantizer`). AdamW (weight decay 0), gradient clip 1.0,
deterministic for a seed.

At step 0: ``z = x``, the codes are the argmin codes of the warm-start codebooks (residuals computed as
``ResidualVectorQuantizer.forward`` does; not the balanced assignment that produced those codebooks) and
``x_hat`` is the sum of their codewords, i.e. the RQ-KMeans reconstruction.

Deviations from MiniOneRec (rq/rqkmeans_plus.py), on purpose:

- The decoder is residual too. MiniOneRec's decoder is a plain, randomly initialised MLP, so its step-0
  reconstruction is noise and the warm start is only a warm start of the codes; here the step-0 model *is*
  the RQ-KMeans solution, so the reconstruction error is well defined from the start and training can only
  be judged against it.
- Best state kept: the full-data relative reconstruction error ``||x - x_hat||^2 / ||x||^2`` is measured at
  step 0 and every ``eval_every_n_epochs`` epochs (and after the last); the returned model is the state
  with the lowest one, so its error is never above the warm start's.
- Small MLPs by default (one hidden layer of 512, against MiniOneRec's 2560 -> 2048 -> ... -> 64 -> 2560):
  the MLPs only learn a correction around the identity, and this trains on a CPU in minutes (3.7k items x 384:
  about 0.6 s per epoch of batch 1024 on one busy CPU thread, so the default 200 epochs take about 2 minutes).
- No learning-rate warm-up (MiniOneRec: 50 epochs): the zero-initialised last layers already make the
  first steps small.
"""

from __future__ import annotations

import copy
from typing import Sequence

import lightning.pytorch as pl
import torch
from torch import nn

from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.rqvae import mlp
from rec_lightning.sids.build import Quantised, RQKMeansPlusOptions
from rec_lightning.sids.collisions import collision_rate
from rec_lightning.sids.quantize import ResidualVectorQuantizer


def residual_mlp(dim: int, hidden_dims: Sequence[int]) -> nn.Sequential:
    """:func:`~rec_lightning.modules.rqvae.mlp` ``dim -> hidden_dims -> dim`` whose last Linear is all zeros."""
    net = mlp([dim, *hidden_dims, dim])
    nn.init.zeros_(net[-1].weight)  # the bias is zero already: the MLP starts as the zero map
    return net


class RQKMeansPlusModule(pl.LightningModule):
    """Residual encoder -> residual VQ -> residual decoder, latent dim = input dim; codes become SIDs.

    Args:
        input_dim: embedding size D (also the latent and code size).
        num_levels: residual levels L.
        codebook_size: codes per level K.
        hidden_dims: hidden sizes of the encoder's MLP (the decoder's mirrors them).
        commitment_coef: weight of the commitment term.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (0: decay would shrink the warm-started codebooks).
    """

    def __init__(self, input_dim: int, num_levels: int = 3, codebook_size: int = 256,
                 hidden_dims: Sequence[int] = (512,), commitment_coef: float = 0.25, lr: float = 1e-4,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = residual_mlp(input_dim, hidden_dims)
        self.decoder = residual_mlp(input_dim, tuple(reversed(hidden_dims)))
        self.quantizer = ResidualVectorQuantizer(num_levels, codebook_size, input_dim, commitment_coef)

    @torch.no_grad()
    def warm_start(self, codebooks: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """Copy ``[L, K, D]`` codebooks (e.g. balanced RQ-KMeans') into the quantiser.

        Raises:
            ValueError: the shape is not the quantiser's ``[L, K, D]``.
        """
        stacked = codebooks if isinstance(codebooks, torch.Tensor) else torch.stack(list(codebooks))
        if tuple(stacked.shape) != tuple(self.quantizer.codebooks.shape):
            raise ValueError(f"warm-start codebooks have shape {tuple(stacked.shape)}, expected [L, K, D] = "
                             f"{tuple(self.quantizer.codebooks.shape)}")
        self.quantizer.codebooks.copy_(stacked.to(self.quantizer.codebooks))
        self.quantizer.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B, D]`` -> reconstruction ``[B, D]``, codes ``[B, L]``, losses and the last level's residual."""
        z = x + self.encoder(x)  # [B, D]
        z_q, codes, vq_loss, last_residual = self.quantizer(z)  # [B, D], [B, L], scalar, [B, D]
        reconstruction = z_q + self.decoder(z_q)  # [B, D]
        recon_loss = nn.functional.mse_loss(reconstruction, x)
        return {"loss": recon_loss + vq_loss, "recon_loss": recon_loss, "vq_loss": vq_loss, "codes": codes,
                "reconstruction": reconstruction, "last_residual": last_residual}

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x = batch[0]
        out = self(x)
        self.log_dict({"train/loss": out["loss"], "train/recon_loss": out["recon_loss"],
                       "train/vq_loss": out["vq_loss"], "train/collision_rate": collision_rate(out["codes"])},
                      prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return out["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 4096) -> dict[str, torch.Tensor | float]:
        """Over all of ``x [N, D]`` in eval mode: codes ``[N, L]``, last residuals ``[N, D]`` (CPU) and the
        relative reconstruction error ``||x - x_hat||^2 / ||x||^2``."""
        was_training = self.training
        self.eval()
        codes, residuals, squared_error, squared_norm = [], [], 0.0, 0.0
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + batch_size].to(self.device)  # [b, D]
            out = self(chunk)
            codes.append(out["codes"].cpu())
            residuals.append(out["last_residual"].cpu())
            squared_error += float(((out["reconstruction"] - chunk) ** 2).sum())
            squared_norm += float((chunk ** 2).sum())
        self.train(was_training)
        return {"codes": torch.cat(codes), "last_residual": torch.cat(residuals),
                "relative_error": squared_error / squared_norm}


class KeepBestReconstruction(pl.Callback):
    """Measures the full-data relative reconstruction error every ``every_n_epochs`` epochs (and after the
    last) and keeps a copy of the module's state whenever it is strictly below the best so far.

    Args:
        x: ``[N, D]`` the items the error is measured on.
        every_n_epochs: measuring period in epochs.
        best_error: the error of the state given as ``best_state`` (the step-0 model).
        best_state: that state (a ``state_dict`` copy).
    """

    def __init__(self, x: torch.Tensor, every_n_epochs: int, best_error: float, best_state: dict) -> None:
        self.x = x
        self.every_n_epochs = every_n_epochs
        self.best_error, self.best_state, self.best_epoch = best_error, best_state, 0
        self.last_error, self.epochs_run = best_error, 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: RQKMeansPlusModule) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed (the last one may be cut short by max_steps)
        self.epochs_run = epoch
        last = epoch == trainer.max_epochs or (trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps)
        if epoch % self.every_n_epochs and not last:
            return
        self.last_error = pl_module.evaluate(self.x)["relative_error"]
        pl_module.log("eval/relative_error", self.last_error, prog_bar=True)
        if self.last_error < self.best_error:
            self.best_error, self.best_epoch = self.last_error, epoch
            self.best_state = copy.deepcopy(pl_module.state_dict())


def fit_rqkmeans_plus(x: torch.Tensor, levels: int, codebook_size: int, seed: int, options: RQKMeansPlusOptions,
                      progress: bool, warm_start_codebooks: torch.Tensor | Sequence[torch.Tensor]) -> Quantised:
    """Train an :class:`RQKMeansPlusModule` on ``x [N, D]`` from warm-start codebooks; the ``rq-kmeans-plus``
    quantiser of build-sids (pass it as ``fit_rqkmeans_plus`` to :func:`rec_lightning.sids.build.build_sids`).

    Args:
        x: ``[N, D]`` float item embeddings.
        levels: residual levels L.
        codebook_size: codes per level K.
        seed: seed of the initial weights and the batch order.
        options: epochs, batch size, lr, hidden sizes, commitment, evaluation period, accelerator.
        progress: show Lightning's progress bar.
        warm_start_codebooks: ``[L, K, D]`` (or L x ``[K, D]``), e.g. balanced RQ-KMeans' codebooks of ``x``.

    Returns:
        Codes by argmin ``[N, L]``, last residuals ``[N, D]`` and codebooks (CPU) of the best state, its
        relative reconstruction error, and ``extra``: ``warm_start_error`` (step 0), ``final_error`` (the
        returned state's, <= ``warm_start_error``), ``last_epoch_error`` (the last measured one),
        ``epochs_run``, ``steps_run``, ``best_epoch`` (0: the warm start), ``final_metrics`` and ``module``.

    Raises:
        ConfigurationError: ``x`` not ``[N >= 2, D]`` float, or codebooks not ``[levels, codebook_size, D]``.
    """
    if x.ndim != 2 or x.shape[0] < 2 or not x.is_floating_point():
        raise ConfigurationError(f"rq-kmeans-plus needs float embeddings [num_items >= 2, dim], got {x.dtype} "
                                 f"{tuple(x.shape)}")
    options.check()
    x = x.float()
    pl.seed_everything(seed, verbose=False)
    module = RQKMeansPlusModule(x.shape[1], levels, codebook_size, options.hidden_dims, options.commitment_coef,
                                lr=options.lr)
    try:
        module.warm_start(warm_start_codebooks)
    except ValueError as err:
        raise ConfigurationError(f"rq-kmeans-plus: {err} (levels {levels}, codebook_size {codebook_size}, "
                                 f"embedding dim {x.shape[1]})") from None
    warm_error = module.evaluate(x)["relative_error"]
    keeper = KeepBestReconstruction(x, options.eval_every_n_epochs, warm_error, copy.deepcopy(module.state_dict()))
    metrics: dict[str, float] = {}
    steps_run = 0
    if options.epochs > 0:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=options.batch_size,
                                             shuffle=True, generator=torch.Generator().manual_seed(seed))
        trainer = pl.Trainer(max_epochs=options.epochs, max_steps=options.max_steps, accelerator=options.accelerator,
                             devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                             gradient_clip_val=1.0, deterministic=True, callbacks=[keeper])
        trainer.fit(module, loader)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        steps_run = trainer.global_step
    module.load_state_dict(keeper.best_state)
    final = module.evaluate(x)
    codebooks = [c.detach().cpu() for c in module.quantizer.codebooks]
    extra = {"warm_start_error": warm_error, "final_error": final["relative_error"],
             "last_epoch_error": keeper.last_error, "epochs_run": keeper.epochs_run, "steps_run": steps_run,
             "best_epoch": keeper.best_epoch,
             "final_metrics": metrics, "module": module}
    return Quantised(final["codes"], final["last_residual"], codebooks, final["relative_error"], extra)

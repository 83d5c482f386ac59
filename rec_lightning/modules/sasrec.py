"""SASRec (Kang & McAuley, 2018) as a LightningModule, trained from the split CSVs.

Item embedding (scaled by sqrt(hidden)) + learned positional embedding, dropout, then pre-LayerNorm
causal self-attention blocks (attention, then a GELU feed-forward, each residual) and a final
LayerNorm. The score of item j at a position is the dot product of that position's output with
item j's embedding (tied input/output embeddings). Deliberate deviation from the paper: training
uses the full softmax cross-entropy over every item at every position (as in most modern
reproductions, which it beats the paper's sampled binary loss with) instead of one sampled negative.

Inputs are left-padded item tokens (item id + 1; 0 = padding, see
:mod:`rec_lightning.data.item_sequences`). Validation ranks every item for each row's history
(:class:`~rec_lightning.evaluation.item_ranking.SIDRanker`, hits by SID as in ``evaluate``) and logs
``val/hr@K``, ``val/ndcg@K`` and ``val/mrr``, so ``ModelCheckpoint(monitor="val/ndcg@10")`` selects the
checkpoint. ``final_checkpoint/`` holds ``model.safetensors`` and ``sasrec.json`` (architecture + the
catalog checksum); :func:`load_sasrec` reads it back without unpickling.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rec_lightning.errors import ConfigurationError, CorruptFileError
from rec_lightning.evaluation.item_ranking import SIDRanker
from rec_lightning.evaluation.metrics import RankingMetrics, target_ranks
from rec_lightning.files.atomic import write_atomic, write_text_atomic
from rec_lightning.sids.codec import ItemCatalog

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "sasrec.json"
ARCHITECTURE_KEYS = ("num_columns", "max_history", "hidden_size", "num_layers", "num_heads", "dropout")


class CausalBlock(nn.Module):
    """Pre-LN causal self-attention + feed-forward, with padded keys masked."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ConfigurationError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * hidden_size, hidden_size))
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x [B, L, H]``; ``allowed [B, 1, L, L]`` True where a query may attend to a key."""
        batch, length, hidden = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.num_heads, -1).unbind(2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  attn_mask=allowed,
                                                  dropout_p=self.attention_dropout if self.training else 0.0)
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(batch, length, hidden)))  # [B, L, H]
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class SASRec(nn.Module):
    """The network: ``forward(input_ids [B, L]) -> hidden [B, L, H]``; :meth:`item_logits` scores items."""

    def __init__(self, num_columns: int, max_history: int = 10, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_columns, self.max_history, self.hidden_size = num_columns, max_history, hidden_size
        self.item_embedding = nn.Embedding(num_columns + 1, hidden_size, padding_idx=0)  # token = item id + 1
        self.position_embedding = nn.Embedding(max_history, hidden_size)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(CausalBlock(hidden_size, num_heads, dropout) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(hidden_size)
        nn.init.normal_(self.item_embedding.weight, std=hidden_size ** -0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.max_history:
            raise ValueError(f"sequences of {length} items exceed max_history {self.max_history}")
        positions = torch.arange(self.max_history - length, self.max_history, device=input_ids.device)  # [L]
        x = self.item_embedding(input_ids) * math.sqrt(self.hidden_size) + self.position_embedding(positions)
        x = self.embedding_dropout(x) * (input_ids != 0).unsqueeze(-1)  # [B, L, H]
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()  # [L, L]
        key_real = (input_ids != 0)[:, None, None, :]  # [B, 1, 1, L]
        itself = torch.eye(length, dtype=torch.bool, device=input_ids.device)  # a padded query attends to itself
        allowed = (causal & key_real) | itself  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed)
        return self.final_norm(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., H] -> [..., V]`` scores of item ids 0..V-1 (the padding token's column dropped)."""
        return hidden @ self.item_embedding.weight[1:].T

    @torch.no_grad()
    def score_histories(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded histories -> ``[B, V]`` next-item logits."""
        return self.item_logits(self(input_ids)[:, -1])


class SASRecModule(pl.LightningModule):
    """SASRec trained with full-softmax next-item cross-entropy at every position.

    Args:
        hidden_size: embedding and block width.
        num_layers: causal attention blocks.
        num_heads: attention heads.
        dropout: embedding, attention and residual dropout.
        max_history: sequence length (default: the datamodule's ``max_history``).
        num_columns: item-score columns (default: the datamodule's catalog, max item id + 1).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        ks: validation cut-offs.
    """

    def __init__(self, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, dropout: float = 0.2,
                 max_history: int | None = None, num_columns: int | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, ks: tuple[int, ...] = (1, 3, 5, 10, 20, 50)) -> None:
        super().__init__()
        # sizes left to the data are recorded once known (_build): a None here would clash with the data
        # module's max_history when Lightning merges both hparams for the logger
        self.save_hyperparameters(ignore=[name for name, value in (("max_history", max_history),
                                                                   ("num_columns", num_columns)) if value is None])
        self.network: SASRec | None = None
        self.ranker: SIDRanker | None = None
        self.predict_step_fn = None  # set by RankingPredictionWriter in predict
        self.val_metrics = RankingMetrics(ks)
        self.catalog_checksum = ""
        if num_columns is not None and max_history is not None:
            self._build(num_columns, max_history)

    def _build(self, num_columns: int, max_history: int) -> None:
        hp = self.hparams
        self.hparams.update(num_columns=num_columns, max_history=max_history)
        self.network = SASRec(num_columns, max_history, hp.hidden_size, hp.num_layers, hp.num_heads, hp.dropout)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "num_columns"):
            raise TypeError("SASRecModule trains from rec_lightning.data.item_sequences.ItemSequenceDataModule "
                            "(data.class_path in the config)")
        catalog = datamodule.catalog
        if self.network is None:
            self._build(datamodule.num_columns, self.hparams.get("max_history") or datamodule.max_history)
        elif self.network.num_columns != datamodule.num_columns:
            raise ConfigurationError(f"the model scores {self.network.num_columns} item ids, the data has "
                             f"{datamodule.num_columns}: the same catalog is needed")
        self.ranker = SIDRanker(catalog)
        self.catalog_checksum = catalog.checksum()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.network.item_logits(self.network(batch["input_ids"]))  # [B, L, V]
        labels = batch["labels"] - 1  # [B, L] item ids, -1 = no label
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-1)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        scores = self.network.score_histories(batch["input_ids"]).cpu()  # [B, V]
        keys, _ = self.ranker.rank(scores, max(self.val_metrics.ks))
        targets = self.ranker.target_keys(batch["target_item_id"].tolist())
        self.val_metrics.update(target_ranks(keys, targets))

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Each row's ranked list: ``item_ids [B, K]`` (the best item of each SID, best first) and their ``scores``;
        with ``predict_step_fn`` set (the RankingPredictionWriter, which ``predict`` adds) that function's output."""
        if self.predict_step_fn is not None:
            return self.predict_step_fn(self, batch, batch_idx)
        scores = self.network.score_histories(batch["input_ids"]).float().cpu()  # [B, V]
        keys, items = self.ranker.rank(scores, max(self.val_metrics.ks))  # [B, K] each
        return {"item_ids": items, "scores": scores.gather(1, items.clamp(min=0))}

    def on_validation_epoch_end(self) -> None:
        results = self.val_metrics.compute()
        self.val_metrics.reset()
        for name, value in results.items():
            if name not in ("invalid", "count"):
                self.log(f"val/{name}", value.float(), prog_bar=name in ("hr@10", "ndcg@10"))

    def load_trainable_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy weights (e.g. from the best ``.ckpt``) into the network."""
        self.load_state_dict({k: v for k, v in state_dict.items() if k.startswith("network.")}, strict=False)

    def save_final_checkpoint(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``sasrec.json`` into ``directory`` (each atomically)."""
        config = {key: self.hparams[key] for key in ARCHITECTURE_KEYS}
        config.update(model="sasrec", catalog_checksum=self.catalog_checksum)
        return save_sasrec(self.network, config, directory)


def save_sasrec(network: SASRec, config: dict[str, Any], directory: str | Path) -> Path:
    """Write a SASRec's weights (safetensors) and config (json) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    write_atomic(directory / WEIGHTS_FILE, lambda staging: save_file(state, str(staging)))
    write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=1) + "\n")
    return directory


def load_sasrec(directory: str | Path) -> tuple[SASRec, dict[str, Any]]:
    """Read a ``final_checkpoint/`` written by :class:`SASRecModule` (network in eval mode, its config).

    Raises:
        FileNotFoundError: a missing file, naming it and how to make one.
        ValueError: a config without the architecture fields.
    """
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: a SASRec checkpoint folder holds {CONFIG_FILE} and "
                                    f"{WEIGHTS_FILE}. Fix: pass ROOT/final_checkpoint written by `python -m "
                                    "rec_lightning fit --config configs/sasrec.yaml`")
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{directory / CONFIG_FILE}: not valid JSON ({err}). Fix: re-run the SASRec fit") from None
    missing = [key for key in ARCHITECTURE_KEYS if key not in config]
    if config.get("model") != "sasrec" or missing:
        raise CorruptFileError(f"{directory / CONFIG_FILE}: not a SASRec config (model={config.get('model')!r}, missing "
                         f"{missing}). Fix: pass a folder written by SASRecModule")
    network = SASRec(**{key: config[key] for key in ARCHITECTURE_KEYS})
    network.load_state_dict(load_file(directory / WEIGHTS_FILE))
    return network.eval(), config


def check_sasrec_catalog(config: dict, catalog: ItemCatalog, checkpoint: str | Path) -> None:
    """Refuse a SASRec trained on another item index than ``catalog`` (its scores would be for other items)."""
    checksum, num_columns = catalog.checksum(), max(catalog.item_ids) + 1
    if config.get("catalog_checksum") not in (None, "", checksum) or config["num_columns"] != num_columns:
        raise ConfigurationError(
            f"{checkpoint}: the SASRec was trained on another item index (checksum "
            f"{str(config.get('catalog_checksum', ''))[:12]}, {config['num_columns']} item ids) than this data "
            f"({catalog.source}: {checksum[:12]}, {num_columns} item ids). Fix: train SASRec on the same data "
            "(`python -m rec_lightning fit --config configs/sasrec.yaml --data.data_dir ...`)")

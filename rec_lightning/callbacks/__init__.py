"""Lightning callbacks: ranking evaluation (validation metrics, test step), checkpoints and the final export."""

from rec_lightning.callbacks.checkpoint import ModelCheckpoint
from rec_lightning.callbacks.export import FinalCheckpoint
from rec_lightning.callbacks.ranking import RankingEvaluation

__all__ = ["FinalCheckpoint", "ModelCheckpoint", "RankingEvaluation"]

"""Lightning callbacks: ranking evaluation (validation metrics, test step) and the final checkpoint export."""

from rec_lightning.callbacks.export import FinalCheckpoint
from rec_lightning.callbacks.ranking import RankingEvaluation

__all__ = ["FinalCheckpoint", "RankingEvaluation"]

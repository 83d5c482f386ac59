"""Data layer: files -> validated records -> task examples -> tensors -> ``RecDataModule``."""

from rec_lightning.data.datamodule import RecDataModule
from rec_lightning.data.records import RecData, SequenceRecord, load_rec_data
from rec_lightning.data.tasks import TASKS, Example, next_item_example

__all__ = ["RecDataModule", "RecData", "SequenceRecord", "load_rec_data", "TASKS", "Example", "next_item_example"]

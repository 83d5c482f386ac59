"""``RecDataModule``: files -> validated records -> task examples -> tokenized batches.

Training uses a mix of prompt tasks (per-task sampling weights); validation loss and generation use
the canonical next-item prompt. Under DDP, training batches are sharded by rank and every
evaluation row is seen exactly once (no repeated padding rows). With no ``data_dir`` the embedded
demo data set is generated; with no ``tokenizer`` a byte-level BPE is trained on the data's text.
The DataLoaders (sharding, mid-epoch resume) are in :mod:`rec_lightning.data.loaders`, the catalog and
tokenizer in :mod:`rec_lightning.data.vocabulary`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl

from rec_lightning.data.dataset import RecDataset
from rec_lightning.data.dataset_cache import file_fingerprint, load_or_build, tokenizer_fingerprint
from rec_lightning.data.demo import DEMO_CATEGORY, make_demo_data
from rec_lightning.data.holdout import split_rows
from rec_lightning.data.loaders import DataLoadersMixin
from rec_lightning.data.records import RecData, load_rec_data
from rec_lightning.data.tasks import (
    DEFAULT_TRAIN_TASKS,
    NEXT_ITEM_TASKS,
    TASKS,
    Example,
    TaskMix,
    next_item_example,
)
from rec_lightning.data.vocabulary import VocabularyMixin
from rec_lightning.data.windows import maximal_windows
from rec_lightning.errors import ConfigurationError
from rec_lightning.files.layout import find_category_files, find_split_csv, only_category
from rec_lightning.prompts import NEXT_ITEM, category_display_name, get_template
from rec_lightning.sids.codec import ItemCatalog

log = logging.getLogger(__name__)
_STAGE_SPLITS = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}


def default_cache_dir() -> Path:
    """``$REC_LIGHTNING_CACHE``, else ``~/.cache/rec_lightning``."""
    return Path(os.environ.get("REC_LIGHTNING_CACHE", Path.home() / ".cache" / "rec_lightning"))


def demo_data_dir(cache_dir: str | Path | None = None, seed: int = 0, num_users: int = 500, create: bool = False) -> Path:
    """The folder of the generated demo data set (``data_dir=None``) in ``cache_dir``; ``create`` generates it if missing."""
    folder = (Path(cache_dir) if cache_dir else default_cache_dir()) / "demo" / f"seed{seed}-users{num_users}"
    if create and not (folder / "index").is_dir():
        log.info("generating the demo data set in %s", folder)
        make_demo_data(folder, seed=seed, num_users=num_users)
    return folder


class RecDataModule(VocabularyMixin, DataLoadersMixin, pl.LightningDataModule):
    """SID-tokenized sequences of one category in the MiniOneRec layout.

    Args:
        data_dir: folder with ``train/ valid/ test/ info/ index/``; None generates the demo data set.
        category: file-name category, e.g. ``Industrial_and_Scientific``; None picks the only one present.
        category_name: words used in prompts; default derived from ``category``
            (``"industrial and scientific items"``).
        tokenizer: hub id or local folder of the model's tokenizer; None trains a byte-level BPE on
            the data (for models built from a config).
        tokenizer_vocab_size: vocabulary of that trained BPE (before SID tokens).
        train_tasks: task name -> sampling weight per epoch (1 = every example once, 0.5 = a seeded
            half, 2 = twice). Tasks: sid_history_to_sid, title_history_to_sid, sid_history_to_title,
            title_history_to_title, title_to_sid, sid_to_title.
        max_length: longest tokenized example; longer prompts drop their oldest history items, responses never shrink.
        batch_size: training micro-batch per device. Effective batch = batch_size x
            accumulate_grad_batches x devices x nodes.
        eval_batch_size: validation/test/generation batch per device (default: batch_size).
        num_workers: DataLoader workers.
        seed: task sampling and shuffling seed.
        group_by_length: batch examples of similar length together (less padding).
        cache_dir: where demo data and trained tokenizers go (default ``~/.cache/rec_lightning``).
        demo_seed: seed of the generated demo data set.
        demo_num_users: users in the generated demo data set.
        train_format: ``sft`` yields prompt + response with labels (teacher forcing); ``prompts`` yields
            left-padded prompts with their targets only, for RL (GRPO), where only tasks whose answer
            is a SID may be weighted.
        history_loss: also train on predicting each history item from the ones before it (the
            prompt's SID tokens get labels, as in SASRec): many more training signals per example, for
            models trained from scratch on compact prompts. Training only; validation loss stays on the
            response.
        drop_contained_windows: with ``history_loss``, train sequence tasks only on each user's maximal
            rows: a row whose item sequence lies inside a longer row of the same user adds no target that
            row does not already train (see :mod:`rec_lightning.data.windows`); about 3x fewer tokens per
            epoch on MiniOneRec's splits.
        next_item_task: the run's next-item prompt, used for validation, generation, evaluation and
            GRPO: ``sid_history_to_sid`` (MiniOneRec's framed prompt) or ``sid_history_to_sid_compact``
            (history SIDs only, for models trained from scratch). Recorded in the final checkpoint.
        cache_tokenized: keep the tokenized train and validation sets in ``cache_dir/datasets`` and map
            them on later runs and on every DDP rank instead of parsing, validating and tokenizing the
            splits again (:mod:`rec_lightning.data.dataset_cache`: keyed by the files' bytes, the
            tokenizer and every option that shapes an example).
        packing: lay each training and validation micro-batch's examples end to end in as few rows as fit,
            each example attending only to itself (:mod:`rec_lightning.data.packing`). A step still sees
            ``batch_size`` examples (same sampler, epochs, DDP shards and LR schedule), with little padding
            even in random order. Needs ``train_format: sft``.
        pack_length: packed row length; default: chosen per batch for the fewest positions, up to
            ``max_length``. A fixed value gives one tensor shape for every step.
        holdout_fraction: keep this seeded fraction of the train rows out of training (0 = train on every
            row), e.g. 0.1 in an SFT run whose model GRPO refines later on the same folder: GRPO then has prompts
            SFT has not fitted (:mod:`rec_lightning.data.holdout`). Only training examples change: validation,
            and the train split that rewards, priors and baselines count (:meth:`records`), stay whole.
        holdout_seed: seed of the held-out draw; default ``seed``. Set the same fraction and seed in the
            later run to address the same slice.
        train_on: ``kept`` trains on the rows the draw keeps (every row when ``holdout_fraction`` is 0);
            ``heldout`` on the held-out slice alone (e.g. GRPO on exactly the prompts SFT never trained on).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        category: str | None = None,
        category_name: str | None = None,
        tokenizer: str | None = None,
        tokenizer_vocab_size: int = 4096,
        train_tasks: dict[str, float] | None = None,
        max_length: int = 512,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        group_by_length: bool = False,
        cache_dir: str | None = None,
        demo_seed: int = 0,
        demo_num_users: int = 500,
        train_format: Literal["sft", "prompts"] = "sft",
        next_item_task: str = NEXT_ITEM,
        history_loss: bool = False,
        drop_contained_windows: bool = False,
        cache_tokenized: bool = True,
        packing: bool = False,
        pack_length: int | None = None,
        holdout_fraction: float = 0.0,
        holdout_seed: int | None = None,
        train_on: Literal["kept", "heldout"] = "kept",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if train_format not in ("sft", "prompts"):
            raise ConfigurationError(f"train_format must be 'sft' or 'prompts', got {train_format!r}")
        if next_item_task not in NEXT_ITEM_TASKS:
            raise ConfigurationError(f"next_item_task must be one of {list(NEXT_ITEM_TASKS)}, got {next_item_task!r}")
        self.next_item_task = next_item_task
        if history_loss and train_format != "sft":
            raise ConfigurationError("history_loss needs train_format='sft' (it labels prompt tokens for teacher forcing)")
        self.history_loss = history_loss
        if drop_contained_windows and not history_loss:
            raise ConfigurationError("drop_contained_windows needs history_loss: true (without it a contained row's target "
                             "is trained by no other row)")
        self.drop_contained_windows = drop_contained_windows
        default_tasks = DEFAULT_TRAIN_TASKS if train_format == "sft" else {next_item_task: 1.0}
        self.train_tasks = dict(default_tasks if train_tasks is None else train_tasks)
        unknown = sorted(set(self.train_tasks) - set(TASKS))
        if unknown:
            raise ConfigurationError(f"unknown train task(s) {unknown}; known tasks: {sorted(TASKS)}")
        not_sid = sorted(t for t, w in self.train_tasks.items() if w > 0 and get_template(t).response != "sid")
        if train_format == "prompts" and not_sid:
            raise ConfigurationError(f"train_format='prompts' (RL) needs tasks whose answer is a SID; {not_sid} answer with "
                             "a title: give them weight 0")
        self.train_format = train_format
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.tokenizer_name = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.group_by_length = group_by_length
        self.cache_tokenized = cache_tokenized
        if packing and train_format != "sft":
            raise ConfigurationError("packing needs train_format='sft' (it packs labelled prompt + response examples); "
                                     "RL prompts are left-padded for generation: set packing: false")
        if pack_length is not None and pack_length < 1:
            raise ConfigurationError(f"pack_length must be a positive number of tokens or null, got {pack_length}")
        self.packing = packing
        self.pack_length = pack_length
        if not 0.0 <= holdout_fraction < 1.0:
            raise ConfigurationError(f"holdout_fraction must be in [0, 1) (0 = train on every row), got {holdout_fraction}")
        if train_on not in ("kept", "heldout"):
            raise ConfigurationError(f"train_on must be 'kept' or 'heldout', got {train_on!r}")
        if train_on == "heldout" and holdout_fraction == 0:
            raise ConfigurationError("train_on: heldout needs a holdout_fraction above 0 (the slice to train on), "
                                     "e.g. the SFT run's holdout_fraction and holdout_seed")
        self.holdout_fraction = holdout_fraction
        self.holdout_seed = seed if holdout_seed is None else holdout_seed
        self.train_on = train_on
        self._holdout_logged = False
        self._fingerprints: dict | None = None  # of the category's files and the tokenizer (see _cache_inputs)
        self.data: RecData | None = None
        self._tokenizer = None
        self._catalog: ItemCatalog | None = None
        self.datasets: dict[str, RecDataset] = {}
        self._generation_datasets: dict[tuple, RecDataset] = {}

    # ------------------------------------------------------------------ locations
    @property
    def data_dir(self) -> Path:
        if self.hparams.data_dir is not None:
            return Path(self.hparams.data_dir).expanduser()
        return demo_data_dir(self.cache_dir, self.hparams.demo_seed, self.hparams.demo_num_users)

    @property
    def category(self) -> str:
        if self.hparams.category is not None:
            return self.hparams.category
        if self.hparams.data_dir is None:
            return DEMO_CATEGORY
        return only_category(self.data_dir, fix="set data.category to one of them")

    @property
    def category_name(self) -> str:
        return self.hparams.category_name or category_display_name(self.category)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Generate the demo data (if used and missing) and train the data tokenizer (if used)."""
        if self.hparams.data_dir is None and not (self.data_dir / "index").is_dir():
            log.info("generating the demo data set in %s", self.data_dir)
            make_demo_data(self.data_dir, seed=self.hparams.demo_seed, num_users=self.hparams.demo_num_users)
        if self.tokenizer_name is None:
            self._load_tokenizer()

    def setup(self, stage: str | None = None) -> None:
        """Tokenize the splits this stage trains or validates on (or map them from the cache); load the others."""
        splits = _STAGE_SPLITS.get(stage or "fit", ("train", "valid", "test"))
        if not self.data_dir.exists() and self.hparams.data_dir is None:
            self.prepare_data()
        if "train" in splits and "train" not in self.datasets:
            self.datasets["train"] = self._tokenized("train")
        if "valid" in splits and stage in (None, "fit", "validate") and "valid" not in self.datasets:
            self.datasets["valid"] = self._tokenized("valid")
        self._load_splits([s for s in splits if s not in ("train", "valid")])

    def _load_splits(self, splits) -> None:
        needed = [s for s in splits if self.data is None or s not in self.data.splits]
        if not needed:
            return
        loaded = load_rec_data(self.data_dir, self.category, needed, catalog=self.catalog)
        if self.data is None:
            self.data = loaded
        else:
            self.data.splits.update(loaded.splits)

    def _tokenized(self, split: str) -> RecDataset:
        """The training task mix (``train``) or the next-item examples with responses (``valid``), tokenized."""
        if split == "train":
            examples = self.train_examples
            options = dict(with_response=self.train_format == "sft",
                           prompt_label_ids=self.sid_token_ids if self.history_loss else None)
        else:
            examples = lambda: self.generation_examples(split)  # noqa: E731
            options = dict(with_response=True, prompt_label_ids=None)

        def build():
            return RecDataset(examples(), self.tokenizer, self.max_length, keep_examples=False, **options)

        if not self.cache_tokenized:
            return build()
        dataset = load_or_build(self.cache_dir / "datasets", self._cache_inputs(split), build,
                                max_length=self.max_length, **options)
        if split == "train" and self.holdout_fraction > 0 and not self._holdout_logged:  # mapped, not built: say so too
            log.info("holdout_fraction %g (seed %d): training on the %s rows (%d examples, tokenized set from the "
                     "cache)", self.holdout_fraction, self.holdout_seed, self.train_on, len(dataset))
        return dataset

    def _cache_inputs(self, split: str) -> dict:
        """Everything a tokenized split depends on (see :mod:`rec_lightning.data.dataset_cache`)."""
        from rec_lightning import __version__

        if self._fingerprints is None:  # what train and valid share: hashed once per module
            files = find_category_files(self.data_dir, self.category)
            self._fingerprints = {"category_files": file_fingerprint([p for p in (files.index, files.info, files.item)
                                                                      if p is not None]),
                                  "tokenizer": tokenizer_fingerprint(self.tokenizer)}
        tasks = self.train_tasks if split == "train" else {self.next_item_task: 1.0}
        return {"split": split, "data": file_fingerprint([find_split_csv(self.data_dir, split, self.category)]),
                **self._fingerprints, "tasks": tasks,
                "templates": {task: repr(get_template(task)) for task in tasks}, "category_name": self.category_name,
                "max_length": self.max_length, "train_format": self.train_format if split == "train" else "sft",
                "drop_contained_windows": self.drop_contained_windows if split == "train" else False,
                "seed": self.seed if split == "train" else None, "library": __version__,
                **({"holdout": [self.holdout_fraction, self.holdout_seed, self.train_on]}
                   if split == "train" and self.holdout_fraction > 0 else {})}

    # ------------------------------------------------------------------ examples
    def train_examples(self) -> TaskMix:
        """The training task mix, sampled with ``seed`` (examples rendered when read, a slice at a time)."""
        records = self.training_records()
        if self.drop_contained_windows:
            kept = maximal_windows(records)
            log.info("drop_contained_windows: %d of %d training rows are maximal windows", len(kept), len(records))
            records = kept
        return TaskMix(self.train_tasks, records, self.catalog, self.category_name, self.seed)

    @property
    def holdout(self) -> dict | None:
        """The held-out slice as recorded in checkpoints: ``{"fraction", "seed", "train_on"}``; None without one."""
        if self.holdout_fraction == 0:
            return None
        return {"fraction": self.holdout_fraction, "seed": self.holdout_seed, "train_on": self.train_on}

    def training_records(self) -> list:
        """The train rows this run trains on: all of them, or the kept / held-out part of the seeded draw
        (``holdout_fraction``, ``holdout_seed``, ``train_on``), in file order."""
        records = self.records("train")
        if self.holdout_fraction == 0:
            return records
        kept, held_out = split_rows(len(records), self.holdout_fraction, self.holdout_seed)
        chosen = kept if self.train_on == "kept" else held_out
        self._holdout_logged = True
        log.info("holdout_fraction %g (seed %d): training on the %s rows, %d of %d train rows", self.holdout_fraction,
                 self.holdout_seed, self.train_on, chosen.size, len(records))
        return [records[i] for i in chosen.tolist()]

    def generation_examples(self, split: str) -> list[Example]:
        """The run's next-item examples (``next_item_task``) of a split, in file order."""
        return [next_item_example(record, self.category_name, self.next_item_task) for record in self.records(split)]

    def records(self, split: str) -> list:
        """The validated rows of ``split`` (loaded on first use)."""
        self._load_splits([split])
        return self.data.splits[split]

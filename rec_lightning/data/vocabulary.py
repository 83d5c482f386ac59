"""The item catalog and the tokenizer of :class:`~rec_lightning.data.datamodule.RecDataModule`.

What a model trained on the data must share with it: the catalog (item id <-> SID <-> title, read from
the category's index) and the tokenizer with every SID token added (the model's, or a byte-level BPE
trained on the data's text and cached by content hash under ``cache_dir``).
"""

from __future__ import annotations

from rec_lightning.data.tokenizer import add_sid_tokens, cached_data_tokenizer, load_tokenizer
from rec_lightning.sids.codec import ItemCatalog


class VocabularyMixin:
    """``catalog``, ``tokenizer``, ``sid_token_ids`` and ``item_token_ids`` of
    :class:`~rec_lightning.data.datamodule.RecDataModule`, each loaded on first use.

    Reads the module's location (``data_dir``, ``category``, ``category_name``, ``cache_dir``, ``hparams``),
    ``tokenizer_name``, its loaded ``data`` and ``prepare_data``; keeps ``_catalog``, ``_tokenizer`` and
    ``_sid_token_ids``, and forgets the tokenized sets' ``_fingerprints`` (they hash the tokenizer) when
    :meth:`use_tokenizer` swaps it.
    """

    @property
    def catalog(self) -> ItemCatalog:
        if self.data is not None:
            return self.data.catalog
        if self._catalog is None:
            if self.hparams.data_dir is None and not self.data_dir.exists():
                self.prepare_data()
            self._catalog = ItemCatalog.from_data_dir(self.data_dir, self.category)
        return self._catalog

    def _load_tokenizer(self):
        if self.tokenizer_name is not None:
            return load_tokenizer(self.tokenizer_name)
        # Cached by content hash under cache_dir (beside the demo data, which lives there too); a user's data
        # folder is never written to.
        root = self.cache_dir / "tokenizers"
        return cached_data_tokenizer(self.catalog, self.category_name, root, self.hparams.tokenizer_vocab_size)

    @property
    def tokenizer(self):
        """The tokenizer with every SID token added (loaded on first use)."""
        if self._tokenizer is None:
            tokenizer = self._load_tokenizer()
            self._sid_token_ids = add_sid_tokens(tokenizer, self.catalog.sid_tokens)
            self._tokenizer = tokenizer
        return self._tokenizer

    def use_tokenizer(self, tokenizer) -> None:
        """Use an already loaded tokenizer (e.g. a checkpoint's, loaded once for inference) instead of loading
        ``tokenizer`` again; the catalog's SID tokens are added if missing."""
        self._sid_token_ids = add_sid_tokens(tokenizer, self.catalog.sid_tokens)
        self._tokenizer = tokenizer
        self._fingerprints = None

    @property
    def sid_token_ids(self) -> list[int]:
        """Token ids of ``catalog.sid_tokens``, in that order."""
        self.tokenizer  # noqa: B018 (loads it)
        return list(self._sid_token_ids)

    def item_token_ids(self) -> dict[str, list[int]]:
        """Each distinct SID -> its token ids (one per level)."""
        tokenizer = self.tokenizer
        return {sid: tokenizer.convert_tokens_to_ids(list(self.catalog.item(ids[0]).tokens))
                for sid, ids in ((s, self.catalog.items_with_sid(s)) for s in self.catalog.sids)}

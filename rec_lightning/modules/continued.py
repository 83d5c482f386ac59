"""Fine-tuning again from a rec_lightning checkpoint folder (``backbone.model_name_or_path: run/final_checkpoint``).

A hub model's SID rows do not exist yet (or are untrained padding rows), so :func:`~rec_lightning.modules.backbone.add_sid_tokens`
sets them to the token mean. A folder written by ``fit`` (or ``export --merge``) already holds trained SID rows:
a second SFT stage (another schedule, more data, another loss) must start from them, not from the mean. This
module decides which case a folder is and checks the two things that make its rows meaningful: the data's
tokenizer is the folder's (every embedding row belongs to a token id), and the SID index is the one the rows were
trained on (a SID token means a code of that index).
"""

from __future__ import annotations

import logging
from pathlib import Path

from rec_lightning.data.tokenizer import load_tokenizer
from rec_lightning.errors import ConfigurationError
from rec_lightning.modules.backbone import BackboneOptions
from rec_lightning.modules.export import read_metadata

log = logging.getLogger(__name__)


def continues_checkpoint(options: BackboneOptions, tokenizer, sid_tokens: list[str],
                         sid_index_checksum: str | None) -> bool:
    """Whether the backbone is a rec_lightning checkpoint of this SID index, whose rows (SID and padding rows
    included) are all trained and kept as they are.

    True: a full-model checkpoint folder trained on the same SID index (``sid_index_checksum`` recorded in its
    ``rec_lightning.json``). False: from-scratch models, hub ids and plain HF folders (their SID rows are new,
    random or padding: set to the token mean), and, with a warning, a rec_lightning checkpoint of another SID
    index (its codes mean other items).

    Raises:
        ConfigurationError: a LoRA adapter folder (merge it first), or a data tokenizer that is not the folder's
            (its embedding rows would be read by other token ids).
    """
    if options.from_scratch:
        return False
    folder = Path(options.model_name_or_path)
    if not folder.is_dir() or not (folder / "rec_lightning.json").is_file():
        return False
    metadata = read_metadata(folder)
    if metadata.get("format") == "adapter":
        raise ConfigurationError(
            f"backbone.model_name_or_path {str(folder)!r} holds a LoRA adapter (rec_lightning.json format "
            "'adapter'), not a full model. Fix: merge it first (python -m rec_lightning export --checkpoint "
            f"{folder} --merge --output MERGED) and set backbone.model_name_or_path to MERGED")
    saved = metadata.get("sid_tokens") or []
    theirs = load_tokenizer(folder).get_vocab()  # the folder's tokenizer: its ids index the embedding rows
    ours = tokenizer.get_vocab()
    differing = [token for token, index in theirs.items() if ours.get(token) != index]
    if differing:
        raise ConfigurationError(
            f"backbone.model_name_or_path {str(folder)!r} is a rec_lightning checkpoint whose embedding rows belong "
            f"to its own tokenizer ({len(theirs)} tokens), but the data's tokenizer ({len(tokenizer)} tokens) gives "
            f"{len(differing)} of them other ids (e.g. {differing[0]!r}). Fix: set data.tokenizer: {folder} "
            f"(--data.init_args.tokenizer {folder})")
    if metadata.get("sid_index_checksum") != sid_index_checksum or list(saved) != list(sid_tokens):
        log.warning("backbone %s was trained on another SID index (checksum %s, this data's %s): its SID rows are "
                    "reset to the token mean", folder, metadata.get("sid_index_checksum"), sid_index_checksum)
        return False
    log.info("backbone %s: a rec_lightning checkpoint of this SID index; its trained rows are kept (%d SID rows)",
             folder, len(saved))
    return True

"""Training windows a history loss already covers: keep only each user's maximal rows.

MiniOneRec's training rows are a user's growing prefixes, then sliding windows of at most 10 history
items. With ``history_loss`` every history item of a row is a target too, so a row whose whole item
sequence (history + target) is a contiguous run inside a longer row of the same user adds no target
the longer row lacks: for prefixes, the longer row trains each of them with exactly the same context.
On the Industrial train split 27,316 of 36,259 rows are such contained rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from rec_lightning.data.records import SequenceRecord


def _sequence(record: SequenceRecord) -> tuple[int, ...]:
    return (*record.history_item_ids, record.item_id)


def _contains(longer: tuple[int, ...], shorter: tuple[int, ...]) -> bool:
    n = len(shorter)
    return any(longer[i:i + n] == shorter for i in range(len(longer) - n + 1))


def maximal_windows(records: Sequence[SequenceRecord]) -> list[SequenceRecord]:
    """The records whose item sequence is not a contiguous run of a longer (or earlier equal) record's
    sequence of the same user, in their original order.

    Containment is transitive, so each record is checked against the maximal records kept so far, longest
    first; equal sequences keep the first row.
    """
    by_user: dict[str, list[SequenceRecord]] = defaultdict(list)
    for record in records:
        by_user[record.user_id].append(record)
    keep: set[int] = set()
    for rows in by_user.values():
        kept: list[tuple[int, ...]] = []
        for record in sorted(rows, key=lambda r: (-len(_sequence(r)), r.row)):
            sequence = _sequence(record)
            if not any(_contains(longer, sequence) for longer in kept):
                kept.append(sequence)
                keep.add(record.row)
    return [record for record in records if record.row in keep]

"""maximal_windows keeps a user's rows that no longer row of the same user contains."""

from rec_lightning.data.records import SequenceRecord
from rec_lightning.data.windows import maximal_windows


def record(row, user, history, target):
    return SequenceRecord("train", row, user, tuple(history), ("",) * len(history), ("",) * len(history), target, "", "")


def test_prefixes_and_sliding_windows():
    rows = [
        record(0, "u", [1], 2),                # inside row 2's sequence 1 2 3
        record(1, "u", [1, 2], 3),             # 1 2 3: inside row 2's? no: row 2 is 1 2 3 4
        record(2, "u", [1, 2, 3], 4),          # 1 2 3 4: maximal
        record(3, "u", [2, 3, 4], 5),          # 2 3 4 5: a slide, not inside 1 2 3 4: maximal
        record(4, "v", [2], 3),                # another user: 2 3 is inside u's rows, but users are separate
        record(5, "u", [3, 4], 5),             # 3 4 5 inside 2 3 4 5
        record(6, "u", [9], 2),                # 9 2: not a run of any longer row
        record(7, "v", [2], 3),                # the same sequence as row 4: the first row is kept
    ]
    assert [r.row for r in maximal_windows(rows)] == [2, 3, 4, 6]


def test_repeated_items_are_runs_too():
    rows = [record(0, "u", [7, 7], 7), record(1, "u", [7, 7, 7], 8), record(2, "u", [7], 8)]
    # 7 7 7 lies inside 7 7 7 8; 7 8 lies inside it too
    assert [r.row for r in maximal_windows(rows)] == [1]

"""benchmarks/rerank_offline.py: re-ranking saved beam lists with a prior, by hand."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("rerank_offline", ROOT / "benchmarks" / "rerank_offline.py")
ro = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("rerank_offline", ro)
_spec.loader.exec_module(ro)


def test_lambda_zero_keeps_the_beam_order_and_a_prior_reorders_it():
    # one row: beams x (log p -1.0), y (-1.2), z (-3.0); the target is y
    record = {"output": "y", "predict": ["x", "y", "z"], "scores": [-1.0, -1.2, -3.0], "row": 0}
    prior = [{"transition": [np.log([0.1, 0.8, 0.1])]}]
    assert ro.values([[record]], prior, "transition", 0.0, "hr@1")[0] == 0.0
    assert ro.values([[record]], prior, "transition", 0.0, "ndcg@10")[0] == pytest.approx(1 / math.log2(3))
    # lambda 0.5: x -1.0 + 0.5 log 0.1 = -2.15, y -1.2 + 0.5 log 0.8 = -1.31: y first
    assert ro.values([[record]], prior, "transition", 0.5, "hr@1")[0] == 1.0
    # a target outside the list stays a miss at every lambda; runs are averaged per row
    missed = {**record, "output": "w"}
    assert ro.values([[missed]], prior, "transition", 5.0, "hr@10")[0] == 0.0
    assert ro.values([[record], [missed]], prior * 2, "transition", 0.5, "hr@1")[0] == 0.5


def test_row_metric_and_target_rank():
    assert ro.row_metric(0, "ndcg@10") == 1.0 and ro.row_metric(2, "ndcg@3") == pytest.approx(0.5)
    assert ro.row_metric(3, "hr@3") == 0.0 and ro.row_metric(-1, "hr@10") == 0.0
    assert ro.target_rank(np.array([2, 0, 1]), 1) == 2 and ro.target_rank(np.array([2, 0, 1]), -1) == -1

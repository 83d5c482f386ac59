"""Benchmark scripts that need hardware this machine lacks run their CPU smoke mode here, so they are known to work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_decoding_smoke_mode_runs_every_part_and_the_caches_agree(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_decoding.py"), "--smoke",
                           "--data_dir", str(tmp_path)],  # no real data there: random 3-level SIDs
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in ("| per_beam | 4 | 8 |", "| per_beam | 8 | 8 |", "| shared | 4 | 8 |", "| shared | 8 | 8 |",
                 "bare forward floor (per-beam cache), batch", "reference: generate + per-beam processor, batch 8",
                 "profile: per_beam, batch", "profile: shared, batch", "aten::"):
        assert line in out, f"{line!r} missing from:\n{out}"
    # float32 on CPU: the shared cache ranks exactly as per-beam caches and the generate() reference
    assert "rankings shared vs per_beam on 4 prompts (float32, batch 8): 4 identical" in out
    assert "rankings shared vs reference on 4 prompts" in out and "0 different" in out.split("vs reference")[-1]


@pytest.mark.slow
def test_sft_profile_smoke_mode_prints_every_op_group_and_the_trace(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    trace = tmp_path / "trace.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/sft_profile.py"), "--smoke", "--trace", str(trace)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for group in ("linear (frozen base weights)", "LoRA A/B + scaling", "attention (sdpa, rope)",
                  "RMSNorm, SiLU, residuals", "embedding + SID rows (index_copy)", "output head + cross-entropy",
                  "optimizer (AdamW, zero_grad)"):
        assert f"\n{group} " in out, f"{group!r} missing from:\n{out}"
    assert "top costs: " in out and "peak RSS " in out and "aten::mm" in out
    # every backward op is matched to the forward op that made its node: almost nothing is left over
    left_over = next(line for line in out.splitlines() if line.startswith("autograd other"))
    assert float(left_over.split()[-2].rstrip("%")) < 15.0, out
    assert trace.stat().st_size > 0

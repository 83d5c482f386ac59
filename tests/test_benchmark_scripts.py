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


@pytest.mark.slow
def test_sid_quality_smoke_mode_builds_fits_evaluates_tabulates_and_resumes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "benchmarks/sid_quality.py"), "--smoke", "--work_dir", str(tmp_path / "work"),
               "--sids", "shipped", "rq-kmeans-balanced", "--seeds", "0", "1", "--bootstrap_samples", "500"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "-m rec_lightning build-sids --embeddings" in out and "--method rq-kmeans-balanced" in out
    assert out.count("-m rec_lightning fit --config") == 4 and out.count("-m rec_lightning evaluate") == 4
    assert "--split valid --num_beams 20" in out and "--seed_everything 1 --model.init_args.backbone.init_seed 1" in out
    results = (tmp_path / "work" / "sid_quality_results.md").read_text()
    lines = results.splitlines()
    balanced = next(line for line in lines if line.startswith("| rq-kmeans-balanced | ") and " | 0.00% | " in line)
    assert "| 0,1 | " in balanced and "(seeds 0,1) |" in balanced, balanced  # an interval vs shipped per metric
    assert "| 0,1 | " in next(line for line in lines if line.startswith("| shipped | - | "))
    assert len([line for line in lines if line.split(" | ")[1:2] in (["0"], ["1"])]) == 4, results  # the run rows

    # resumable: a finished run is skipped; a run whose evaluation went missing is only evaluated
    (tmp_path / "work" / "runs" / "shipped" / "seed1" / "eval" / "metrics.json").unlink()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("done before") == 3 and "(built before)" in again.stdout
    assert "[shipped seed 1] evaluate (the fit finished before)" in again.stdout
    assert "rec_lightning fit " not in again.stdout and "rec_lightning build-sids" not in again.stdout


@pytest.mark.slow
def test_gpu_fsdp_smoke_mode_trains_under_ddp_and_fsdp2_on_two_cpu_processes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_fsdp.py"), "--smoke"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "| strategy | GPUs | tokens/s | peak memory per GPU | planned GB per GPU |" in out and "device: CPU (gloo)" in out
    for strategy in ("ddp", "fsdp2"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {strategy} | 2 | "))
        assert "(peak RSS)" in row and "failed" not in row, row

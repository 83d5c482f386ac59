"""RQ-KMeans+: starts exactly at the balanced RQ-KMeans solution, never ends above its reconstruction error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_cli
from rec_lightning.commands.build_sids import build_sids as build_sids_command
from rec_lightning.modules.rqkmeans_plus import RQKMeansPlusModule, fit_rqkmeans_plus, residual_mlp
from rec_lightning.sids.build import RQKMeansPlusOptions, build_sids
from rec_lightning.sids.codec import ItemCatalog
from rec_lightning.sids.quantize import fit_residual_kmeans, squared_distances

CATEGORY = "Tiny_Shop"
LEVELS, CODES = 3, 8


def clustered(num_items: int = 600, dim: int = 16, num_centers: int = 12, seed: int = 0) -> torch.Tensor:
    """12 unit-variance centres, item i near centre i % 12 (noise 0.3): ``[600, 16]``."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_centers, dim, generator=generator)
    return centers[torch.arange(num_items) % num_centers] + 0.3 * torch.randn(num_items, dim, generator=generator)


def argmin_codes(x: torch.Tensor, codebooks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy residual argmin codes ``[N, L]`` and the sum of their codewords ``[N, D]``, written out by hand."""
    residual, reconstruction, codes = x.clone(), torch.zeros_like(x), []
    for codebook in codebooks:  # [K, D]
        code = squared_distances(residual, codebook).argmin(dim=1)  # [N]
        residual = residual - codebook[code]
        reconstruction = reconstruction + codebook[code]
        codes.append(code)
    return torch.stack(codes, dim=1), reconstruction


def options(**overrides) -> RQKMeansPlusOptions:
    settings = dict(epochs=5, batch_size=600, lr=1e-4, hidden_dims=(32,), accelerator="cpu")
    settings.update(overrides)
    return RQKMeansPlusOptions(**settings)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return clustered()


@pytest.fixture(scope="module")
def warm(x):
    """Balanced RQ-KMeans, 3 levels x 8 codes: 600 items, so 75 per first-level code."""
    return fit_residual_kmeans(x, LEVELS, CODES, seed=0, balanced=True)


def relative_error(x: torch.Tensor, reconstruction: torch.Tensor) -> float:
    return float(((x - reconstruction) ** 2).sum() / (x ** 2).sum())


def test_residual_mlp_starts_as_the_zero_map():
    net = residual_mlp(16, (32,))
    assert [type(layer).__name__ for layer in net] == ["Linear", "ReLU", "Linear"]
    assert net[-1].weight.abs().sum() == 0 and net[-1].bias.abs().sum() == 0
    assert net[0].weight.abs().sum() > 0  # only the last layer is zeroed
    assert torch.equal(net(torch.randn(4, 16)), torch.zeros(4, 16))


def test_step_zero_is_the_rq_kmeans_solution(x, warm):
    torch.manual_seed(0)
    module = RQKMeansPlusModule(16, LEVELS, CODES, hidden_dims=(32,))
    module.warm_start(warm.codebooks)
    expected_codes, expected_reconstruction = argmin_codes(x, warm.codebooks)
    with torch.no_grad():
        out = module(x)
    assert torch.equal(out["codes"], expected_codes)  # z = x: the argmin codes of the warm-start codebooks
    assert (out["reconstruction"] - expected_reconstruction).abs().max() <= 1e-6  # x_hat = sum of their codewords
    # argmin codes are not the balanced assignment that produced the codebooks (which holds 75 items per a-code)
    assert not torch.equal(expected_codes, warm.codes)
    assert torch.bincount(warm.codes[:, 0], minlength=CODES).tolist() == [75] * CODES
    # epochs=0 returns that model: its error is the hand-computed one (about 0.120 on this data)
    q = fit_rqkmeans_plus(x, LEVELS, CODES, 0, options(epochs=0), False, warm.codebooks)
    assert torch.equal(q.codes, expected_codes)
    assert q.relative_error == pytest.approx(relative_error(x, expected_reconstruction), rel=1e-5)
    assert q.extra["warm_start_error"] == q.extra["final_error"] == q.relative_error
    assert 0.11 < q.relative_error < 0.13 and q.extra["epochs_run"] == 0 and q.extra["best_epoch"] == 0


def test_training_never_ends_above_the_warm_start_and_lowers_the_error(x, warm):
    short = fit_rqkmeans_plus(x, LEVELS, CODES, 0, options(epochs=5), False, warm.codebooks)
    assert short.extra["final_error"] <= short.extra["warm_start_error"]  # 0.1195 <= 0.1201 when written
    assert short.extra["epochs_run"] == 5
    # 50 full-batch epochs at lr 1e-3: 0.120 -> 0.094 when written; the decoder and codebooks refine the solution
    longer = fit_rqkmeans_plus(x, LEVELS, CODES, 0, options(epochs=50, lr=1e-3), False, warm.codebooks)
    assert longer.extra["final_error"] < 0.85 * longer.extra["warm_start_error"], longer.extra
    assert longer.relative_error == longer.extra["final_error"] and longer.extra["best_epoch"] > 0
    module = longer.extra["module"]
    assert module.encoder[-1].weight.abs().sum() > 0 and module.decoder[-1].weight.abs().sum() > 0  # both trained
    assert longer.codes.shape == (600, LEVELS) and longer.last_residual.shape == (600, 16)
    assert len(longer.codebooks) == LEVELS and longer.codebooks[0].shape == (CODES, 16)


def test_diverging_training_returns_the_warm_start(x, warm):
    """lr 0.5 wrecks the model at once; the best-state rule then returns the step-0 model unchanged."""
    q = fit_rqkmeans_plus(x, LEVELS, CODES, 0, options(epochs=3, lr=0.5), False, warm.codebooks)
    assert q.extra["last_epoch_error"] > q.extra["warm_start_error"], q.extra
    assert q.extra["best_epoch"] == 0 and q.extra["final_error"] == q.extra["warm_start_error"]
    assert torch.equal(q.codes, argmin_codes(x, warm.codebooks)[0])
    assert all(torch.equal(a, b) for a, b in zip(q.codebooks, warm.codebooks))


def test_max_steps_caps_training_and_the_last_partial_epoch_is_measured(x, warm):
    # 600 items in batches of 128: 5 steps per epoch; a cap of 7 steps ends inside epoch 2
    q = fit_rqkmeans_plus(x, LEVELS, CODES, 0, options(epochs=50, lr=1e-3, batch_size=128, max_steps=7,
                                                       eval_every_n_epochs=10), False, warm.codebooks)
    assert q.extra["steps_run"] == 7 and q.extra["epochs_run"] == 2
    assert q.extra["last_epoch_error"] != q.extra["warm_start_error"]  # measured after the cut-short epoch
    with pytest.raises(ValueError, match=r"--rqkmeans_plus.max_steps must be >= 1 or -1 \(no cap\), got 0"):
        options(max_steps=0).check()


def test_same_seed_same_codes(x, warm):
    runs = [fit_rqkmeans_plus(x, LEVELS, CODES, 3, options(epochs=5, lr=1e-3, batch_size=128), False, warm.codebooks)
            for _ in range(2)]
    assert torch.equal(runs[0].codes, runs[1].codes)
    assert runs[0].relative_error == runs[1].relative_error


def test_bad_inputs_give_clear_errors(x, warm):
    with pytest.raises(ValueError, match=r"warm-start codebooks have shape \(2, 8, 16\), expected .*\(3, 8, 16\)"):
        fit_rqkmeans_plus(x, LEVELS, CODES, 0, options(), False, warm.codebooks[:2])
    with pytest.raises(ValueError, match=r"--rqkmeans_plus.epochs must be >= 0, got -1; "
                                         r"--rqkmeans_plus.lr must be > 0, got 0"):
        options(epochs=-1, lr=0).check()


# ----------------------------------------------------------------------------- build-sids
@pytest.fixture(scope="module")
def embeddings(tmp_path_factory, x) -> Path:
    path = tmp_path_factory.mktemp("rqkmeans_plus") / "emb.npy"
    np.save(path, x.numpy().astype(np.float32))
    return path


def test_build_sids_rq_kmeans_plus_is_collision_free(embeddings, tmp_path):
    out = tmp_path / "out"
    report = build_sids(str(embeddings), str(out), method="rq-kmeans-plus", levels=LEVELS, codebook_size=CODES,
                        category=CATEGORY, progress=False, rqkmeans_plus=options(epochs=5),
                        fit_rqkmeans_plus=fit_rqkmeans_plus)
    assert report["collision_rate_before"] > 0 and report["collision_rate_after"] == 0.0  # 600 items, 512 codes
    catalog = ItemCatalog.from_data_dir(out, CATEGORY)
    assert len(catalog) == 600 and not catalog.duplicate_sids
    saved = json.loads((out / "sid_report.json").read_text())["rqkmeans_plus"]
    assert saved["epochs"] == 5 and saved["epochs_run"] == 5
    assert saved["final_error"] <= saved["warm_start_error"]
    assert saved["balanced_kmeans_error"] == pytest.approx(relative_error(*_balanced(embeddings)), rel=1e-5)
    assert report["relative_quantisation_error"] == saved["final_error"]
    assert (out / "rqkmeans_plus.safetensors").is_file() and not (out / "rqvae.safetensors").exists()


def _balanced(embeddings: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.load(embeddings))
    return x, fit_residual_kmeans(x, LEVELS, CODES, seed=0, balanced=True).reconstruction


def test_build_sids_rq_kmeans_plus_through_the_cli(embeddings, tmp_path):
    """``python -m rec_lightning build-sids --method rq-kmeans-plus`` in a subprocess, as a user runs it."""
    out = tmp_path / "out"
    done = run_cli("build-sids", "--embeddings", str(embeddings), "--output", str(out), "--method", "rq-kmeans-plus",
                   "--levels", "2", "--codebook_size", "4", "--category", CATEGORY, "--progress", "false",
                   "--rqkmeans_plus.epochs", "2", "--rqkmeans_plus.hidden_dims", "[16]",
                   "--rqkmeans_plus.accelerator", "cpu", cwd=tmp_path, check=True)
    assert "after 'reassign'" in done.stdout
    report = json.loads((out / "sid_report.json").read_text())
    assert report["method"] == "rq-kmeans-plus" and report["rqkmeans_plus"]["hidden_dims"] == [16]
    assert report["collision_rate_after"] == 0.0 and len(report["kmeans_iterations"]) == 2
    assert not ItemCatalog.from_data_dir(out, CATEGORY).duplicate_sids


def test_build_sids_command_rejects_bad_rq_kmeans_plus_options(embeddings, tmp_path):
    with pytest.raises(SystemExit, match=r"--rqkmeans_plus.eval_every_n_epochs must be >= 1, got 0"):
        build_sids_command(str(embeddings), str(tmp_path / "out"), method="rq-kmeans-plus", category=CATEGORY,
                           progress=False, rqkmeans_plus=RQKMeansPlusOptions(eval_every_n_epochs=0))

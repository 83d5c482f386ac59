"""Residual quantisers that turn item embeddings into per-level codes (plain torch, deterministic by seed).

- :func:`kmeans`: k-means++ initialisation then Lloyd iterations; an emptied cluster is re-seeded
  with the point farthest from its centroid.
- :func:`balanced_assign` / ``kmeans(balanced=True)``: every cluster gets exactly ``floor(N/K)`` or
  ``ceil(N/K)`` points. Assignment = entropic optimal transport to near-equal capacities (Sinkhorn as
  exp-domain scaling vectors, :func:`sinkhorn_scaling_plan`, warm-started across Lloyd iterations; the
  log-domain :func:`sinkhorn_log_plan` is its reference and fallback), rounded to a hard assignment by
  capacity-respecting proposal rounds (provably complete).
- :func:`fit_residual_kmeans`: one codebook per level on the residuals left by the previous levels
  (shared codebooks, not a per-parent tree), as MiniOneRec's RQ-KMeans scripts do. Above
  ``max_points_per_code x K`` items a level's centroids are fitted on a seeded sample of that many
  residuals, then every item is assigned once (as faiss' k-means trains on at most 256 points per
  centroid): time O(sample x K x iterations + N x K), not O(N x K x iterations).
- :class:`ResidualVectorQuantizer`: the trainable layer of an RQ-VAE (k-means initialised codebooks,
  commitment loss, straight-through estimator), used by :mod:`rec_lightning.modules.rqvae`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``||x_i - c_k||^2`` for all pairs: ``[N, D], [K, D] -> [N, K]`` (clamped at 0)."""
    x_sq = (x * x).sum(dim=1, keepdim=True)  # [N, 1]
    c_sq = (centroids * centroids).sum(dim=1)  # [K]
    return torch.addmm(c_sq, x, centroids.T, alpha=-2.0).add_(x_sq).clamp_min_(0.0)  # one [N, K] allocation


def nearest_centroids(x: torch.Tensor, centroids: torch.Tensor,
                      block_rows: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row and its squared distance: ``[N, D], [K, D] -> ([N] codes, [N] distances)``.

    Equal to ``squared_distances(x, centroids).min(1)`` (the reference; ties go to the lower index) but computed
    ``block_rows`` rows at a time as ``||c||^2 - 2 x.c`` (``||x||^2`` does not change a row's argmin and is
    added to the minimum only), so the ``[block, K]`` scores stay in cache and no ``[N, K]`` matrix is
    allocated: ~3.8x faster on one CPU thread at 65,536 x 256 x 32.
    """
    n, k = x.shape[0], centroids.shape[0]
    c_sq = (centroids * centroids).sum(dim=1)  # [K]
    c_t = centroids.T.contiguous()  # [D, K]
    codes = torch.empty(n, dtype=torch.long, device=x.device)
    dist = torch.empty(n, dtype=x.dtype, device=x.device)
    buffer = torch.empty(min(block_rows, n), k, dtype=x.dtype, device=x.device)
    for start in range(0, n, block_rows):
        rows = x[start:start + block_rows]
        scores = buffer[:rows.shape[0]]
        torch.addmm(c_sq, rows, c_t, alpha=-2.0, out=scores)  # [B, K]
        values, indices = scores.min(dim=1)
        codes[start:start + rows.shape[0]] = indices
        dist[start:start + rows.shape[0]] = values
    return codes, dist.add_((x * x).sum(dim=1)).clamp_min_(0.0)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: ``[N, D] -> [k, D]`` initial centroids, chosen by ``generator`` (needs N >= k)."""
    first = int(torch.randint(x.shape[0], (1,), generator=generator, device=x.device))
    chosen = [first]
    min_dist = squared_distances(x, x[first:first + 1]).squeeze(1)  # [N]
    for _ in range(1, k):
        total = min_dist.sum()
        if total <= 0:  # fewer distinct points than k: take the next unchosen row
            taken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            taken[chosen] = True
            index = int(torch.nonzero(~taken)[0])
        else:
            index = int(torch.multinomial(min_dist / total, 1, generator=generator))
        chosen.append(index)
        min_dist = torch.minimum(min_dist, squared_distances(x, x[index:index + 1]).squeeze(1))
    return x[chosen].clone()


def balanced_capacities(num_points: int, num_clusters: int, device: torch.device | None = None) -> torch.Tensor:
    """Cluster capacities summing to ``num_points``: the first ``N % K`` get ``ceil(N/K)``, the rest ``floor(N/K)``."""
    caps = torch.full((num_clusters,), num_points // num_clusters, dtype=torch.long, device=device)
    caps[: num_points % num_clusters] += 1
    return caps


def sinkhorn_log_plan(cost: torch.Tensor, capacities: torch.Tensor, epsilon: float, num_iters: int,
                      tol: float = 1e-3) -> torch.Tensor:
    """Log of the entropic transport plan from N uniform points to clusters with the given capacities.

    The reference implementation (log domain, a logsumexp over ``[N, K]`` per half-step): the oracle of
    :func:`sinkhorn_scaling_plan`, which :func:`balanced_assign` uses, and its fallback.

    Args:
        cost: ``[N, K]`` transport costs (scale ~1).
        capacities: ``[K]`` integers summing to N (zero allowed).
        epsilon: entropy weight; smaller is closer to the exact transport.
        num_iters: at most this many alternating (row, column) normalisations.
        tol: checked every 10 iterations: stop once every row's mass is within this relative error of 1/N
            (0: run ``num_iters``).

    Returns:
        ``[N, K]`` log-plan; each row sums to ~1/N and each column to ~capacity/N.
    """
    n = cost.shape[0]
    log_a = torch.full((n,), -torch.log(torch.tensor(float(n))).item(), device=cost.device)  # [N]
    log_b = torch.log(capacities.to(cost.dtype) / n)  # [K]; -inf for empty clusters
    f = torch.zeros(n, device=cost.device, dtype=cost.dtype)
    g = torch.zeros_like(log_b)
    scaled = -cost / epsilon  # [N, K]
    for step in range(1, num_iters + 1):
        f = log_a - _logsumexp(scaled + g[None, :], dim=1)
        g = log_b - _logsumexp(scaled + f[:, None], dim=0)
        if step % 10 == 0 and tol > 0:  # columns are exact after the g-step; stop once rows are within tol
            row_error = (_logsumexp(scaled + g[None, :], dim=1) + f - log_a).abs().max()
            if row_error < tol:
                break
    return scaled + f[:, None] + g[None, :]


def _logsumexp(values: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` whose terms below ``e^-80`` are raised to it (adds < 1e-33 per term).

    Without the floor, terms that underflow into float32 denormals make CPU ``exp`` about 15x slower
    once the transport plan becomes sharp.
    """
    peak = values.amax(dim=dim, keepdim=True).clamp_min(torch.finfo(values.dtype).min)  # -inf rows stay finite
    return (values - peak).clamp_min(-80.0).exp().sum(dim=dim).log() + peak.squeeze(dim)


def sinkhorn_scaling_plan(cost: torch.Tensor, capacities: torch.Tensor, epsilon: float, num_iters: int,
                          tol: float = 1e-3,
                          init_log_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast :func:`sinkhorn_log_plan`: the same alternating normalisations as scaling vectors in the exp domain.

    The Gibbs kernel ``exp(-cost/epsilon)`` is built once; each iteration is then two matrix-vector products
    (``u = 1 / (K v)``, ``v = capacities / (K^T u)``, masses scaled by N) instead of two logsumexps over
    ``[N, K]``. Each kernel column is divided by its largest entry (absorbed into ``v``) and floored at
    ``e^-60`` of it: every column then holds a 1 (and, with a 0 in every cost row, every row an entry >= 1)
    and float32 products stay out of denormals. The row error is checked after every iteration (the
    reference checks every 10th), with the same criterion. If the scalings leave float32's range or the
    floor could move a marginal by more than 1e-6 relative (sharp plans: duals spanning ~60 in units of
    epsilon, e.g. an outlier item), it reruns in float64 with an ``e^-600`` floor, and if that fails too
    it falls back to :func:`sinkhorn_log_plan`.

    Args:
        cost: ``[N, K]`` transport costs (scale ~1), each row's minimum 0 (as :func:`balanced_assign` makes it).
        capacities: ``[K]`` integers summing to N (zero allowed).
        epsilon, num_iters: as :func:`sinkhorn_log_plan`.
        tol: stop once every row's mass is within this relative error (0: run ``num_iters``).
        init_log_v: ``[K]`` log column scaling to start from (warm start, e.g. the previous Lloyd iteration's).

    Returns:
        ``([N, K]`` log-plan as :func:`sinkhorn_log_plan` (rows ~1/N, columns ~capacity/N), ``[K]`` log ``v``).
    """
    for dtype, log_floor in ((cost.dtype, -60.0), (torch.float64, -600.0)):  # float64: when float32's floor matters
        result = _sinkhorn_scaling(cost.to(dtype), capacities, epsilon, num_iters, tol, init_log_v, log_floor)
        if result is not None:
            return result[0].to(cost.dtype), result[1].to(cost.dtype)
    log.debug("sinkhorn scalings out of float range or the kernel floor matters: log-domain fallback")
    log_plan = sinkhorn_log_plan(cost, capacities, epsilon, num_iters, tol)
    return log_plan, log_plan[0] + cost[0] / epsilon  # column potentials up to a constant, for the next warm start


def _sinkhorn_scaling(cost: torch.Tensor, capacities: torch.Tensor, epsilon: float, num_iters: int, tol: float,
                      init_log_v: torch.Tensor | None, log_floor: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`sinkhorn_scaling_plan` in ``cost``'s dtype, kernel floored at ``e^log_floor``; None if not exact."""
    n = cost.shape[0]
    scaled = cost * (-1.0 / epsilon)  # [N, K] log kernel
    column_max = scaled.amax(dim=0)  # [K]
    kernel = (scaled - column_max).clamp_min_(log_floor).exp_()  # [N, K], column maxima 1
    target = capacities.to(cost.dtype)  # [K] column masses (rows have mass 1)
    # v scales the shifted kernel: log v = log v_true + column_max
    v = torch.ones_like(target) if init_log_v is None else (init_log_v.to(cost.dtype) + column_max).exp()  # [K]
    v = torch.where(target > 0, v, 0.0)
    u, step = None, 0
    for step in range(1, num_iters + 1):
        u_new = (kernel @ v).reciprocal_()  # [N]
        if u is not None and tol > 0 and float((u / u_new).log_().abs_().max()) < tol:
            break  # rows of u * K * v (columns exact after the last v-step) are within tol
        u = u_new
        v = target / (kernel.T @ u)  # [K]; 0 for empty clusters
    del kernel
    log.debug("sinkhorn: %d iterations (%s)", step, cost.dtype)
    if u is None or not _scalings_are_exact(u, v, target, log_floor):
        return None
    log_v = v.log_().sub_(column_max)  # [K]; -inf for empty clusters
    return scaled.add_(u.log_().sub_(math.log(n))[:, None]).add_(log_v[None, :]), log_v


def _scalings_are_exact(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor, log_floor: float) -> bool:
    """Finite, positive scalings, and the kernel floor moves no row or column mass by more than 1e-6 relative.

    Raising entries to ``floor = e^log_floor`` adds at most ``floor v_j sum(u)`` to column ``j`` and
    ``floor u_i sum(v)`` to row ``i`` (mass 1).
    """
    if not (torch.isfinite(u).all() and torch.isfinite(v).all() and bool((u > 0).all())):
        return False
    floor = math.exp(log_floor)
    column_excess = floor * v * u.sum()  # [K]
    return bool((column_excess <= 1e-6 * target).all()) and float(floor * u.max() * v.sum()) <= 1e-6


def capacity_round(scores: torch.Tensor, capacities: torch.Tensor) -> torch.Tensor:
    """Hard assignment with cluster ``k`` receiving exactly ``capacities[k]`` points (sum must be N).

    Rounds of proposals: every unassigned point proposes to its highest-scoring cluster that still has
    room, and each cluster accepts its best proposers up to its room. A round assigns at least one point
    (the proposed cluster has room), and the total room equals the number of unassigned points, so the
    loop ends with every point placed and every cluster exactly full.

    Args:
        scores: ``[N, K]``, higher is better (e.g. a log transport plan or negative distances).
        capacities: ``[K]`` non-negative integers summing to N.

    Returns:
        ``[N]`` cluster index per point.
    """
    n, k = scores.shape
    if int(capacities.sum()) != n:
        raise ValueError(f"capacities sum to {int(capacities.sum())}, expected the number of points {n}")
    codes = torch.full((n,), -1, dtype=torch.long, device=scores.device)
    room = capacities.clone()
    arange_k = torch.arange(k, device=scores.device)
    while True:
        open_rows = torch.nonzero(codes < 0).squeeze(1)  # [U]
        if open_rows.numel() == 0:
            return codes
        full = room <= 0  # [K]
        if open_rows.numel() == n:  # first round: no row gather (a copy of [N, K])
            masked = scores.masked_fill(full[None, :], float("-inf")) if bool(full.any()) else scores  # [N, K]
        else:
            masked = scores[open_rows].masked_fill(full[None, :], float("-inf"))  # [U, K]
        best_score, proposal = masked.max(dim=1)  # [U]
        # sort proposers by cluster, then by score descending (stable: ties go to the lower point index)
        order = torch.argsort(-best_score, stable=True)
        order = order[torch.argsort(proposal[order], stable=True)]
        sorted_cluster = proposal[order]
        first_of_cluster = torch.searchsorted(sorted_cluster, arange_k)  # [K]
        rank = torch.arange(order.numel(), device=scores.device) - first_of_cluster[sorted_cluster]
        accepted = rank < room[sorted_cluster]
        codes[open_rows[order[accepted]]] = sorted_cluster[accepted]
        room -= torch.bincount(sorted_cluster[accepted], minlength=k)


def balanced_assign(dist: torch.Tensor, capacities: torch.Tensor, epsilon: float = 0.05,
                    num_iters: int = 50) -> torch.Tensor:
    """Assign N points to K clusters with exactly ``capacities`` points each, close to nearest-centroid.

    The cost is each row's distance minus its minimum, divided by the median of that (row shifts do
    not change the transport solution); :func:`sinkhorn_scaling_plan` then :func:`capacity_round`.

    Args:
        dist: ``[N, K]`` squared distances.
        capacities: ``[K]`` summing to N, e.g. :func:`balanced_capacities`.

    Returns:
        ``[N]`` cluster index per point.
    """
    return _balanced_assign(dist.clone(), capacities, epsilon, num_iters)[0]


def _balanced_assign(dist: torch.Tensor, capacities: torch.Tensor, epsilon: float, num_iters: int,
                     init_log_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`balanced_assign` that overwrites ``dist`` and warm-starts / returns Sinkhorn's log column scaling."""
    cost = dist.sub_(dist.amin(dim=1, keepdim=True))  # [N, K], in place
    cost.div_(max(_median(cost), 1e-12))
    log_plan, log_v = sinkhorn_scaling_plan(cost, capacities, epsilon, num_iters, init_log_v=init_log_v)
    return capacity_round(log_plan, capacities), log_v


def _median(values: torch.Tensor) -> float:
    """``float(values.median())`` (the lower middle value); on CPU by ``numpy.partition``, ~3x faster."""
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
        return float(values.median())
    flat = values.detach().reshape(-1).numpy()
    middle = (flat.size - 1) // 2
    return float(np.partition(flat, middle)[middle])


@dataclass(frozen=True)
class KMeansResult:
    """``centroids [K, D]`` and the training points' ``codes [N]``."""

    centroids: torch.Tensor
    codes: torch.Tensor
    num_iters: int
    log_v: torch.Tensor | None = None  # balanced: the last Sinkhorn's log column scaling (a warm start)


def kmeans(x: torch.Tensor, k: int, max_iters: int = 100, seed: int = 0, balanced: bool = False,
           sinkhorn_epsilon: float = 0.05, sinkhorn_iters: int = 50, change_tol: float = 0.0) -> KMeansResult:
    """k-means (or size-balanced k-means) of ``x [N, D]`` into ``k`` clusters, deterministic for a seed.

    With ``N <= k`` every point gets its own cluster (the spare centroids copy point 0 and are never
    the unique argmin). Iterations stop early once no assignment changes, or once at most ``change_tol``
    of the points changed (their new codes are kept). Balanced assignments warm-start each Sinkhorn from
    the previous iteration's column scaling.

    Args:
        balanced: every cluster gets ``floor(N/k)`` or ``ceil(N/k)`` points (:func:`balanced_assign`).
        sinkhorn_epsilon, sinkhorn_iters: the balanced assignment's transport settings.
        change_tol: stop once the fraction of points whose code changed is at most this (0: only when none).
    """
    n = x.shape[0]
    if n == 0 or k <= 0:
        raise ValueError(f"kmeans needs at least one point and one cluster, got N={n}, k={k}")
    if n <= k:
        centroids = torch.cat([x, x[:1].expand(k - n, -1)]) if k > n else x.clone()
        return KMeansResult(centroids.clone(), torch.arange(n, device=x.device), 0)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    centroids = kmeans_plus_plus(x, k, generator)
    capacities = balanced_capacities(n, k, x.device)
    codes = torch.full((n,), -1, dtype=torch.long, device=x.device)
    iteration, log_v = 0, None
    for iteration in range(1, max_iters + 1):
        if balanced:  # overwrites dist
            dist = squared_distances(x, centroids)  # [N, K]
            new_codes, log_v = _balanced_assign(dist, capacities, sinkhorn_epsilon, sinkhorn_iters, log_v)
        else:
            new_codes = _reseed_empty(*nearest_centroids(x, centroids), k)
        num_changed = int((new_codes != codes).sum())
        log.debug("kmeans iteration %d: %d of %d codes changed", iteration, num_changed, n)
        if num_changed == 0:
            break
        codes = new_codes
        centroids = _cluster_means(x, codes, k, centroids)
        if num_changed <= change_tol * n:
            break
    return KMeansResult(centroids, codes, iteration, log_v)


def _reseed_empty(codes: torch.Tensor, own: torch.Tensor, k: int) -> torch.Tensor:
    """Move the points farthest from their centroid (``own [N]`` squared distances) into empty clusters (one
    each), deterministically."""
    counts = torch.bincount(codes, minlength=k)
    empty = torch.nonzero(counts == 0).squeeze(1)
    if empty.numel() == 0:
        return codes
    codes = codes.clone()
    for cluster, point in zip(empty.tolist(), torch.argsort(own, descending=True, stable=True).tolist()):
        codes[point] = cluster
    return codes


def _cluster_means(x: torch.Tensor, codes: torch.Tensor, k: int, previous: torch.Tensor) -> torch.Tensor:
    """Mean of each cluster's points ``[K, D]``; an empty cluster keeps its previous centroid."""
    sums = torch.zeros_like(previous).index_add_(0, codes, x)  # [K, D]
    counts = torch.bincount(codes, minlength=k).to(x.dtype)[:, None]  # [K, 1]
    return torch.where(counts > 0, sums / counts.clamp_min(1.0), previous)


@dataclass(frozen=True)
class ResidualCodes:
    """Output of a residual quantiser on its training items.

    Attributes:
        codes: ``[N, L]`` code per item and level (0-based).
        codebooks: ``L`` tensors ``[K, D]``.
        last_residual: ``[N, D]`` what the last level quantised (used to re-assign colliding items).
        reconstruction: ``[N, D]`` sum of the chosen codewords (in the quantised space).
        num_iters: Lloyd iterations run per level.
        fit_items: items the Lloyd iterations of each level ran on (N, or the ``max_points_per_code`` sample).
    """

    codes: torch.Tensor
    codebooks: list[torch.Tensor]
    last_residual: torch.Tensor
    reconstruction: torch.Tensor
    num_iters: tuple[int, ...] = ()
    fit_items: int = 0  # items each level's Lloyd iterations ran on (all N, or the sample)


def fit_residual_kmeans(x: torch.Tensor, num_levels: int = 3, codebook_size: int = 256, seed: int = 0,
                        balanced: bool = False, max_iters: int = 100, sinkhorn_epsilon: float = 0.05,
                        sinkhorn_iters: int = 50, change_tol: float = 0.0, max_points_per_code: int = 0) -> ResidualCodes:
    """Residual k-means: level ``l`` clusters ``r_l`` (``r_0 = x``), then ``r_{l+1} = r_l - C_l[code_l]``.

    Level ``l`` uses seed ``seed + l``. With ``balanced`` each level's clusters hold ``floor(N/K)`` or
    ``ceil(N/K)`` items; the returned codes are those balanced assignments (not a later argmin).
    ``change_tol``: see :func:`kmeans`.

    ``max_points_per_code`` (0: off): with more than ``m = max_points_per_code * codebook_size`` items, each
    level's Lloyd iterations run on ``m`` residuals drawn without replacement (seed ``seed + l``); then every
    item is assigned once to those centroids (balanced: one Sinkhorn over all N, warm-started from the
    sample's, so the capacities hold for all N), and each centroid becomes the mean of its assigned items
    (which can only lower the squared error of that assignment). Below ``m`` items nothing changes.
    """
    if max_points_per_code < 0:
        raise ValueError(f"max_points_per_code must be >= 0 (0: fit on every item), got {max_points_per_code}")
    x = x.float()
    residual = x.clone()
    n = x.shape[0]
    sample_size = max_points_per_code * codebook_size
    codes, codebooks, num_iters = [], [], []
    for level in range(num_levels):
        if max_points_per_code and n > sample_size:
            generator = torch.Generator().manual_seed(seed + level)
            sample = torch.randperm(n, generator=generator)[:sample_size].sort().values.to(x.device)
            fitted = kmeans(residual[sample], codebook_size, max_iters, seed + level, balanced, sinkhorn_epsilon,
                            sinkhorn_iters, change_tol)
            level_codes = assign_to_centroids(residual, fitted.centroids, balanced, sinkhorn_epsilon, sinkhorn_iters,
                                              fitted.log_v)
            centroids = _cluster_means(residual, level_codes, codebook_size, fitted.centroids)
        else:
            fitted = kmeans(residual, codebook_size, max_iters, seed + level, balanced, sinkhorn_epsilon,
                            sinkhorn_iters, change_tol)
            level_codes, centroids = fitted.codes, fitted.centroids
        log.debug("level %d: %d Lloyd iterations", level, fitted.num_iters)
        codes.append(level_codes)
        codebooks.append(centroids)
        num_iters.append(fitted.num_iters)
        if level < num_levels - 1:
            residual = residual - centroids[level_codes]
    last_residual = residual
    reconstruction = x - (residual - codebooks[-1][codes[-1]])
    fit_items = sample_size if max_points_per_code and n > sample_size else n
    return ResidualCodes(torch.stack(codes, dim=1), codebooks, last_residual, reconstruction, tuple(num_iters),
                         fit_items)


def assign_to_centroids(x: torch.Tensor, centroids: torch.Tensor, balanced: bool = False,
                        sinkhorn_epsilon: float = 0.05, sinkhorn_iters: int = 50,
                        init_log_v: torch.Tensor | None = None) -> torch.Tensor:
    """Codes ``[N]`` of ``x [N, D]`` for fixed ``centroids [K, D]``: nearest (an empty cluster takes the farthest
    point, as in :func:`kmeans`) or, with ``balanced``, :func:`balanced_assign` to ``floor/ceil(N/K)`` each.

    Memory: nearest, ``O(N)`` plus one ``[4096, K]`` block; balanced, a few ``[N, K]`` float32 matrices (the
    distances, the transport kernel and plan).
    """
    k = centroids.shape[0]
    if balanced and x.shape[0] > k:
        return _balanced_assign(squared_distances(x, centroids), balanced_capacities(x.shape[0], k, x.device),
                                sinkhorn_epsilon, sinkhorn_iters, init_log_v)[0]
    codes, own = nearest_centroids(x, centroids)
    return codes if x.shape[0] <= k else _reseed_empty(codes, own, k)


class ResidualVectorQuantizer(nn.Module):
    """Trainable residual VQ: ``L`` codebooks of ``K`` codes of dimension ``D``.

    Level loss (VQ-VAE): ``mse(q_l, sg(r_l)) + commitment_coef * mse(sg(q_l), r_l)``, averaged over
    levels, with ``r_{l+1} = r_l - sg(q_l)``; the output is ``z + sg(sum_l q_l - z)`` (straight-through).
    Deviation from MiniOneRec (LC-Rec's code): there ``r_{l+1} = r_l - (r_l + sg(q_l - r_l))`` has no
    gradient, so only level 1's commitment reaches the encoder; here every level's does (as in the
    RQ-VAE paper, Lee et al. 2022), which keeps the latent from drifting away from the codebooks. Codebooks are initialised by
    k-means on the first batch's residuals (:meth:`init_from_data`), as MiniOneRec's RQ-VAE does.

    Args:
        num_levels: number of residual levels L.
        codebook_size: codes per level K.
        dim: code dimension D.
        commitment_coef: weight of the encoder commitment term (0.25 in the original).
    """

    def __init__(self, num_levels: int = 3, codebook_size: int = 256, dim: int = 32,
                 commitment_coef: float = 0.25) -> None:
        super().__init__()
        self.commitment_coef = commitment_coef
        self.codebooks = nn.Parameter(torch.randn(num_levels, codebook_size, dim) / dim ** 0.5)  # [L, K, D]
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def init_from_data(self, z: torch.Tensor, seed: int = 0, max_iters: int = 50) -> None:
        """Set every level's codebook to the k-means centroids of that level's residuals of ``z [N, D]``."""
        fitted = fit_residual_kmeans(z.detach().float(), self.codebooks.shape[0], self.codebooks.shape[1],
                                     seed=seed, max_iters=max_iters)
        self.codebooks.copy_(torch.stack(fitted.codebooks).to(self.codebooks))
        self.initialized.fill_(True)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise ``z [B, D]``.

        Returns:
            ``(z_q [B, D]`` straight-through, ``codes [B, L]``, ``vq_loss`` scalar,
            ``last_residual [B, D]`` detached input of the last level).
        """
        residual = z
        quantized = torch.zeros_like(z)  # [B, D] sum of the chosen codewords so far
        codes, losses = [], []
        last_residual = z
        for codebook in self.codebooks:  # [K, D]
            last_residual = residual
            code = squared_distances(residual.detach(), codebook.detach()).argmin(dim=1)  # [B]
            q = codebook[code]  # [B, D]
            losses.append(nn.functional.mse_loss(q, residual.detach())
                          + self.commitment_coef * nn.functional.mse_loss(q.detach(), residual))
            residual = residual - q.detach()
            quantized = quantized + q
            codes.append(code)
        z_q = z + (quantized - z).detach()  # straight-through: the value of the codes, the gradient of z
        return z_q, torch.stack(codes, dim=1), torch.stack(losses).mean(), last_residual.detach()

"""Residual k-means for build-sids: ours (torch) against faiss-cpu's k-means, same data, same rule.

    pip install faiss-cpu   # optional: not a dependency of rec_lightning; without it only our rows are printed
    python benchmarks/kmeans_faiss.py --items 100000 1000000 [--dim 32] [--threads 1]

Data: random standard-normal vectors (the scaling benchmark's build-sids input), 3 levels x 256 codes, 100
Lloyd iterations per level, centroids fitted on at most 256 points per code (faiss' default
``max_points_per_centroid``; ours: ``--kmeans_max_points_per_code 256``), then every item assigned to its
nearest centroid and the next level fitted on the residuals. Rows:

- ``ours, nearest``: :func:`rec_lightning.sids.quantize.fit_residual_kmeans` (``balanced=False``), i.e.
  ``build-sids --method rq-kmeans``, whose final step also moves each centroid to the mean of all its items.
- ``faiss, nearest``: ``faiss.Kmeans(d, 256, niter=100, seed=seed + level, max_points_per_centroid=256)`` per
  level, then ``index.search`` for all items (faiss' own rule: no final mean update).
- ``ours, balanced``: ``build-sids``' default ``rq-kmeans-balanced`` (faiss has no size-balanced k-means).

Time is the quantiser alone (data in memory, no file I/O); error is ``||x - x_hat||^2 / ||x||^2``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def faiss_residual_kmeans(x: np.ndarray, levels: int, k: int, iters: int, seed: int,
                          max_points_per_code: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``[N, L]`` and reconstruction ``[N, D]`` by faiss k-means per level on the residuals."""
    import faiss

    residual = x.copy()
    reconstruction = np.zeros_like(x)
    codes = []
    for level in range(levels):
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed + level, max_points_per_centroid=max_points_per_code,
                          verbose=False)
        km.train(residual)
        _, assigned = km.index.search(residual, 1)
        assigned = assigned[:, 0]
        chosen = km.centroids[assigned]
        reconstruction += chosen
        residual -= chosen
        codes.append(assigned)
    return np.stack(codes, axis=1), reconstruction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook_size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--max_points_per_code", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip_balanced", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    from rec_lightning.sids.quantize import fit_residual_kmeans

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads {args.threads}, torch "
          f"{torch.__version__}, faiss-cpu {faiss_version or 'not installed'}; {args.levels} x {args.codebook_size}, "
          f"{args.iters} iterations, <= {args.max_points_per_code} points per code, dim {args.dim}\n")
    print("| items | quantiser | seconds | relative error | used codes per level |")
    print("|---|---|---|---|---|")
    for n in args.items:
        x = np.random.default_rng(args.seed).standard_normal((n, args.dim)).astype(np.float32)
        xt = torch.from_numpy(x)
        norm = float((x.astype(np.float64) ** 2).sum())
        rows = [("ours, nearest (rq-kmeans)", False)] + ([] if args.skip_balanced else
                                                          [("ours, balanced (rq-kmeans-balanced)", True)])
        for name, balanced in rows:
            start = time.perf_counter()
            fit = fit_residual_kmeans(xt, args.levels, args.codebook_size, args.seed, balanced=balanced,
                                      max_iters=args.iters, max_points_per_code=args.max_points_per_code)
            seconds = time.perf_counter() - start
            error = float(((xt - fit.reconstruction).double() ** 2).sum()) / norm
            used = [int(fit.codes[:, level].unique().numel()) for level in range(args.levels)]
            print(f"| {n:,} | {name} | {seconds:.1f} | {error:.4f} | {used} |", flush=True)
        if faiss_version is not None:
            start = time.perf_counter()
            codes, reconstruction = faiss_residual_kmeans(x, args.levels, args.codebook_size, args.iters, args.seed,
                                                          args.max_points_per_code)
            seconds = time.perf_counter() - start
            error = float(((x - reconstruction).astype(np.float64) ** 2).sum()) / norm
            used = [int(np.unique(codes[:, level]).size) for level in range(args.levels)]
            print(f"| {n:,} | faiss {faiss_version}, nearest | {seconds:.1f} | {error:.4f} | {used} |", flush=True)


if __name__ == "__main__":
    main()

"""Quantisers and collision resolution on small synthetic embeddings, with hand-checked cases."""

from __future__ import annotations

import math

import pytest
import torch

from rec_lightning.sids.collisions import (code_tokens, collision_groups, collision_rate, level_statistics,
                                      resolve_collisions, resolve_extra_level, resolve_reassign, sid_statistics)
from rec_lightning.sids.quantize import (ResidualVectorQuantizer, balanced_capacities, capacity_round, fit_residual_kmeans,
                                    kmeans, nearest_centroids, sinkhorn_log_plan, sinkhorn_scaling_plan,
                                    squared_distances)
from rec_lightning.sids.codec import ItemCatalog, parse_sid


def blobs(num_points: int = 300, dim: int = 8, num_centers: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_centers, dim, generator=generator) * 3
    labels = torch.arange(num_points) % num_centers
    return centers[labels] + 0.3 * torch.randn(num_points, dim, generator=generator)


# ----------------------------------------------------------------------------- k-means
def test_squared_distances_by_hand():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    c = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # ||(3,4)-(1,1)||^2 = 4 + 9 = 13; ||(3,4)||^2 = 25; ||(1,1)||^2 = 2
    assert squared_distances(x, c).tolist() == [[0.0, 2.0], [25.0, 13.0]]


def test_blocked_nearest_centroids_equal_the_full_distance_matrix():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 8, generator=generator)
    centroids = torch.randn(37, 8, generator=generator)
    centroids[20] = centroids[3]  # a tie: the lower index wins, as argmin
    reference = squared_distances(x, centroids)  # [N, K]
    codes, dist = nearest_centroids(x, centroids, block_rows=64)  # 15 full blocks and a partial one
    assert torch.equal(codes, reference.argmin(1)) and not bool((codes == 20).any())
    assert torch.allclose(dist, reference.min(1).values, atol=1e-5)
    assert nearest_centroids(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]]))[1].tolist() \
        == [0.0, 16.0]  # by hand: (3,4) is 4 from (3,0) and 5 from (0,0)


def test_kmeans_finds_two_obvious_clusters():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    result = kmeans(x, 2, seed=0)
    assert result.codes[0] == result.codes[1] != result.codes[2] == result.codes[3]
    # centroids are the means: (0, 0.5) and (10, 0.5), in some order
    assert sorted(result.centroids.tolist()) == [[0.0, 0.5], [10.0, 0.5]]


def test_kmeans_with_fewer_points_than_clusters_gives_each_point_its_own_code():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    result = kmeans(x, 8)
    assert result.codes.tolist() == [0, 1, 2]
    assert squared_distances(x, result.centroids).argmin(1).tolist() == [0, 1, 2]


def test_kmeans_never_leaves_a_cluster_empty():
    x = blobs(200, num_centers=4)  # 4 natural blobs, 16 clusters asked
    result = kmeans(x, 16, seed=1)
    assert torch.bincount(result.codes, minlength=16).min() >= 1


def test_residual_kmeans_is_deterministic_for_a_seed_and_reduces_error_per_level():
    x = blobs()
    first = fit_residual_kmeans(x, num_levels=3, codebook_size=8, seed=7)
    again = fit_residual_kmeans(x, num_levels=3, codebook_size=8, seed=7)
    other = fit_residual_kmeans(x, num_levels=3, codebook_size=8, seed=8)
    assert torch.equal(first.codes, again.codes)
    assert not torch.equal(first.codes, other.codes)
    assert first.codes.shape == (300, 3) and first.codes.min() >= 0 and first.codes.max() < 8
    errors = [float(((x - fit_residual_kmeans(x, levels, 8, seed=7).reconstruction) ** 2).sum()) for levels in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]


# ----------------------------------------------------------------------------- balanced
def test_balanced_capacities_sum_to_n():
    # 10 points, 4 clusters: 10 = 3 + 3 + 2 + 2
    assert balanced_capacities(10, 4).tolist() == [3, 3, 2, 2]


def test_capacity_round_fills_each_cluster_exactly():
    # everyone prefers cluster 0 (score 1 > 0), but cluster 0 holds 1 point: best proposer (point 2) wins
    scores = torch.tensor([[1.0, 0.0, 0.0], [1.5, 0.0, 0.2], [2.0, 0.0, 0.0]])
    codes = capacity_round(scores, torch.tensor([1, 1, 1]))
    # round 2 (cluster 0 full): point 0 proposes cluster 1 (tie 0 = 0 -> lower index), point 1 cluster 2 (0.2 > 0)
    assert codes.tolist() == [1, 2, 0]


def test_sinkhorn_plan_has_the_requested_marginals():
    cost = torch.rand(40, 5, generator=torch.Generator().manual_seed(0))
    caps = torch.tensor([8, 8, 8, 8, 8])
    plan = sinkhorn_log_plan(cost, caps, epsilon=0.1, num_iters=200).exp()
    assert torch.allclose(plan.sum(1), torch.full((40,), 1 / 40), atol=1e-4)
    assert torch.allclose(plan.sum(0), caps / 40, atol=1e-4)


@pytest.mark.parametrize("capacities", [[8, 8, 8, 8, 8], [13, 13, 0, 7, 7]])
def test_fast_sinkhorn_equals_the_log_domain_reference(capacities):
    # the exp-domain scaling iterations are the log-domain ones: same plan after the same 200 iterations
    # (tol=0: no early stop); float32 rounding only, so plan entries agree to 1e-6 absolute (they are ~1/40)
    dist = torch.rand(40, 5, generator=torch.Generator().manual_seed(1)) * 3
    cost = dist - dist.min(dim=1, keepdim=True).values  # rows hold a 0, as balanced_assign makes them
    caps = torch.tensor(capacities)
    reference = sinkhorn_log_plan(cost, caps, epsilon=0.1, num_iters=200, tol=0.0).exp()
    fast, log_v = sinkhorn_scaling_plan(cost, caps, epsilon=0.1, num_iters=200, tol=0.0)
    assert torch.allclose(fast.exp(), reference, atol=1e-6, rtol=0)
    assert torch.allclose(fast.exp().sum(0), caps / 40, atol=1e-5)
    assert torch.isneginf(fast[:, caps == 0]).all() and torch.isneginf(log_v[caps == 0]).all()
    # with the default stop at 0.1% row error (checked every iteration here, every 10th there), cold or
    # warm-started from a perturbed scaling: the stopped plans differ by < 1e-4 per entry (entries <= 1/40;
    # measured: <= 8e-5, and either is within 1.5% of the converged plan on entries > 1e-4)
    stopped = sinkhorn_log_plan(cost, caps, epsilon=0.1, num_iters=200).exp()
    for init in (None, log_v + 0.5 * torch.rand(5, generator=torch.Generator().manual_seed(2))):
        plan, _ = sinkhorn_scaling_plan(cost, caps, epsilon=0.1, num_iters=200, init_log_v=init)
        assert torch.allclose(plan.exp(), stopped, atol=1e-4, rtol=0)
        assert torch.allclose(plan.exp().sum(1), torch.full((40,), 1 / 40), rtol=1e-3)


def test_fast_sinkhorn_handles_a_cluster_far_from_every_point():
    # cost/epsilon = 300 for cluster 1 from every point: its kernel column underflows unless shifted by its
    # maximum; the plan is still uniform (every point is equally far from both clusters after the row shift)
    cost = torch.tensor([[0.0, 0.3], [0.0, 0.3], [0.0, 0.3], [0.0, 0.3]])
    plan, _ = sinkhorn_scaling_plan(cost, torch.tensor([2, 2]), epsilon=1e-3, num_iters=50)
    assert torch.allclose(plan.exp(), torch.full((4, 2), 0.125), atol=1e-6)


@pytest.mark.parametrize("epsilon", [1e-3, 1e-5])
def test_fast_sinkhorn_when_the_kernel_floor_matters(epsilon):
    # cluster 1 costs 0.1, 0.2, 0.4, 0.8. At epsilon 1e-3 point 1's kernel entry is e^-100 of point 0's, below
    # float32's e^-60 floor: the float64 rerun (floor e^-600) gives the reference's plan (both are still far from
    # converged after 50 iterations at such an epsilon). At 1e-5 (e^-10000) the floors of both implementations
    # (theirs e^-80 inside each logsumexp) move entries by ~1e-4 of the plan's 0.5.
    cost = torch.tensor([[0.0, 0.1], [0.0, 0.2], [0.0, 0.4], [0.0, 0.8]])
    caps = torch.tensor([2, 2])
    plan, _ = sinkhorn_scaling_plan(cost, caps, epsilon=epsilon, num_iters=50)
    reference = sinkhorn_log_plan(cost, caps, epsilon=epsilon, num_iters=50)
    assert plan.dtype == torch.float32
    assert torch.allclose(plan.exp(), reference.exp(), atol=2e-4)


@pytest.mark.parametrize("num_points,k", [(300, 8), (301, 16), (97, 10)])
def test_balanced_kmeans_sizes_are_floor_or_ceil(num_points, k):
    x = blobs(num_points, num_centers=3)  # very unequal natural clusters for k clusters
    result = kmeans(x, k, seed=0, balanced=True, max_iters=10)  # every iteration's assignment obeys the bound
    sizes = torch.bincount(result.codes, minlength=k)
    assert sizes.min() >= num_points // k and sizes.max() <= math.ceil(num_points / k)
    assert int(sizes.sum()) == num_points


def test_change_tol_stops_lloyd_early_and_keeps_the_balance():
    x = blobs(600, num_centers=5)
    full = kmeans(x, 16, seed=0, balanced=True)  # runs until no code changes
    early = kmeans(x, 16, seed=0, balanced=True, change_tol=0.05)  # stops once <= 30 of 600 points moved
    assert 1 <= early.num_iters < full.num_iters
    sizes = torch.bincount(early.codes, minlength=16)
    assert sizes.min() >= 600 // 16 and sizes.max() <= math.ceil(600 / 16)  # 37 or 38
    # the returned centroids are the means of the returned codes
    assert torch.allclose(early.centroids[3], x[early.codes == 3].mean(0), atol=1e-5)


def test_balanced_residual_kmeans_every_level_within_bound():
    x = blobs(300)
    codes = fit_residual_kmeans(x, 3, 16, seed=0, balanced=True, max_iters=10).codes
    for level in range(3):
        sizes = torch.bincount(codes[:, level], minlength=16)
        assert sizes.min() >= 300 // 16 and sizes.max() <= math.ceil(300 / 16)  # 18 or 19


def test_sampled_fit_assigns_every_item_and_keeps_the_balance_and_quality():
    x = blobs(2000, num_centers=12)
    full = fit_residual_kmeans(x, 2, 16, seed=0, balanced=True, max_iters=30)
    # 20 points per code x 16 codes: each level's centroids come from 320 of the 2,000 residuals
    sampled = fit_residual_kmeans(x, 2, 16, seed=0, balanced=True, max_iters=30, max_points_per_code=20)
    again = fit_residual_kmeans(x, 2, 16, seed=0, balanced=True, max_iters=30, max_points_per_code=20)
    assert torch.equal(sampled.codes, again.codes)  # deterministic for a seed
    for level in range(2):  # every item assigned, exactly balanced over all 2,000 (125 each)
        assert torch.bincount(sampled.codes[:, level], minlength=16).tolist() == [125] * 16
    # a level's centroid is the mean of all items given that code (level 0: of x itself)
    assert torch.allclose(sampled.codebooks[0][5], x[sampled.codes[:, 0] == 5].mean(0), atol=1e-5)
    error = lambda fit: float(((x - fit.reconstruction) ** 2).sum() / (x ** 2).sum())  # noqa: E731
    assert error(sampled) <= 1.1 * error(full)  # measured 0.0595 vs 0.0662: a 16% sample costs no quality here
    # below the threshold (200 x 16 = 3,200 > 2,000 items) nothing changes
    assert torch.equal(fit_residual_kmeans(x, 2, 16, seed=0, balanced=True, max_iters=30, max_points_per_code=200).codes,
                       full.codes)
    plain = fit_residual_kmeans(x, 2, 16, seed=0, max_iters=30, max_points_per_code=20)  # unbalanced: nearest
    assert bool((torch.bincount(plain.codes[:, 0], minlength=16) > 0).all())  # no empty code
    assert torch.allclose(plain.codebooks[0][5], x[plain.codes[:, 0] == 5].mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="max_points_per_code must be >= 0"):
        fit_residual_kmeans(x, 2, 16, max_points_per_code=-1)


# ----------------------------------------------------------------------------- collisions
def test_collision_groups_and_rate_by_hand():
    codes = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2], [3, 5]])
    assert collision_groups(codes) == [[0, 1, 3]]
    assert collision_rate(codes) == pytest.approx(2 / 5)  # 5 items, 3 distinct tuples


def test_extra_level_gives_every_member_its_rank():
    resolution = resolve_extra_level(torch.tensor([[1, 2], [1, 2], [3, 4]]))
    assert resolution.codes == [(1, 2, 0), (1, 2, 1), (3, 4)]
    assert resolution.collision_rate_before == pytest.approx(1 / 3) and resolution.collision_rate_after == 0.0
    assert resolution.num_extra_level == 2


def test_reassign_moves_the_farther_item_to_the_nearest_free_code():
    # one parent (a=0), last level K=4 codewords on a line at 0, 1, 2, 3; items 0 and 1 both got code 0
    codebook = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    residual = torch.tensor([[0.1], [0.4], [2.0]])
    codes = torch.tensor([[0, 0], [0, 0], [0, 2]])
    resolution = resolve_reassign(codes, residual, codebook)
    # item 0 is nearer code 0 (0.01 < 0.16) and keeps it; item 1 goes to the nearest free code 1 (code 2 is taken)
    assert resolution.codes == [(0, 0), (0, 1), (0, 2)]
    assert resolution.num_moved == 1 and resolution.num_extra_level == 0


def test_reassign_falls_back_to_extra_level_when_a_parent_is_full():
    codebook = torch.tensor([[0.0], [1.0]])  # K = 2, but 3 items share the parent (5,)
    residual = torch.tensor([[0.0], [0.1], [1.0], [5.0]])
    codes = torch.tensor([[5, 0], [5, 0], [5, 1], [6, 1]])
    resolution = resolve_reassign(codes, residual, codebook)
    assert resolution.codes == [(5, 0, 0), (5, 0, 1), (5, 1), (6, 1)]
    assert resolution.collision_rate_after == 0.0


@pytest.mark.parametrize("method", ["extra-level", "reassign"])
def test_resolution_is_collision_free_and_prefix_free_on_heavy_collisions(method):
    x = blobs(400, num_centers=5)
    fitted = fit_residual_kmeans(x, num_levels=2, codebook_size=4, seed=0)  # 16 tuples for 400 items
    resolution = resolve_collisions(method, fitted.codes, fitted.last_residual, fitted.codebooks[-1])
    assert resolution.collision_rate_before > 0.9
    assert len(set(resolution.codes)) == 400 and resolution.collision_rate_after == 0.0
    catalog = ItemCatalog({i: code_tokens(c) for i, c in enumerate(resolution.codes)})  # rejects prefixes
    assert not catalog.duplicate_sids


def test_reassign_keeps_fixed_length_when_parents_have_room():
    x = blobs(300)
    fitted = fit_residual_kmeans(x, num_levels=2, codebook_size=64, seed=0)
    resolution = resolve_reassign(fitted.codes, fitted.last_residual, fitted.codebooks[-1])
    assert resolution.collision_rate_before > 0 and resolution.num_moved > 0
    assert {len(c) for c in resolution.codes} == {2}


def test_unknown_collision_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown collision method 'dedupe'"):
        resolve_collisions("dedupe", torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="needs the last level's residuals"):
        resolve_collisions("reassign", torch.zeros(2, 2, dtype=torch.long))


def test_index_round_trips_through_the_sid_codec():
    fitted = fit_residual_kmeans(blobs(120), num_levels=3, codebook_size=16, seed=3)
    resolution = resolve_extra_level(fitted.codes)
    index = {i: code_tokens(code) for i, code in enumerate(resolution.codes)}
    catalog = ItemCatalog(index)
    for item_id, code in enumerate(resolution.codes):
        tokens = parse_sid(catalog.sid_of(item_id))
        assert tuple(int(t[3:-1]) for t in tokens) == code
    assert code_tokens((12, 200, 7)) == ["<a_12>", "<b_200>", "<c_7>"]


# ----------------------------------------------------------------------------- statistics
def test_level_statistics_by_hand():
    stats = level_statistics([(0,), (0,), (1,), (1,)], codebook_size=4)
    # two codes used equally: 2/4 utilisation, entropy log2(2) = 1 bit, normalised 1 / log2(4) = 0.5
    assert stats[0]["used_codes"] == 2 and stats[0]["utilisation"] == 0.5
    assert stats[0]["entropy_bits"] == pytest.approx(1.0) and stats[0]["normalized_entropy"] == pytest.approx(0.5)


def test_sid_statistics_reports_before_and_after():
    base = [(0, 1), (0, 1), (2, 3)]
    final = [(0, 1, 0), (0, 1, 1), (2, 3)]
    stats = sid_statistics(base, final, codebook_size=4)
    assert stats["collision_rate_before"] == pytest.approx(1 / 3) and stats["collision_rate_after"] == 0.0
    assert stats["max_group_size_before"] == 2 and stats["sid_lengths"] == [2, 3]
    assert stats["items_per_first_level_code"] == [2, 0, 1, 0]
    assert [s["level"] for s in stats["level_stats"]] == ["a", "b", "c"]
    assert stats["level_stats"][2]["codebook_size"] == 2  # the extra level's K is the largest rank + 1


# ----------------------------------------------------------------------------- trainable VQ
def test_residual_vq_straight_through_and_losses():
    torch.manual_seed(0)
    vq = ResidualVectorQuantizer(num_levels=2, codebook_size=4, dim=3)
    z = torch.randn(16, 3, requires_grad=True)
    vq.init_from_data(z.detach())
    z_q, codes, loss, last_residual = vq(z)
    assert codes.shape == (16, 2) and bool(vq.initialized)
    # the forward value is the sum of the chosen codewords
    expected = vq.codebooks[0][codes[:, 0]] + vq.codebooks[1][codes[:, 1]]
    assert torch.allclose(z_q, expected, atol=1e-6)
    z_q.sum().backward(retain_graph=True)
    assert torch.allclose(z.grad, torch.ones_like(z))  # straight-through: d(sum z_q)/dz = 1
    loss.backward()
    assert vq.codebooks.grad is not None and vq.codebooks.grad.abs().sum() > 0

"""Checks of assignment 02: k-means clustering and GMM out-of-distribution detection.

The ``_probe_*`` functions are the parts of a check that must run next to the student's objects (autograd through
their model, memory their code allocates, hundreds of calls that would each be a request): in a judged check they
run in the student's kernel, so they return observations, never verdicts.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from scipy.stats import chi2, multivariate_normal
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from ..budgets import budget
from ..data import load_fashion_mnist, load_mnist, tensor_loader
from ..runtime import get_device
from .common import (as_float, as_tensor, call, call_unchanged, expect, expect_shape, fail, fmt, generator, is_instance,
                     max_abs_diff, non_contiguous, passed, type_name)

GMM_REG_COVAR = 1e-3  # what the notebook tells students to pass to GaussianMixture


def _blobs(seed: int, n: int, d: int, k: int, spread: float = 4.0, offset: float = 3.0) -> torch.Tensor:
    """``n`` float64 points around ``k`` random centres (unit noise), shifted away from the origin."""
    g = generator(seed)
    centres = spread * torch.randn(k, d, generator=g, dtype=torch.float64) + offset
    members = torch.arange(n) % k
    return centres[members] + torch.randn(n, d, generator=g, dtype=torch.float64)


def _distinct_rows(X: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    return X[torch.randperm(len(X), generator=generator(seed + 1))[:k]].clone()


# ------------------------------------------------------------ pairwise distances
def check_pairwise_sq_dists(pairwise_sq_dists, seed: int = 0, n: int = 300, k: int = 7, d: int = 20) -> None:
    """``pairwise_sq_dists(X, C)`` equals ``torch.cdist(X, C)**2`` in float64 and float32 and keeps the dtype."""
    g = generator(seed)
    X64 = 2 * torch.randn(n, d, generator=g, dtype=torch.float64) + 3
    C64 = X64[torch.randperm(n, generator=g)[:k]] + 0.5 * torch.randn(k, d, generator=g, dtype=torch.float64)
    expected = torch.cdist(X64, C64, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    x_sq, c_sq = (X64**2).sum(1, keepdim=True), (C64**2).sum(1)
    scale = float(x_sq.max() + c_sq.max())
    for dtype, rel in ((torch.float64, 1e-10), (torch.float32, 2e-6)):
        what = f"pairwise_sq_dists(X [{n}, {d}], C [{k}, {d}]) in {dtype}"
        # float32 comes in a non-contiguous layout (a transpose's): no assumption about memory order.
        X, C = (X64, C64) if dtype == torch.float64 else (non_contiguous(X64.to(dtype)), non_contiguous(C64.to(dtype)))
        out = as_tensor(call_unchanged(pairwise_sq_dists, X, C, what=what), what)
        if n != k and tuple(out.shape) == (k, n):
            fail(f"{what} has shape {(k, n)}: it is transposed; row i should hold the distances of point i to every centroid.")
        expect_shape(out, (n, k), what)
        expect(out.dtype == dtype, f"{what} returned {out.dtype}: keep the dtype of the input.")
        err = max_abs_diff(out, expected)
        if err <= rel * scale:
            continue
        cross = X64 @ C64.T
        diagnoses = (
            (out.to(torch.float64) ** 2, "these are distances, not squared distances: do not take the square root."),
            (out + c_sq, "the ‖c‖² term is missing."),
            (out + x_sq, "the ‖x‖² term is missing."),
            (out - 4 * cross, "the cross term has the wrong sign: ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖²."),
            (out - cross, "the cross term should be −2 x·c, not −x·c."),
        )
        for candidate, cause in diagnoses:
            if max_abs_diff(candidate, expected) <= 1e-3 * scale:
                fail(f"{what} is not torch.cdist(X, C)**2: {cause}")
        fail(f"{what} differs from torch.cdist(X, C)**2 by up to {err:.3g} (allowed {rel * scale:.2g}); "
             f"expected row 0 {fmt(expected[0])}, got {fmt(out[0])}.")
    passed(f"pairwise_sq_dists matches torch.cdist(X, C)**2 (float64 and float32, n={n}, k={k}, d={d})")


class _LargestAllocation(TorchFunctionMode):
    """Records the largest storage that any torch function or tensor method returns while active (a view counts
    its base, which it does not allocate)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.untyped_storage().nbytes())
        return out


def largest_allocation(fn, *args) -> tuple[object, int]:
    """Run ``fn(*args)``; return its result and the largest block it allocated, in bytes.

    torch tensors are seen through a torch-function mode (every operation's output), NumPy arrays through
    ``tracemalloc`` (NumPy reports its buffers there); the larger of the two counts.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    watcher = _LargestAllocation()
    try:
        with watcher:
            result = fn(*args)
        numpy_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, max(watcher.largest, numpy_peak)


def _probe_largest_allocation(pairwise_sq_dists, X, C) -> tuple[object, int]:
    """``pairwise_sq_dists(X, C)`` and the largest block it allocated (bytes), measured where it runs."""
    return largest_allocation(pairwise_sq_dists, X, C)


def check_pairwise_sq_dists_memory(pairwise_sq_dists, seed: int = 0, n: int = 5000, k: int = 100, d: int = 100) -> None:
    """On a large float32 input no single allocation approaches the size of an ``[n, k, d]`` tensor."""
    g = generator(seed)
    X = torch.rand(n, d, generator=g)
    C = torch.rand(k, d, generator=g)
    what = f"pairwise_sq_dists(X [{n}, {d}], C [{k}, {d}])"
    out, largest = call(_probe_largest_allocation, pairwise_sq_dists, X, C, what=what)
    out = as_tensor(out, what)
    expect_shape(out, (n, k), what)
    # The values too: the memory was measured where the student's code ran, and only right values make it count.
    expected = torch.cdist(X.double(), C.double(), compute_mode="donot_use_mm_for_euclid_dist") ** 2
    err, scale = max_abs_diff(out, expected), float((X**2).sum(1).max() + (C**2).sum(1).max())
    expect(err <= 2e-6 * scale, f"{what} differs from torch.cdist(X, C)**2 by up to {err:.3g} (allowed "
                                f"{2e-6 * scale:.2g}); check_pairwise_sq_dists says more.")
    largest = as_float(largest, "the largest allocation")
    # Generous: a float64 copy of X plus the [n, k] result, several times over, is still O(n·k + n·d).
    allowed = 4 * 8 * (n * d + n * k + k * d)
    broadcast = n * k * d * X.element_size()
    expect(largest <= allowed,
           f"{what} allocated a block of {largest / 2**20:.0f} MiB; an [n, k, d] tensor is {broadcast / 2**20:.0f} MiB "
           f"and an O(n·k + n·d) solution needs at most {allowed / 2**20:.0f} MiB. Do not broadcast X[:, None] - C[None]: "
           "expand ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖² and get every x·c from one matrix product.")
    passed(f"pairwise_sq_dists: largest allocation {largest / 2**20:.1f} MiB for n={n}, k={k}, d={d} "
           f"(an [n, k, d] tensor would take {broadcast / 2**20:.0f} MiB)")


# ----------------------------------------------------------------- k-means++
# Nine fixed 2-D points, found by a search that maximised how far the pick frequencies of plausible mistakes
# (weights D or D³ instead of D², distance to the last centroid only) lie from D² sampling.
PLUS_PLUS_POINTS = ((1.6, -1.8), (-1.0, 2.4), (3.0, 1.7), (0.5, -2.7), (-5.5, -1.1), (-3.7, 1.2), (1.2, 1.5),
                    (-9.4, 12.2), (-0.5, -0.2))


def _picked_rows(X: np.ndarray, centroids: torch.Tensor, what: str) -> list[int]:
    # NumPy, not torch: this runs thousands of times on tiny arrays, where torch's threaded reductions are slow.
    gaps = np.sqrt(((centroids.to(torch.float64).numpy()[:, None, :] - X[None]) ** 2).sum(-1))
    expect(bool(gaps.min(1).max() < 1e-6),
           f"{what}: every initial centroid should be one of the rows of X (k-means++ picks data points), but one is "
           f"{float(gaps.min(1).max()):.3g} away from the nearest row.")
    return gaps.argmin(1).tolist()


def _pearson(observed: np.ndarray, expected: np.ndarray) -> float:
    keep = expected > 0
    expect(bool(observed[~keep].sum() == 0), "k-means++ picked a point whose D² weight is 0 (a point already chosen).")
    return float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())


def _probe_draws(kmeans_plus_plus_init, X: torch.Tensor, k: int, generator: torch.Generator, trials: int) -> list:
    """``trials`` initialisations, one after another from ``generator``: one request to a judged kernel, not ``trials``."""
    return [kmeans_plus_plus_init(X.clone(), k, generator=generator) for _ in range(trials)]


def check_kmeans_plus_plus_init(kmeans_plus_plus_init, seed: int = 0, trials: int = 600) -> None:
    """Shape, rows of X, reproducible with a generator, and D² sampling checked with chi-square tests.

    Every draw after the first must pick point j with probability D(j)² / Σ D², where D(j) is the distance
    from j to the *nearest* centroid chosen so far; the first draw is uniform. Over ``trials`` runs the
    observed picks are compared with the summed probabilities of each step.
    """
    X_big = _blobs(seed, 200, 5, 4)
    what = "kmeans_plus_plus_init(X [200, 5], 4, generator)"
    for dtype in (torch.float64, torch.float32):
        first = as_tensor(call(kmeans_plus_plus_init, X_big.to(dtype), 4, generator=generator(seed), what=what), what)
        expect_shape(first, (4, 5), what)
        expect(first.dtype == dtype, f"{what} returned {first.dtype} for {dtype} input: keep the dtype.")
        again = as_tensor(call(kmeans_plus_plus_init, X_big.to(dtype), 4, generator=generator(seed), what=what), what)
        expect(torch.equal(first, again),
               f"{what} gave different centroids for two generators with the same seed: draw every random number "
               "from `generator` (torch.randint(..., generator=generator), torch.multinomial(..., generator=generator)).")
    _picked_rows(X_big.numpy(), first, what)

    X = torch.tensor(PLUS_PLUS_POINTS, dtype=torch.float64)
    n, k = len(X), 3
    sq = ((X.numpy()[:, None, :] - X.numpy()[None]) ** 2).sum(-1)
    observed = np.zeros((k, n))
    expected = np.zeros((k, n))
    draws = call(_probe_draws, kmeans_plus_plus_init, X, k, generator(seed), trials, what="kmeans_plus_plus_init(X, 3)")
    expect(type(draws) is list and len(draws) == trials, f"kmeans_plus_plus_init(X, 3) was to be drawn {trials} times.")
    for draw in draws:
        picks = _picked_rows(X.numpy(), as_tensor(draw, "kmeans_plus_plus_init"), "kmeans_plus_plus_init(X, 3)")
        expected[0] += 1 / n
        for step, index in enumerate(picks):
            observed[step, index] += 1
            if step + 1 < k:
                weights = sq[picks[:step + 1]].min(0)
                expected[step + 1] += weights / weights.sum()
    limit = chi2.isf(1e-5, n - 1)
    first_stat = _pearson(observed[0], expected[0])
    expect(first_stat <= limit,
           f"the first centroid should be a uniformly random row; over {trials} runs the picks per row were "
           f"{observed[0].astype(int).tolist()} (chi-square {first_stat:.0f}, limit {limit:.0f}).")
    for step in range(1, k):
        stat = _pearson(observed[step], expected[step])
        expect(stat <= limit,
               f"centroid {step + 1} should be drawn with probability D(x)² / Σ D², D = distance to the nearest "
               f"centroid chosen so far. Over {trials} runs the picks per point were {observed[step].astype(int).tolist()}, "
               f"expected about {np.round(expected[step]).astype(int).tolist()} (chi-square {stat:.0f}, limit {limit:.0f}). "
               "Common causes: sampling uniformly, weighting by D instead of D², taking the farthest point, or "
               "measuring D to the last centroid only.")
    passed(f"kmeans_plus_plus_init: rows of X, reproducible, D² sampling confirmed over {trials} runs (chi-square)")


# -------------------------------------------------------------- class means
def check_class_mean_centroids(class_mean_centroids, seed: int = 0, n: int = 200, d: int = 6, k: int = 5) -> None:
    """Row j is the mean of the rows of X labelled j, for shuffled, unbalanced labels."""
    g = generator(seed)
    X64 = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 1
    y = torch.cat([torch.arange(k), torch.randint(0, k, (n - k,), generator=g) ** 2 % k])[torch.randperm(n, generator=g)]
    expected = torch.stack([X64[y == j].mean(0) for j in range(k)])
    for dtype in (torch.float64, torch.float32):
        what = f"class_mean_centroids(X [{n}, {d}], y, {k}) in {dtype}"
        out = as_tensor(call_unchanged(class_mean_centroids, X64.to(dtype), y.clone(), k, what=what), what)
        expect_shape(out, (k, d), what)
        expect(out.dtype == dtype, f"{what} returned {out.dtype}: keep the dtype of X.")
        if max_abs_diff(out, expected) <= (1e-10 if dtype == torch.float64 else 1e-5) * 10:
            continue
        counts = torch.bincount(y, minlength=k).to(torch.float64)[:, None]
        if max_abs_diff(out, expected * counts) < 1e-3:
            fail(f"{what}: these are the sums of each class, not the means: divide by the class sizes.")
        if max_abs_diff(out, X64.mean(0).expand(k, d)) < 1e-3:
            fail(f"{what}: every row is the mean of all of X; take the mean of the rows with y == j only.")
        fail(f"{what}: row j should be the mean of X[y == j]; expected row 0 {fmt(expected[0])}, got {fmt(out[0])}.")
    passed(f"class_mean_centroids: class means of shuffled, unbalanced labels (k={k})")


# -------------------------------------------------------------------- k-means
def _unpack_kmeans(result, n: int, k: int, d: int, what: str):
    if not (isinstance(result, (tuple, list)) and len(result) == 3):
        fail(f"{what} should return (centroids, labels, inertia_history), got {type_name(result)}.")
    centroids = as_tensor(result[0], "centroids")
    labels = as_tensor(result[1], "labels")
    expect_shape(centroids, (k, d), f"centroids of {what}")
    expect_shape(labels, (n,), f"labels of {what}")
    expect(not labels.is_floating_point(), f"labels of {what} should be integers, got {labels.dtype}.")
    history = result[2]
    expect(isinstance(history, (list, tuple)) and len(history) > 0,
           f"inertia_history of {what} should be a non-empty list with one inertia per iteration.")
    history = [as_float(v, "inertia_history entry") for v in history]
    expect(not bool(torch.isnan(centroids).any()),
           f"{what} returned NaN centroids: an empty cluster must keep its previous centroid (the mean of no points is NaN).")
    return centroids, labels, history


def _expect_non_increasing(history: list[float], what: str, rel: float) -> None:
    for t in range(1, len(history)):
        if history[t] > history[t - 1] * (1 + rel) + 1e-9:
            fail(f"inertia_history of {what} increases at iteration {t + 1} ({history[t - 1]:.6g} → {history[t]:.6g}); "
                 "Lloyd's iterations never increase the inertia. Record the sum of squared distances of each point to "
                 "its nearest centroid, and assign before you update.")


def _matched(centroids: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Permutation p with centroids[p[j]] closest to reference[j] (clusters may come back in any order)."""
    rows, cols = linear_sum_assignment(torch.cdist(reference, centroids.to(torch.float64)).numpy())
    return torch.as_tensor(cols[np.argsort(rows)])


def check_kmeans(kmeans, seed: int = 0, n: int = 600, d: int = 5, k: int = 4) -> None:
    """From given centroids ``kmeans`` reaches scikit-learn's ``KMeans(init=C, n_init=1)`` centroids and inertia.

    Also: one iteration with ``max_iter=1``; inertia non-increasing; ``max_iter`` and ``tol`` honoured.
    """
    X64 = _blobs(seed, n, d, k, spread=2.5)
    C0 = _distinct_rows(X64, k, seed)
    reference = KMeans(k, init=C0.numpy(), n_init=1, max_iter=500, tol=0.0, algorithm="lloyd").fit(X64.numpy())
    ref_centres = torch.from_numpy(reference.cluster_centers_)
    scale = float(X64.abs().max())
    for dtype, rel in ((torch.float64, 1e-8), (torch.float32, 1e-4)):
        what = f"kmeans(X [{n}, {d}], {k}, init=C0, max_iter=500, tol=1e-6) in {dtype}"
        centroids, labels, history = _unpack_kmeans(
            call_unchanged(kmeans, X64.to(dtype), k, init=C0.to(dtype).clone(), max_iter=500, tol=1e-6, what=what), n, k, d, what)
        expect(centroids.dtype == dtype, f"{what} returned {centroids.dtype} centroids: keep the dtype of X.")
        _expect_non_increasing(history, what, rel)
        order = _matched(centroids, ref_centres)
        err = max_abs_diff(centroids[order], ref_centres)
        expect(err <= 1e-3 * scale,
               f"{what}: final centroids differ from scikit-learn's KMeans(init=C0, n_init=1) by up to {err:.3g}. "
               f"scikit-learn converged after {reference.n_iter_} Lloyd iterations, yours ran {len(history)}. "
               "Assign every point to its nearest centroid, move each centroid to the mean of its points, repeat until "
               "no centroid moves more than tol.")
        agreement = float((order.argsort()[labels.long()] == torch.from_numpy(reference.labels_)).double().mean())
        expect(agreement >= 0.999, f"{what}: only {100 * agreement:.1f} % of labels agree with scikit-learn's; labels[i] "
                                   "should be the index of the centroid point i belongs to.")
        final, expected = history[-1], float(reference.inertia_)
        if abs(final - expected) > max(rel, 1e-5) * expected:
            if abs(final - expected / n) < 1e-3 * expected / n:
                fail(f"{what}: final inertia {final:.6g} is the mean squared distance; the inertia is the *sum* ({expected:.6g}).")
            distances = float(torch.cdist(X64, ref_centres).min(1).values.sum())
            if abs(final - distances) < 1e-3 * distances:
                fail(f"{what}: final inertia {final:.6g} is the sum of distances; the inertia sums *squared* distances "
                     f"({expected:.6g}).")
            fail(f"{what}: final inertia should be the sum of squared distances to the nearest centroid, "
                 f"{expected:.6g} (scikit-learn), got {final:.6g}.")

    what = f"kmeans(X, {k}, init=C0, max_iter=1)"
    one_step = KMeans(k, init=C0.numpy(), n_init=1, max_iter=1, tol=0.0, algorithm="lloyd").fit(X64.numpy())
    centroids, _, history = _unpack_kmeans(call(kmeans, X64.clone(), k, init=C0.clone(), max_iter=1, what=what), n, k, d, what)
    expect(len(history) == 1, f"{what} should run exactly one iteration, but inertia_history has {len(history)} entries.")
    err = max_abs_diff(centroids, torch.from_numpy(one_step.cluster_centers_))
    expect(err <= 1e-8 * scale,
           f"{what}: after one iteration the centroids should be the means of the points nearest to each initial centroid "
           f"(scikit-learn's KMeans with max_iter=1), but they differ by up to {err:.3g}. Keep the centroids in the order "
           "of `init`, assign first, then update.")

    _, _, history = _unpack_kmeans(call(kmeans, X64.clone(), k, init=C0.clone(), max_iter=50, tol=1e12,
                                        what="kmeans(..., tol=1e12)"), n, k, d, "kmeans(..., tol=1e12)")
    expect(len(history) == 1, f"with tol=1e12 every centroid moves less than tol in the first iteration, so kmeans should "
                              f"stop after it; it ran {len(history)} iterations. Stop once no centroid moved more than tol.")
    slow_start = X64[X64[:, 0].argsort()[:k]].clone()  # k neighbours in one corner: far from converged
    slow = KMeans(k, init=slow_start.numpy(), n_init=1, max_iter=500, tol=0.0, algorithm="lloyd").fit(X64.numpy())
    runs = min(3, slow.n_iter_ - 1)
    _, _, history = _unpack_kmeans(call(kmeans, X64.clone(), k, init=slow_start, max_iter=runs, tol=1e-12,
                                        what=f"kmeans(..., max_iter={runs})"), n, k, d, f"kmeans(..., max_iter={runs})")
    expect(len(history) == runs, f"kmeans(..., max_iter={runs}, tol=1e-12) on data that needs {slow.n_iter_} iterations "
                                 f"should run {runs} iterations and record {runs} inertias, got {len(history)}.")
    passed(f"kmeans matches scikit-learn's KMeans from the same centroids ({reference.n_iter_} iterations, inertia "
           f"{reference.inertia_:.6g}); max_iter and tol honoured")


def check_kmeans_empty_cluster(kmeans, seed: int = 0, n: int = 400, d: int = 4, k: int = 3) -> None:
    """A centroid that no point is nearest to stays where it is; the others behave as if it were absent."""
    X64 = _blobs(seed, n, d, k, spread=2.5)
    C0 = _distinct_rows(X64, k, seed)
    far = (X64.max(0).values + 50).unsqueeze(0)
    reference = KMeans(k, init=C0.numpy(), n_init=1, max_iter=500, tol=0.0, algorithm="lloyd").fit(X64.numpy())
    what = "kmeans(X, 4, init=C0 with a 4th centroid far from every point)"
    centroids, labels, history = _unpack_kmeans(
        call(kmeans, X64.clone(), k + 1, init=torch.cat([C0, far]), max_iter=500, tol=1e-8, what=what), n, k + 1, d, what)
    expect(bool((labels != k).all()), f"{what}: no point is nearest to the far centroid, yet some labels are {k}.")
    moved = max_abs_diff(centroids[k], far[0])
    expect(moved < 1e-9, f"{what}: the empty cluster's centroid moved by {moved:.3g}; an empty cluster keeps its previous "
                         "centroid (do not re-initialise it).")
    err = max_abs_diff(centroids[:k], torch.from_numpy(reference.cluster_centers_))
    expect(err < 1e-6 * float(X64.abs().max()),
           f"{what}: the other centroids should match k-means without the empty one (scikit-learn), but differ by {err:.3g}.")
    expect(abs(history[-1] - reference.inertia_) <= 1e-6 * reference.inertia_,
           f"{what}: final inertia {history[-1]:.6g}, expected {reference.inertia_:.6g}.")
    passed("kmeans: an empty cluster keeps its centroid (no NaN, no re-initialisation)")


def _three_groups(seed: int) -> tuple[torch.Tensor, float]:
    """Two small tight groups near each other and a large one far away; returns the data and its optimal inertia.

    A uniformly random start puts two centroids in the large group about half of the time, and Lloyd's
    iterations cannot undo that; D² sampling almost never does.
    """
    g = generator(seed)
    sizes = (30, 30, 90)
    centres = torch.tensor([[0.0, 0.0], [12.0, 0.0], [0.0, 40.0]], dtype=torch.float64).repeat_interleave(torch.tensor(sizes), 0)
    X = centres + 0.3 * torch.randn(sum(sizes), 2, generator=g, dtype=torch.float64)
    best = sum(float(((part - part.mean(0)) ** 2).sum()) for part in X.split(sizes))
    return X, best


def check_kmeans_init_modes(kmeans, seed: int = 0, runs: int = 30) -> None:
    """``init="random"`` and ``"kmeans++"`` pick distinct data rows, use the generator, and k-means++ finds the
    well-separated optimum far more often than a random start could."""
    g = generator(seed)
    X = torch.randn(12, 3, generator=g, dtype=torch.float64) * 5
    for init in ("random", "kmeans++"):
        what = f'kmeans(X [12, 3], 12, init="{init}")'
        centroids, _, history = _unpack_kmeans(call(kmeans, X.clone(), 12, init=init, generator=generator(seed), what=what),
                                               12, 12, 3, what)
        gaps = torch.cdist(centroids.to(torch.float64), X).min(1).values
        expect(bool(gaps.max() < 1e-8) and abs(history[-1]) < 1e-8,
               f"{what}: with k equal to the number of (distinct) points every point should become its own cluster "
               f"(final inertia 0), got inertia {history[-1]:.3g}. The initial centroids must be k *distinct* rows of X.")
        blobs = _blobs(seed, 300, 4, 5)
        what = f'kmeans(X, 5, init="{init}", generator)'
        first = _unpack_kmeans(call(kmeans, blobs.clone(), 5, init=init, generator=generator(seed), what=what), 300, 5, 4, what)
        again = _unpack_kmeans(call(kmeans, blobs.clone(), 5, init=init, generator=generator(seed), what=what), 300, 5, 4, what)
        expect(torch.equal(first[0], again[0]),
               f"{what}: two generators with the same seed gave different results; draw the initial centroids with `generator`.")

    X, best = _three_groups(seed)
    found = {}
    for init in ("random", "kmeans++"):
        g = generator(seed + 7)
        optimal = 0
        for _ in range(runs):
            _, _, history = _unpack_kmeans(call(kmeans, X.clone(), 3, init=init, generator=g, what=f'kmeans(X, 3, init="{init}")'),
                                           len(X), 3, 2, f'kmeans(X, 3, init="{init}")')
            optimal += history[-1] <= best * (1 + 1e-6)
        found[init] = optimal
    expect(found["kmeans++"] >= 0.85 * runs,
           f'on three well-separated groups, kmeans(init="kmeans++") found the best clustering in {found["kmeans++"]} of '
           f"{runs} runs; D² sampling almost always puts one centroid in each group (expected at least {int(0.85 * runs)}).")
    expect(found["random"] < runs,
           f'kmeans(init="random") found the best clustering in all {runs} runs on data where a uniformly random start '
           "gets stuck about half of the time: does \"random\" really pick k rows uniformly at random?")
    passed(f'kmeans init modes: distinct rows, reproducible; best clustering found in {found["kmeans++"]}/{runs} runs '
           f'with "kmeans++" vs {found["random"]}/{runs} with "random"')


# ------------------------------------------------------------------------ MLP
def _probe_classification_gradients(model, x, labels) -> list:
    """Backpropagate the cross-entropy of ``model(x)`` against ``labels``: each parameter's summed |gradient|, None
    where none arrived."""
    loss = torch.nn.functional.cross_entropy(model(x), labels)
    if loss.requires_grad:  # else the output is detached: no parameter gets a gradient
        loss.backward()
    return [None if p.grad is None else float(p.grad.abs().sum()) for p in model.parameters()]


def check_mlp(MLP, seed: int = 0) -> None:
    """``forward`` gives [B, 10] logits, ``features`` [B, hidden] penultimate activations (logits affine in them)."""
    torch.manual_seed(seed)
    # Gaussian noise rather than images: it flips the sign of many pre-activations from sample to sample, so the
    # logits are affine in the features only if the features come after the last non-linearity.
    x = torch.randn(200, 1, 28, 28, generator=generator(seed))
    for hidden, kwargs in ((256, {}), (32, {"hidden": 32})):
        what = f"MLP({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        model = call(MLP, what=what, **kwargs)
        expect(is_instance(model, torch.nn.Module), "MLP should subclass torch.nn.Module.")
        model.eval()
        with torch.no_grad():
            logits = as_tensor(call(model, x, what=f"{what}(x)"), "logits")
            feats = as_tensor(call(model.features, x, what=f"{what}.features(x)"), "features")
        expect_shape(logits, (200, 10), f"{what}(x) for x [200, 1, 28, 28]")
        expect_shape(feats, (200, hidden), f"{what}.features(x) for x [200, 1, 28, 28]")
    design = torch.cat([feats.double(), torch.ones(200, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, logits.double(), driver="gelsd").solution
    residual = float((design @ solution - logits.double()).abs().max())
    expect(residual < 1e-4 * (1 + float(logits.abs().max())),
           "the logits are not an affine function of features(x): features should return the activations of the "
           "*penultimate* layer (after its non-linearity), the input of the final nn.Linear that produces the logits.")
    model.train()
    gradients = call(_probe_classification_gradients, model, x, torch.arange(200) % 10,
                     what="the cross-entropy's backward() through MLP()")
    expect(type(gradients) is list and any(type(g) is float and g > 0 for g in gradients),
           "no parameter of MLP received a gradient from the cross-entropy loss: is the output detached?")
    passed("MLP: logits [B, 10], features [B, hidden] feeding the last linear layer")


class _DropoutLinear(torch.nn.Module):
    """A fixed classifier whose predictions change in training mode (dropout): detects a missing ``model.eval()``."""

    def __init__(self, seed: int, hidden: int = 16):
        super().__init__()
        g = generator(seed)
        self.drop = torch.nn.Dropout(0.5)
        self.hidden = torch.nn.Linear(784, hidden)
        self.out = torch.nn.Linear(hidden, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def features(self, x):
        return torch.relu(self.hidden(self.drop(x.flatten(1))))

    def forward(self, x):
        return self.out(self.features(x))


def check_accuracy(accuracy, seed: int = 0, n: int = 250, batch_size: int = 64) -> None:
    """The share of correctly classified images over the whole loader, in evaluation mode, as a float in [0, 1]."""
    torch.manual_seed(seed)
    model = _DropoutLinear(seed)
    images = torch.rand(n, 1, 28, 28, generator=generator(seed))
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(1)
    labels = predicted.clone()
    wrong = torch.arange(n - n % batch_size - 20, n)  # mistakes pile up in the short last batch
    labels[wrong] = (labels[wrong] + 1) % 10
    expected = float((predicted == labels).double().mean())
    model.train().to(get_device())  # on a GPU grader: batches must follow the model to its device
    got = as_float(call(accuracy, model, tensor_loader(images, labels, batch_size=batch_size), what="accuracy(model, loader)"),
                   "accuracy(...)")
    if abs(got - expected) > 1e-9:
        if abs(got - 100 * expected) < 1e-6:
            fail(f"accuracy returned {got:.4g}, a percentage; return a fraction in [0, 1] ({expected:.4g}).")
        batches = [float((p == l).double().mean()) for p, l in zip(predicted.split(batch_size), labels.split(batch_size))]
        if abs(got - float(np.mean(batches))) < 1e-9:
            fail(f"accuracy returned {got:.4g}, the mean of per-batch accuracies; count correct predictions over all "
                 f"images and divide by their number ({expected:.4g}).")
        fail(f"accuracy returned {got:.4g}, expected {expected:.4g}. Put the model in evaluation mode (model.eval()) "
             "so that dropout is off, and compare argmax of the logits with the labels.")
    passed("accuracy: share of correct predictions over the whole loader, in evaluation mode")


def check_extract_features(extract_features, seed: int = 0, n: int = 150, batch_size: int = 64) -> None:
    """``model.features`` of every image of the loader, in order, in evaluation mode, without a graph: [N, hidden]."""
    torch.manual_seed(seed)
    model = _DropoutLinear(seed)
    images = torch.rand(n, 1, 28, 28, generator=generator(seed))
    model.eval()
    with torch.no_grad():
        expected = model.features(images)
    model.train().to(get_device())  # on a GPU grader: batches must follow the model to its device
    out = call(extract_features, model, tensor_loader(images, torch.zeros(n, dtype=torch.long), batch_size=batch_size),
               what="extract_features(model, loader)")
    if isinstance(out, torch.Tensor):
        expect(not out.requires_grad, "extract_features returned a tensor that requires grad: compute it under "
                                      "torch.no_grad() (or detach it) so that no graph is kept for 60 000 images.")
    out = as_tensor(out, "extract_features(...)")
    if tuple(out.shape) == (n, 10):
        fail("extract_features returned [N, 10]: these are the logits; use model.features(x), the penultimate activations.")
    expect_shape(out, tuple(expected.shape), "extract_features(model, loader)")
    err = max_abs_diff(out, expected)
    expect(err < 1e-5, f"extract_features differs from model.features(images) by up to {err:.3g}: put the model in "
                       "evaluation mode (dropout off) and keep the loader's order.")
    passed("extract_features: penultimate activations of every image, in order, evaluation mode, no graph")


def _mnist_split(seed: int, n_train: int):
    images, labels = load_mnist("train")
    pick = torch.randperm(len(images), generator=generator(seed))[:n_train]
    return images[pick], labels[pick]


def _trained_classifier(MLP, train_classifier, seed: int):
    sizes = budget("02")
    images, labels = _mnist_split(seed, sizes.check_train)
    torch.manual_seed(seed)
    model = call(MLP, what="MLP()")
    loader = tensor_loader(images, labels, batch_size=sizes.mlp_batch, shuffle=True, generator=generator(seed))
    history = call(train_classifier, model, loader, epochs=sizes.check_epochs, lr=sizes.mlp_lr,
                   what="train_classifier(model, loader, epochs, lr)")
    return model, history, sizes


def _test_accuracy(model) -> float:
    images, labels = load_mnist("test")
    device = next(model.parameters()).device  # the student's loop may have moved the model to the GPU
    model.eval()
    with torch.no_grad():
        return float(torch.cat([model(x.to(device)).argmax(1).cpu() for x in images.split(2000)]).eq(labels).double().mean())


def check_train_classifier(train_classifier, MLP, seed: int = 0, min_accuracy: float = 0.88) -> None:
    """Trained with the budget's sizes the MLP classifies MNIST test digits well; one loss per epoch."""
    model, history, sizes = _trained_classifier(MLP, train_classifier, seed)
    expect(isinstance(history, dict) and "train_loss" in history,
           "train_classifier should return a dict with the list 'train_loss' (mean training loss per epoch).")
    losses = [as_float(v, "train_loss entry") for v in history["train_loss"]]
    expect(len(losses) == sizes.check_epochs,
           f"train_loss should have one entry per epoch ({sizes.check_epochs}), got {len(losses)}: average the batch losses "
           "of each epoch.")
    acc = _test_accuracy(model)
    expect(acc >= min_accuracy,
           f"after {sizes.check_epochs} epoch(s) on {sizes.check_train} images the MLP's test accuracy is {acc:.3f}, below "
           f"{min_accuracy}; a correct MLP trained with Adam on the cross-entropy reaches about 0.93 here. Check the loss "
           "(nn.functional.cross_entropy on the logits), optimizer.zero_grad() / backward() / step(), and the learning rate.")
    passed(f"train_classifier: test accuracy {acc:.3f} after {sizes.check_epochs} epoch(s) on {sizes.check_train} images "
           f"({sizes.name} budget)")


# ------------------------------------------------------------------------ GMM
def _mixture_data(seed: int, n: int, d: int, components: int) -> torch.Tensor:
    """Correlated Gaussian clusters (a full covariance fits them far better than a diagonal one), float32."""
    g = generator(seed)
    parts = []
    for j in range(components):
        mixing = torch.randn(d, d, generator=g, dtype=torch.float64)
        centre = 8 * torch.randn(d, generator=g, dtype=torch.float64)
        parts.append(torch.randn(n // components, d, generator=g, dtype=torch.float64) @ mixing + centre)
    return torch.cat(parts).float()


def _mean_log_likelihood(gmm, data: np.ndarray, what: str) -> float:
    """The mean log-likelihood of ``data`` under the fitted full-covariance mixture ``gmm``, from its parameters.

    Computed here rather than by ``gmm.score``: in a judged check the student's mixture lives in their kernel,
    and only its fitted parameters (plain arrays) are evidence.
    """
    weights, means, covariances = (as_tensor(getattr(gmm, name, None), f"{what}.{name}").double()
                                   for name in ("weights_", "means_", "covariances_"))
    components, d = means.shape
    expect_shape(weights, (components,), f"{what}.weights_")
    expect_shape(covariances, (components, d, d), f"{what}.covariances_")
    try:
        log_densities = np.stack([np.log(w) + multivariate_normal(m, c).logpdf(data)
                                  for w, m, c in zip(weights.numpy(), means.numpy(), covariances.numpy())], axis=1)
    except (ValueError, np.linalg.LinAlgError) as error:
        fail(f"{what} has covariances that are not positive definite ({error}).")
    return float(logsumexp(log_densities, axis=1).mean())


def check_fit_gmm(fit_gmm, seed: int = 0, n: int = 900, d: int = 4, components: int = 3) -> None:
    """A fitted full-covariance ``GaussianMixture`` with the right size, reproducible, as good as scikit-learn's own fit."""
    features = _mixture_data(seed, n, d, components)
    data = features.double().numpy()
    reference = GaussianMixture(components, covariance_type="full", reg_covar=GMM_REG_COVAR, random_state=seed).fit(data)
    for n_components, given in ((1, features.clone()), (components, non_contiguous(features.double()))):
        what = f"fit_gmm(features [{n}, {d}] {given.dtype} tensor, {n_components}, seed={seed})"
        gmm = call_unchanged(fit_gmm, given, n_components, seed=seed, what=what)
        expect(is_instance(gmm, GaussianMixture), f"{what} should return a fitted sklearn.mixture.GaussianMixture, got "
                                                 f"{type_name(gmm)}.")
        expect(hasattr(gmm, "means_"), f"{what} returned a GaussianMixture that was not fitted: call .fit(features).")
        expect(gmm.n_components == n_components and gmm.means_.shape == (n_components, d),
               f"{what} has {gmm.n_components} components with means of shape {gmm.means_.shape}; expected "
               f"{n_components} components in {d} dimensions.")
    expect(gmm.covariance_type == "full", f"{what} uses covariance_type={gmm.covariance_type!r}; use 'full' covariances: "
                                          "penultimate features are strongly correlated.")
    # On one structureless Gaussian, where EM ends depends on where it starts; NumPy's global state is set
    # differently before each call, so only a fit seeded from `seed` gives the same mixture twice.
    blob = torch.randn(n, d, generator=generator(seed + 1))
    global_state = np.random.get_state()
    try:
        fits = []
        for global_seed in (1, 2):
            np.random.seed(global_seed)
            fits.append(call(fit_gmm, blob.clone(), components, seed=seed,
                             what=f"fit_gmm(features [{n}, {d}], {components}, seed={seed})"))
    finally:
        np.random.set_state(global_state)
    expect(np.allclose(fits[0].means_, fits[1].means_),
           f"fit_gmm(features [{n}, {d}], {components}, seed={seed}) gave different mixtures for the same seed: "
           "pass random_state=seed to GaussianMixture.")
    got, best = _mean_log_likelihood(gmm, data, what), float(reference.score(data))
    expect(got >= best - 0.05,
           f"{what}: mean log-likelihood of the training features {got:.3f}, but GaussianMixture({components}, "
           f"covariance_type='full', reg_covar={GMM_REG_COVAR}, random_state=seed) reaches {best:.3f}.")
    passed(f"fit_gmm: fitted full-covariance GaussianMixture, reproducible, mean log-likelihood {got:.3f}")


def check_ood_scores(ood_scores, seed: int = 0) -> None:
    """One score per sample, the negative log-likelihood (higher = more out-of-distribution)."""
    features = _mixture_data(seed, 300, 3, 2)
    gmm = GaussianMixture(2, covariance_type="full", random_state=seed).fit(features.double().numpy())
    probe = torch.cat([features[:40], features[:40] + 30])
    expected = -gmm.score_samples(probe.double().numpy())
    outs = [call(ood_scores, gmm, given, what=f"ood_scores(gmm, features) on {given.dtype} features")
            for given in (probe.clone(), probe.double())]
    for out in outs:
        expect(isinstance(out, (np.ndarray, torch.Tensor)), f"ood_scores should return a NumPy array, got {type_name(out)}.")
        expect_shape(as_tensor(out, "ood_scores(...)"), (80,), "ood_scores(gmm, features [80, 3])")
    out = as_tensor(outs[0], "ood_scores(...)").double()
    if max_abs_diff(out, expected) > 1e-6 * float(np.abs(expected).max()):
        if max_abs_diff(out, -expected) < 1e-6 * float(np.abs(expected).max()):
            fail("ood_scores returned the log-likelihood; the score must be *higher* for out-of-distribution samples: "
                 "return its negative.")
        fail(f"ood_scores should be -gmm.score_samples(features) (negative log-likelihood per sample); expected "
             f"{fmt(expected)}, got {fmt(out)}.")
    passed("ood_scores: negative log-likelihood per sample, higher for outliers")


def check_auroc(auroc, seed: int = 0, n_in: int = 300, n_out: int = 200) -> None:
    """``auroc(in_scores, out_scores)`` equals scikit-learn's ``roc_auc_score`` with out-of-distribution positive, ties included."""
    g = generator(seed)
    cases = {
        "overlapping scores with ties": (torch.randn(n_in, generator=g).mul(2).round() / 2,
                                         (torch.randn(n_out, generator=g) + 0.7).mul(2).round() / 2),
        "continuous scores": (torch.randn(n_in, generator=g, dtype=torch.float64),
                              torch.randn(n_out, generator=g, dtype=torch.float64) + 1.5),
        "perfectly separated": (torch.rand(n_in, generator=g), torch.rand(n_out, generator=g) + 2),
    }
    for name, (inside, outside) in cases.items():
        labels = np.r_[np.zeros(n_in), np.ones(n_out)]
        expected = roc_auc_score(labels, np.r_[inside.numpy(), outside.numpy()])
        for kind, args in (("NumPy arrays", (inside.numpy(), outside.numpy())), ("tensors", (inside.clone(), outside.clone()))):
            got = as_float(call(auroc, *args, what=f"auroc(in_scores, out_scores) on {kind}"), "auroc(...)")
            if abs(got - expected) <= 1e-9:
                continue
            if abs(got - (1 - expected)) <= 1e-9:
                fail(f"auroc on {name} returned {got:.4f} = 1 − {expected:.4f}: the out-of-distribution scores are the "
                     "positive class (higher score = more likely out-of-distribution).")
            strict = float((outside[:, None] > inside[None]).double().mean())
            if abs(got - strict) <= 1e-9:
                fail(f"auroc on {name} returned {got:.4f}, expected {expected:.4f}: a tie between an in- and an "
                     "out-of-distribution score counts as one half.")
            fail(f"auroc on {name} ({kind}) returned {got:.4f}, expected {expected:.4f} (scikit-learn's roc_auc_score): "
                 "the probability that a random out-of-distribution score exceeds a random in-distribution one.")
    passed("auroc matches scikit-learn's roc_auc_score (ties count one half; NumPy or torch inputs)")


def check_ood_pipeline(MLP, train_classifier, extract_features, fit_gmm, ood_scores, seed: int = 0,
                       min_auroc: float = 0.90) -> None:
    """End to end in the budget's sizes: MLP features + GMM separate MNIST test from FashionMNIST test."""
    model, _, sizes = _trained_classifier(MLP, train_classifier, seed)
    images, labels = _mnist_split(seed + 1, sizes.check_gmm_fit)
    fashion, fashion_labels = load_fashion_mnist("test")
    test_images, test_labels = load_mnist("test")
    features = {}
    for name, (x, y) in {"train": (images, labels), "mnist": (test_images, test_labels),
                         "fashion": (fashion, fashion_labels)}.items():
        features[name] = as_tensor(call(extract_features, model, tensor_loader(x, y, batch_size=1000),
                                        what="extract_features(model, loader)"), "features")
    gmm = call(fit_gmm, features["train"], sizes.check_components, seed=seed, what="fit_gmm(train features, ...)")
    scores = {name: as_tensor(call(ood_scores, gmm, features[name], what="ood_scores(gmm, features)"), "scores").double().numpy()
              for name in ("mnist", "fashion")}
    value = roc_auc_score(np.r_[np.zeros(len(scores["mnist"])), np.ones(len(scores["fashion"]))],
                          np.r_[scores["mnist"], scores["fashion"]])
    expect(value >= min_auroc,
           f"MNIST test vs FashionMNIST test: AUROC {value:.3f} with a {sizes.check_components}-component GMM on "
           f"{sizes.check_gmm_fit} training features, below {min_auroc}. A correct pipeline reaches about 0.95 here. "
           "Check that features are the penultimate activations of the trained MLP and that the GMM is fitted on "
           "MNIST training features.")
    passed(f"OOD pipeline: AUROC {value:.3f} (MNIST test vs FashionMNIST test, {sizes.name} budget)")

"""Lloyd iterations of assignment 02's reference k-means against scikit-learn's, side by side, on all of MNIST.

    python benchmarks/kmeans.py [--starts 5] [--k 10]

Data: the 60 000 MNIST training images as float32 [60000, 784]. For each of ``--starts`` random starts (K
distinct images), ours runs to convergence (tol 1e-4, at most 300 iterations) and scikit-learn's
``KMeans(algorithm="lloyd", tol=0)`` then runs the same number of iterations from the same centroids. The two
are timed alternately in one process; the table gives milliseconds per iteration (wall time of the call
over its iterations; fixed costs such as input checks are spread over the 50–200 iterations) and the ratio
per start. Early iterations move many points between clusters and late ones few, which matters for ours (it
updates the cluster sums incrementally), so whole runs are the fair comparison. The largest single
allocation of our call shows that memory stays O(n·k + n·d).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from sklearn.cluster import KMeans

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=5, help="random starts (each one run of each)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from conftest import reference_answers
    from threadpoolctl import threadpool_info

    from helpers.checks.a02 import largest_allocation
    from helpers.data import load_mnist

    kmeans = reference_answers("02").kmeans
    X = load_mnist("train")[0].flatten(1).contiguous()
    X_np = X.numpy()
    n, d = X.shape
    KMeans(args.k, init=X_np[:args.k], n_init=1, max_iter=2).fit(X_np)  # warm-up: thread pools, first touch

    rows = []
    for start in range(args.starts):
        init = X[torch.randperm(n, generator=torch.Generator().manual_seed(start))[:args.k]].clone()
        began = time.perf_counter()
        _, labels, history = kmeans(X, args.k, init=init, max_iter=300, tol=1e-4)
        ours = (time.perf_counter() - began) / len(history)
        began = time.perf_counter()
        reference = KMeans(args.k, init=init.numpy(), n_init=1, max_iter=len(history), tol=0.0,
                           algorithm="lloyd").fit(X_np)
        theirs = (time.perf_counter() - began) / reference.n_iter_
        rows.append((start, len(history), reference.n_iter_, 1000 * ours, 1000 * theirs, ours / theirs,
                     history[-1], reference.inertia_))
    first = X[:args.k].clone()  # sliced outside: the watcher counts a view of X as the size of X
    _, largest = largest_allocation(lambda: kmeans(X, args.k, init=first, max_iter=2))

    sklearn_threads = max((pool["num_threads"] for pool in threadpool_info()), default=1)
    print(f"Lloyd on MNIST train, {n} × {d} float32, K = {args.k}; threads: torch {torch.get_num_threads()}, "
          f"scikit-learn's pools up to {sklearn_threads}\n")
    print("| start | iterations (ours / scikit-learn) | ours (ms per iteration) | scikit-learn (ms per iteration) "
          "| ratio | final inertia (ours / scikit-learn) |\n| ---: | ---: | ---: | ---: | ---: | ---: |")
    for start, it_ours, it_theirs, ms_ours, ms_theirs, ratio, j_ours, j_theirs in rows:
        print(f"| {start} | {it_ours} / {it_theirs} | {ms_ours:.1f} | {ms_theirs:.1f} | {ratio:.2f} "
              f"| {j_ours:.6g} / {j_theirs:.6g} |")
    print(f"\nmedian ratio (ours / scikit-learn): {statistics.median(r[5] for r in rows):.2f}")
    print(f"largest single allocation of one call of ours: {largest / 2**20:.0f} MiB "
          f"(X itself: {X.nbytes / 2**20:.0f} MiB; an [n, k, d] tensor: {n * args.k * d * 4 / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

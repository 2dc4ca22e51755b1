"""One Lloyd iteration of assignment 02's reference k-means against scikit-learn's, side by side, on all of MNIST.

    python benchmarks/kmeans.py [--repeats 5] [--iterations 10] [--k 10]

Data: the 60 000 MNIST training images as float32 [60000, 784]; both implementations start from the same K
random images. Each call runs with tol below zero (ours) or tol=0 (scikit-learn's, which then stops only when
no label changes), so neither stops early. The time of one iteration is
(t(1 + m iterations) − t(1 iteration)) / m, which cancels the fixed costs of a call (input validation,
copies, scikit-learn's final assignment step). The two are timed alternately, in one process, and the
median over ``--repeats`` is reported. The largest single allocation of our iteration shows that memory stays
O(n·k + n·d).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10, help="extra iterations m in each timed pair")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both torch and scikit-learn (default: each library's own choice)")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    from conftest import reference_answers

    from helpers.checks.a02 import largest_allocation
    from helpers.data import load_mnist

    kmeans = reference_answers("02").kmeans
    X = load_mnist("train")[0].flatten(1).contiguous()
    X_np = X.numpy()
    init = X[torch.randperm(len(X), generator=torch.Generator().manual_seed(0))[:args.k]].clone()
    m = args.iterations

    def ours(iterations: int):
        return kmeans(X, args.k, init=init, max_iter=iterations, tol=-1.0)

    def sklearn(iterations: int):
        return KMeans(args.k, init=init.numpy(), n_init=1, max_iter=iterations, tol=0.0, algorithm="lloyd").fit(X_np)

    ours(1), sklearn(1)  # warm-up: thread pools, first-touch of memory
    assert len(ours(1 + m)[2]) == 1 + m and sklearn(1 + m).n_iter_ == 1 + m, "a run stopped early; lower --iterations"
    per_iteration = {"ours (torch)": [], "scikit-learn": []}
    for _ in range(args.repeats):
        for name, run in (("ours (torch)", ours), ("scikit-learn", sklearn)):
            per_iteration[name].append((seconds(lambda: run(1 + m)) - seconds(lambda: run(1))) / m)
    _, largest = largest_allocation(lambda: ours(1))
    n, d = X.shape

    ms = {name: 1000 * statistics.median(values) for name, values in per_iteration.items()}
    spread = {name: 1000 * (max(values) - min(values)) for name, values in per_iteration.items()}
    from threadpoolctl import threadpool_info

    sklearn_threads = max((pool["num_threads"] for pool in threadpool_info()), default=1)
    print(f"Lloyd iteration on MNIST train, {n} × {d} float32, K = {args.k}; threads: torch {torch.get_num_threads()}, "
          f"scikit-learn's pools up to {sklearn_threads}; "
          f"median of {args.repeats} (each over {m} iterations)\n")
    print("| implementation | ms per iteration | range (ms) | relative to scikit-learn |\n| --- | ---: | ---: | ---: |")
    for name in per_iteration:
        print(f"| {name} | {ms[name]:.1f} | {spread[name]:.1f} | {ms[name] / ms['scikit-learn']:.2f} |")
    print(f"\nlargest single allocation of one call of ours (1 iteration): {largest / 2**20:.0f} MiB "
          f"(X itself: {X.nbytes / 2**20:.0f} MiB; an [n, k, d] tensor: {n * args.k * d * 4 / 2**20:.0f} MiB)")
    labels_ours = ours(1 + m)[1].numpy()
    labels_sklearn = sklearn(1 + m).labels_
    print(f"labels after {1 + m} iterations agree on {100 * np.mean(labels_ours == labels_sklearn):.2f} % of images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

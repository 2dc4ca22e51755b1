"""Sample quality of the course's generative models: confident share, digits present and Fréchet distance per seed.

    python benchmarks/sample_quality.py [--models real noise ebm03] [--seeds 0 1 2] [--budget full|grade] [--n 256]

Every figure comes from ``helpers.quality`` (an MNIST classifier cached in the data folder; built on first use).
Each model is a function ``(seed, sizes) -> (samples, value_range)`` in ``MODELS``; the table gives its three
figures and wall time per seed, then the same figures for real test digits and uniform noise of the same
size. ``real`` and ``noise`` are reference rows (no training: their time is drawing the batch, plus loading
the test set in the first row). The Fréchet distance depends on N, so compare only rows of the same N.
``ebm03`` trains 03's MNIST EBM with the reference answers of the source notebook and the budget's sizes,
exactly as the notebook's training cell does, and samples as it does for its figure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import quality  # noqa: E402
from helpers.budgets import BUDGET_ENV, budget  # noqa: E402
from helpers.data import load_mnist  # noqa: E402
from helpers.runtime import get_device  # noqa: E402


def real_digits(seed: int, sizes) -> tuple[torch.Tensor, tuple[float, float]]:
    """Held-out test digits (a different draw per seed): what a perfect model would score."""
    held_out = quality.held_out_digits()[0]
    pick = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(100 + seed))[:sizes.n]
    return held_out[pick], (0.0, 1.0)


def uniform_noise(seed: int, sizes) -> tuple[torch.Tensor, tuple[float, float]]:
    """Uniform noise in [-1, 1], the EBM's starting point: what an untrained model would score."""
    return torch.rand(sizes.n, 1, 28, 28, generator=torch.Generator().manual_seed(100 + seed)) * 2 - 1, (-1.0, 1.0)


def ebm03(seed: int, sizes) -> tuple[torch.Tensor, tuple[float, float]]:
    """03's MNIST EBM, trained and sampled as in the notebook's "Training the MNIST EBM" cell."""
    from conftest import reference_answers

    ref = reference_answers("03")
    torch.manual_seed(seed)
    model = ref.EnergyCNN().to(get_device())
    images = load_mnist("train")[0] * 2 - 1
    history = ref.train_mnist_ebm(model, images, sizes.mnist_iters, batch_size=sizes.mnist_batch,
                                  n_steps=sizes.mnist_steps, buffer=ref.ReplayBuffer(sizes.mnist_buffer, (1, 28, 28)),
                                  generator=torch.Generator().manual_seed(seed))
    model.eval()
    start = history["buffer"].sample(sizes.n, reinit_prob=0.0, generator=torch.Generator().manual_seed(seed + 1))
    samples = ref.sgld_sample(model, start.to(get_device()), 60, 10.0, noise_std=0.005, clamp=(-1.0, 1.0))
    return samples.cpu(), (-1.0, 1.0)


MODELS = {"real": (real_digits, None), "noise": (uniform_noise, None), "ebm03": (ebm03, "03")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=["real", "noise"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", choices=["full", "grade"], default="full", help="sizes the models train with")
    parser.add_argument("--n", type=int, default=256, help="samples scored per model and seed")
    args = parser.parse_args()
    os.environ[BUDGET_ENV] = args.budget

    _, info = quality.load_classifier()
    print(f"quality classifier: test accuracy {info['test_accuracy']:.2%} (trained in {info['train_seconds']:.0f} s, "
          f"torch {info['torch']}); budget '{args.budget}', {args.n} samples per run, torch threads "
          f"{torch.get_num_threads()}\n")
    print("| model | seed | confident (p ≥ 0.9) | digits (≥ 5 %) | Fréchet distance | seconds (train + sample) |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    report = None
    for name in args.models:
        make, assignment = MODELS[name]
        sizes = budget(assignment) if assignment else argparse.Namespace()
        sizes.n = args.n
        for seed in args.seeds:
            began = time.perf_counter()
            samples, value_range = make(seed, sizes)
            seconds = time.perf_counter() - began
            report = quality.sample_quality(samples, value_range=value_range, label=name)
            print(f"| {name} | {seed} | {report.confident:.1%} | {report.digits}/10 | {report.frechet:.2f} "
                  f"| {seconds:.1f} |", flush=True)
    print(f"\nbaselines at N = {args.n}: real test digits {report.real.confident:.1%}, {report.real.digits}/10, "
          f"Fréchet {report.real.frechet:.2f}; uniform noise {report.noise.confident:.1%}, {report.noise.digits}/10, "
          f"Fréchet {report.noise.frechet:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

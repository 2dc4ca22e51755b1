"""Sample quality of the course's generative models: confident share, digits present and Fréchet distance per seed.

    python benchmarks/sample_quality.py [--models real noise ebm03 score04] [--seeds 0 1 2] [--budget full|grade]

Every figure comes from ``helpers.quality`` (an MNIST classifier cached in the data folder; built on first use).
``ebm03`` and ``score04`` run the source notebooks' own cells that train the model and draw its samples (03's MNIST
EBM; 04's MNIST score network, sampled with annealed Langevin, the reverse VE SDE and predictor–corrector), with the reference
answers and the budget's sizes; only the run's seed (``MNIST_SEED`` / ``DIGIT_SEED`` in those cells) changes. The
table gives the three figures and the wall time of training plus sampling per seed. ``real`` (held-out test digits)
and ``noise`` (uniform noise) are reference rows of ``--n`` images. The Fréchet distance depends on N, so compare
only rows of the same N.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import quality  # noqa: E402
from helpers.budgets import BUDGET_ENV, budget  # noqa: E402
from helpers.runtime import get_device  # noqa: E402


def real_digits(seed: int, n: int):
    """Held-out test digits (a different draw per seed): what a perfect model would score."""
    held_out = quality.held_out_digits()[0]
    pick = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(100 + seed))[:n]
    return {"real": (held_out[pick], (0.0, 1.0))}


def uniform_noise(seed: int, n: int):
    """Uniform noise in [-1, 1], the EBM's starting point: what an untrained model would score."""
    return {"noise": (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(100 + seed)) * 2 - 1, (-1.0, 1.0))}


def notebook_cells(assignment: str, seed_name: str, seed: int, *markers: str) -> dict:
    """Run the source notebook's given cells that contain ``markers`` (in order) on top of its reference answers.

    The line ``<seed_name> = 0`` of those cells is the only change: it becomes ``<seed_name> = <seed>``.
    Returns the namespace the cells leave behind.
    """
    from conftest import reference_answers, source_notebook

    namespace = dict(vars(reference_answers(assignment)), device=get_device(), budget=budget(assignment),
                     default_threads=torch.get_num_threads())
    cells = [c.source for c in nbformat.read(source_notebook(assignment), as_version=4).cells if c.cell_type == "code"]
    for marker in markers:
        found = [source for source in cells if marker in source]
        if len(found) != 1:
            raise SystemExit(f"{assignment}: expected one code cell containing {marker!r}, found {len(found)}")
        source = found[0]
        if f"{seed_name} = 0" in source:
            source = source.replace(f"{seed_name} = 0", f"{seed_name} = {seed}", 1)
        exec(source, namespace)
    return namespace


def ebm03(seed: int, n: int):
    """03's MNIST EBM: the notebook's data, clipped-gradient wrapper and training-and-sampling cells."""
    ns = notebook_cells("03", "MNIST_SEED", seed, "mnist_train = load_mnist", "class ClipInputGradient", "MNIST_SEED = 0")
    return {"ebm03": (ns["mnist_samples"], (-1.0, 1.0))}


def score04(seed: int, n: int):
    """04's MNIST score network (bonus): the notebook's training and sampling cells."""
    ns = notebook_cells("04", "DIGIT_SEED", seed, "DIGIT_SIGMA_MIN, DIGIT_SIGMA_MAX =", "DIGIT_SEED = 0",
                        "digits_pc =")
    return {f"score04 {name}": (samples, (0.0, 1.0)) for name, samples in
            (("annealed Langevin", ns["digits_langevin"]), ("reverse VE SDE", ns["digits_sde"]),
             ("predictor–corrector", ns["digits_pc"]))}


MODELS = {"real": real_digits, "noise": uniform_noise, "ebm03": ebm03, "score04": score04}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=["real", "noise"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", choices=["full", "grade"], default="full", help="sizes the models train with")
    parser.add_argument("--n", type=int, default=256, help="images in the real and noise rows")
    args = parser.parse_args()
    os.environ[BUDGET_ENV] = args.budget

    _, info = quality.load_classifier()
    print(f"quality classifier: test accuracy {info['test_accuracy']:.2%} (trained in {info['train_seconds']:.0f} s, "
          f"torch {info['torch']}); budget '{args.budget}', torch threads {torch.get_num_threads()}, "
          f"device {get_device()}\n")
    print("| model | seed | N | confident (p ≥ 0.9) | digits (≥ 5 %) | Fréchet distance | seconds (train + sample) |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    baselines = {}
    for name in args.models:
        for seed in args.seeds:
            began = time.perf_counter()
            runs = MODELS[name](seed, args.n)
            seconds = time.perf_counter() - began
            for label, (samples, value_range) in runs.items():
                report = quality.sample_quality(samples, value_range=value_range, label=label)
                baselines[report.samples.n] = report
                print(f"| {label} | {seed} | {report.samples.n} | {report.confident:.1%} | {report.digits}/10 "
                      f"| {report.frechet:.1f} | {seconds:.0f} |", flush=True)
    for n, report in sorted(baselines.items()):
        print(f"\nbaselines at N = {n}: real test digits {report.real.confident:.1%}, {report.real.digits}/10, "
              f"Fréchet {report.real.frechet:.1f}; uniform noise {report.noise.confident:.1%}, {report.noise.digits}/10, "
              f"Fréchet {report.noise.frechet:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

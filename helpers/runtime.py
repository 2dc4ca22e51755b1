"""Seeding, device choice and the setup cell every notebook starts with.

Google Colab is told by its own module being loaded (Colab's kernel imports
``google.colab`` at start); there the notebook's setup cell has installed
``helpers`` from the edition's public copy before calling :func:`setup`.
"""
from __future__ import annotations

import os
import random
import sys
import warnings

import numpy as np
import torch

from .budgets import budget, budget_reason


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch generator with that seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def on_colab() -> bool:
    """Is this kernel Google Colab's?"""
    return "google.colab" in sys.modules


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA when present (or ``$COURSE_DEVICE`` / ``prefer``), else the CPU."""
    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def quiet_warnings() -> None:
    """Silence known-harmless library warnings.

    nbgrader gives zero to a test cell that writes anything to stderr, so a
    deprecation notice from a library must not reach a graded cell.
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*(ConvergenceWarning|lr_scheduler|verbose parameter).*")


def setup(assignment: str, seed: int = 0):
    """Seed everything, pick the device, print the budget; return ``(device, budget)``.

    ``$COURSE_SEED`` overrides ``seed`` (the seed-robustness benchmark uses it).
    """
    from . import plotting
    from .data import ASSIGNMENT_DATA, data_dir, fetch  # here, so that `python -m helpers.data` imports it only once

    seed = int(os.environ.get("COURSE_SEED", seed))
    quiet_warnings()
    seed_everything(seed)
    plotting.use_course_style()
    device = get_device()
    sizes = budget(assignment)
    print(f"Assignment {assignment} · budget '{sizes.name}' ({budget_reason()}) · device {device} · seed {seed}"
          + (" · Google Colab" if on_colab() else ""))
    if on_colab() and device.type == "cpu":
        print("  No GPU attached: Runtime → Change runtime type → a GPU makes the 'full' budget several times faster.")
    needed = ASSIGNMENT_DATA.get(assignment, ())
    for name in needed:
        fetch(name, quiet=True)  # downloads or rebuilds what is missing; raises a DataError saying what to do
    if needed:
        print(f"  data: {', '.join(needed)} verified in {data_dir()}")
    if sizes.name == "full":
        print("  'full' trains for real (a few minutes on a laptop CPU). For a quick trial: COURSE_BUDGET=grade.")
    else:
        print("  'grade' trains tiny models: enough for the checks, not for good figures.")
    return device, sizes

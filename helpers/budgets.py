"""Every size a notebook or a check trains with, for the two budgets.

``full`` (the default) is what a student runs: good results on a laptop CPU.
``grade`` is what nbgrader and CI run: small and fast, yet enough for a correct
solution to pass every check with margin. ``COURSE_BUDGET`` picks one; when
it is unset and nbgrader is executing the notebook (``NBGRADER_EXECUTION`` is
set), ``grade`` is used.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

BUDGET_ENV = "COURSE_BUDGET"
BUDGET_NAMES = ("full", "grade")

SIZES = {
    "01": {
        # 2-D autoencoder on MNIST: 48 000 train / 12 000 validation images in `full`.
        "full": dict(ae_train=48_000, ae_val=12_000, ae_epochs=30, ae_patience=4, ae_batch=128, ae_lr=1e-3),
        "grade": dict(ae_train=12_000, ae_val=2_000, ae_epochs=5, ae_patience=2, ae_batch=128, ae_lr=2e-3),
    },
    "03": {
        # 2-D EBM (notebook): one chain per data point; the check trains the 2-10-10-1 ReLU energy of the exercise
        # with the same sizes in both budgets. MNIST: replay-buffer SGLD (Du & Mordatch 2019), batch × SGLD steps.
        "full": dict(ebm_points=1000, ebm_iters=2000, ebm_hidden=64, ebm_lr=5e-3,
                     check_ebm_chains=500, check_ebm_iters=1000, check_ebm_lr=1e-2,
                     mnist_iters=2000, mnist_batch=64, mnist_steps=20, mnist_buffer=8192, mnist_show=256,
                     check_mnist_iters=50, check_mnist_batch=32, check_mnist_steps=10,
                     clf_train=60_000, clf_epochs=2),
        "grade": dict(ebm_points=200, ebm_iters=100, ebm_hidden=16, ebm_lr=1e-2,
                      check_ebm_chains=500, check_ebm_iters=1000, check_ebm_lr=1e-2,
                      mnist_iters=20, mnist_batch=32, mnist_steps=10, mnist_buffer=8192, mnist_show=64,
                      check_mnist_iters=50, check_mnist_batch=32, check_mnist_steps=10,
                      clf_train=10_000, clf_epochs=1),
    },
}


def budget_name() -> str:
    """The budget in force: ``$COURSE_BUDGET``, else ``grade`` under nbgrader, else ``full``."""
    name = os.environ.get(BUDGET_ENV, "").strip().lower()
    if not name:
        return "grade" if os.environ.get("NBGRADER_EXECUTION") else "full"
    if name not in BUDGET_NAMES:
        raise ValueError(f"{BUDGET_ENV}={name!r} is not a budget; use one of {', '.join(BUDGET_NAMES)}.")
    return name


def budget_reason() -> str:
    if os.environ.get(BUDGET_ENV, "").strip():
        return f"set by {BUDGET_ENV}"
    if os.environ.get("NBGRADER_EXECUTION"):
        return "chosen because nbgrader is running this notebook"
    return f"the default; set {BUDGET_ENV}=grade for a quick run"


def budget(assignment: str) -> SimpleNamespace:
    """The sizes of ``assignment`` (``"01"`` …) in the budget in force, as attributes."""
    name = budget_name()
    return SimpleNamespace(name=name, **SIZES[assignment][name])

"""The course kit's helpers: data, budgets and runtime, plotting, and the checkers of the graded cells."""
from .budgets import budget, budget_name
from .runtime import get_device, seed_everything, setup

__all__ = ["budget", "budget_name", "get_device", "seed_everything", "setup"]

"""Noise schedules for score-based models (assignment 04)."""
from __future__ import annotations

import math

import torch


def geometric_sigmas(sigma_min: float, sigma_max: float, L: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``L`` noise levels from ``sigma_min`` to ``sigma_max`` (increasing), equally spaced in log scale.

    A geometric sequence keeps the ratio of neighbouring levels constant, so the perturbed distributions
    of two neighbouring levels overlap equally well all along the schedule (Song & Ermon, 2019).
    """
    if not 0 < sigma_min <= sigma_max or L < 1:
        raise ValueError(f"need 0 < sigma_min <= sigma_max and L >= 1, got {sigma_min}, {sigma_max}, {L}")
    if L == 1:
        return torch.tensor([sigma_min], dtype=dtype)
    return torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), L, dtype=torch.float64)).to(dtype)

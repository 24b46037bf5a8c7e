"""Deterministic DDIM (eta = 0) in the epsilon parameterisation.

One function serves sampling and inversion: going from ``abar_from`` to ``abar_to`` with a noise
prediction ``eps`` is the same formula whichever way time runs (Song et al. 2020, Eq. 12 with
sigma = 0). Inversion is the usual approximation that evaluates ``eps`` at the *start* of each step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def predicted_x0(z_t: Tensor, eps: Tensor, abar_t: Tensor) -> Tensor:
    """x0_hat = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    return (z_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()


def ddim_step(z_t: Tensor, eps: Tensor, abar_from: Tensor, abar_to: Tensor) -> Tensor:
    """Move ``z_t`` from noise level ``abar_from`` to ``abar_to`` along the DDIM trajectory of ``eps``."""
    return abar_to.sqrt() * predicted_x0(z_t, eps, abar_from) + (1 - abar_to).sqrt() * eps


def timestep_grid(t_start: int, t_end: int, num_steps: int) -> list[int]:
    """``num_steps + 1`` integer timesteps from ``t_start`` to ``t_end`` inclusive (either direction).

    Timestep -1 stands for the clean image (abar = 1).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    grid = torch.linspace(float(t_start), float(t_end), num_steps + 1).round().long().tolist()
    grid[0], grid[-1] = t_start, t_end
    return grid

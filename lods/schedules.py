"""Step schedules: diffusion timesteps for the priors, and classifier-free-guidance weights.

Timesteps are integers in [0, N) for a model with N training timesteps; ranges are given as
fractions of N, as the papers do (``t ~ U[0.02, 0.98]``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class TimestepSchedule:
    """Draws the timesteps of one step; ``max_steps`` is the length of the run."""

    max_steps: int = 1

    def setup(self, max_steps: int) -> None:
        self.max_steps = max(int(max_steps), 1)

    def bounds(self, step: int) -> tuple[float, float]:
        raise NotImplementedError

    def __call__(self, step: int, batch_size: int, num_train_timesteps: int, generator=None, device="cpu") -> Tensor:
        lo, hi = self.bounds(step)
        last = num_train_timesteps - 1
        lo_t, hi_t = min(round(lo * num_train_timesteps), last), min(round(hi * num_train_timesteps), last)
        t = torch.randint(
            lo_t, hi_t + 1, (batch_size,), generator=generator, device=generator.device if generator else "cpu"
        )
        return t.to(device)


def _check_range(t_min: float, t_max: float) -> None:
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"timestep range must satisfy 0 <= t_min <= t_max <= 1, got t_min={t_min}, t_max={t_max}")


class RandomTimesteps(TimestepSchedule):
    """``t ~ U[t_min, t_max]`` every step (DreamFusion)."""

    def __init__(self, t_min: float = 0.02, t_max: float = 0.98):
        _check_range(t_min, t_max)
        self.t_min, self.t_max = t_min, t_max

    def bounds(self, step: int) -> tuple[float, float]:
        return self.t_min, self.t_max


class AnnealedTimesteps(RandomTimesteps):
    """``t ~ U[t_min, t_max]``, the upper bound dropped to ``t_max_after`` once ``anneal_fraction`` of the
    run has passed (ProlificDreamer: 0.98 -> 0.5 after 5k of 25k steps, i.e. fraction 0.2)."""

    def __init__(self, t_min: float = 0.02, t_max: float = 0.98, t_max_after: float = 0.5, anneal_fraction=0.2):
        super().__init__(t_min, t_max)
        _check_range(t_min, t_max_after)
        self.t_max_after, self.anneal_fraction = t_max_after, anneal_fraction

    def bounds(self, step: int) -> tuple[float, float]:
        annealed = step >= self.anneal_fraction * self.max_steps
        return self.t_min, self.t_max_after if annealed else self.t_max


class LinearDecayTimesteps(TimestepSchedule):
    """Deterministic ``t = t_max - (t_max - t_min) * step / max_steps`` (SDI; paper 1 -> 0.2)."""

    def __init__(self, t_max: float = 1.0, t_min: float = 0.2):
        _check_range(t_min, t_max)
        self.t_min, self.t_max = t_min, t_max

    def bounds(self, step: int) -> tuple[float, float]:
        t = self.t_max - (self.t_max - self.t_min) * min(step / self.max_steps, 1.0)
        return t, t


# ---------------------------------------------------------------------------- guidance weights


def _check_scale(name: str, value: float) -> float:
    value = float(value)
    if math.isnan(value) or value == -math.inf:
        raise ValueError(f"{name} must be a number or inf, got {value}")
    return value


class ConstantSchedule:
    """The same guidance weight every step (``inf`` allowed)."""

    def __init__(self, value: float):
        self.value = _check_scale("guidance scale", value)

    def setup(self, max_steps: int) -> None:
        pass

    def __call__(self, step: int) -> float:
        return self.value


class LinearSchedule:
    """Guidance weight moving linearly from ``start`` to ``end`` between ``start_step`` and ``end_step``.

    When either end is ``inf``, the interpolation runs in ``1/s`` (from 0 to ``1/end``), the only
    way a weight can move continuously to or from infinity.
    """

    def __init__(self, start: float, end: float, start_step: int = 0, end_step: int | None = None):
        self.start, self.end = _check_scale("start", start), _check_scale("end", end)
        self.start_step, self.end_step = start_step, end_step

    def setup(self, max_steps: int) -> None:
        if self.end_step is None:
            self.end_step = max_steps

    def __call__(self, step: int) -> float:
        end_step = self.end_step if self.end_step is not None else step
        span = max(end_step - self.start_step, 1)
        f = min(max((step - self.start_step) / span, 0.0), 1.0)
        if math.isinf(self.start) or math.isinf(self.end):
            inv = (1 - f) / self.start + f / self.end
            return math.inf if inv == 0 else 1 / inv
        return (1 - f) * self.start + f * self.end

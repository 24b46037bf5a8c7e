"""Paired comparisons of two priors over the same prompts and seeds, with bootstrap confidence intervals.

Two priors run on the same (prompt, seed) pairs give paired results; the difference of their means over the
pairs is what a table should show, and whether it is real is what its confidence interval says. For prior A
against prior B on a metric:

    d_i       = A_i - B_i over the pairs i present and finite in both (n of them)
    mean      = mean_i d_i
    [low, high] = the percentile bootstrap interval of the mean: resample the n pairs with replacement
                  ``n_boot`` times (numpy's PCG64 seeded with ``seed``), take the (1 - c)/2 and (1 + c)/2
                  quantiles of the resampled means (c = ``confidence``, 0.95 by default)
    win_rate  = share of pairs where A is better than B (ties count one half), "better" by the metric's
                direction: higher (``+1``), lower (``-1``), or closer to zero (``"abs"``: |A_i| and |B_i|
                are compared, and d_i = |A_i| - |B_i|)

A difference *excludes zero* when its interval lies entirely on one side of zero: at this confidence, the
data do not fit "no difference". With fewer than 2 pairs there is no interval (NaN) and nothing is excluded.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_BOOTSTRAP = 10_000
DEFAULT_CONFIDENCE = 0.95
DIRECTIONS = (1, -1, "abs")


@dataclass(frozen=True)
class PairedDifference:
    n: int
    mean: float
    low: float
    high: float
    win_rate: float

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0.0 or self.high < 0.0)

    def as_dict(self) -> dict:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def paired_difference(
    a: Mapping[Hashable, float],
    b: Mapping[Hashable, float],
    direction: int | str = 1,
    n_boot: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> PairedDifference:
    """A minus B over the keys (e.g. (prompt, seed)) both hold with a finite value; see the module docstring."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS} (higher, lower, closer to zero)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    keys = [k for k in a if k in b and _finite(a[k]) and _finite(b[k])]
    if not keys:
        return PairedDifference(0, math.nan, math.nan, math.nan, math.nan)
    va = np.array([a[k] for k in keys], dtype=np.float64)
    vb = np.array([b[k] for k in keys], dtype=np.float64)
    if direction == "abs":
        va, vb = np.abs(va), np.abs(vb)
    d = va - vb
    sign = -1.0 if direction in (-1, "abs") else 1.0
    better = np.sign(sign * d)
    win_rate = float(np.mean((better > 0) + 0.5 * (better == 0)))
    if len(d) < 2:
        return PairedDifference(1, float(d[0]), math.nan, math.nan, win_rate)
    rng = np.random.Generator(np.random.PCG64(seed))
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(len(d), float(d.mean()), float(low), float(high), win_rate)


def format_difference(diff: PairedDifference, fmt: str = "{:+.3f}") -> str:
    """``+0.012 [-0.004, +0.031] 62%`` (a star when the interval excludes zero); ``–`` without pairs."""
    if diff.n == 0:
        return "–"
    interval = "" if diff.n < 2 else f" [{fmt.format(diff.low)}, {fmt.format(diff.high)}]"
    star = "*" if diff.excludes_zero else ""
    return f"{fmt.format(diff.mean)}{star}{interval} {diff.win_rate:.0%}"

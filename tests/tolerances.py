"""Tolerances for float32 comparisons that must hold on any x86-64 processor.

Two float32 evaluations of the same expression can differ when their sums are grouped differently: another
batch layout, another GEMM/convolution blocking, another vector width (SSE, AVX2, AVX-512) or thread count.
Reordering a sum of n terms moves it by at most about n * 2**-24 times the sum of the terms' magnitudes, and
typically by sqrt(n) * 2**-24 of it; the error of an element therefore scales with the size of the terms it
was summed from, not with its own value (a small difference of large terms keeps the large terms' error).
Tolerances here are expressed relative to that term scale.

The suite is checked against this on other instruction sets with the same machine:
``ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 OMP_NUM_THREADS=1 python -m pytest -m "not slow"``
(and ``ATEN_CPU_CAPABILITY=avx2``).
"""

from __future__ import annotations

import torch

FLOAT32_UNIT_ROUNDOFF = 2.0**-24

# Networks: the tiny test U-Net's longest reductions are a GroupNorm over 2048 values, 3x3 convolutions over
# 288 and attention over 256, chained through ~20 layers. With the typical sqrt(n) growth that is about
# sqrt(20 * 2048) * 2**-24 ~ 1.2e-5 of the term scale; measured across instruction sets: 4e-6 to 6e-6.
# 1e-4 leaves a margin of ~8x over the estimate, and is still ~5000x below the smallest real difference the
# prior tests must detect (a LoRA switched on moves the gradient by 0.5 at a term scale of ~1).
NETWORK_RTOL = 1e-4


def sum_atol(n_terms: int, term_scale: float) -> float:
    """Worst-case difference of two orderings of a float32 sum of ``n_terms`` terms each at most ``term_scale``."""
    return 2 * n_terms * FLOAT32_UNIT_ROUNDOFF * term_scale


def term_scale(*terms: torch.Tensor) -> float:
    """The largest magnitude among the tensors an expression was computed from."""
    return max(float(t.detach().abs().max()) for t in terms)


def assert_network_close(actual: torch.Tensor, expected: torch.Tensor, *terms: torch.Tensor) -> None:
    """``actual`` equals ``expected`` up to float32 reordering in a network whose outputs are of the size of
    ``terms`` (the U-Net predictions and noise that ``expected`` was formed from; ``expected`` itself if none)."""
    scale = term_scale(*(terms or (expected,)))
    torch.testing.assert_close(actual, expected, rtol=NETWORK_RTOL, atol=NETWORK_RTOL * scale)

"""SDS (DreamFusion; LODS Eq. 3): g = w(t) (eps_hat_s(z_t; y) - eps)."""

from __future__ import annotations

import math

import torch

from lods.priors.base import Prior


class SDS(Prior):
    def target(self, z_t, t, c, scale):
        return self.cfg(z_t, t, c, scale)  # Eq. 2 (diffusers form); Perp-Neg with view negatives

    def control(self, z_t, t, noise, c, scale):
        # s = inf: the gradient is reported as its limit divided by s, in which the noise vanishes.
        return noise if math.isfinite(scale) else torch.zeros_like(noise)

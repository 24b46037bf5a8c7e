"""SDS (DreamFusion; LODS Eq. 3): g = w(t) (eps_hat_s(z_t; y) - eps)."""

from __future__ import annotations

import math

import torch

from lods.diffusion.model import guided
from lods.priors.base import Prior


class SDS(Prior):
    def target(self, z_t, t, c, scale):
        eps_cond, eps_uncond = self.model.eps_pair(z_t, t, c.cond, c.uncond)
        return guided(eps_cond, eps_uncond, scale)  # Eq. 2 (diffusers form)

    def control(self, z_t, t, noise, c, scale):
        # s = inf: the gradient is reported as its limit divided by s, in which the noise vanishes.
        return noise if math.isfinite(scale) else torch.zeros_like(noise)

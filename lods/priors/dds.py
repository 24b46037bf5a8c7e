"""DDS (Delta Denoising Score; LODS Eq. 4), for editing:

    g = eps_hat_s(z_t; y_target) - eps_hat_s(zsrc_t; y_source)

with the same ``t`` and the same ``eps`` for the current and the source latent, weight 1.
"""

from __future__ import annotations

import torch

from lods.diffusion.model import guided
from lods.priors.base import Prior
from lods.schedules import RandomTimesteps


class DDS(Prior):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("guidance_scale", 7.5)
        kwargs.setdefault("weighting", "uniform")
        kwargs.setdefault("timesteps", RandomTimesteps(0.05, 0.95))  # t ~ U[50, 950)
        super().__init__(*args, **kwargs)

    def _source(self, c):
        if c.source_latents is None or c.source_cond is None:
            raise ValueError("DDS needs a source image and caption: use task=image_editing")
        return c.source_latents, c.source_cond

    def noisy(self, z, t, noise, c, scale, generator):
        source, _ = self._source(c)
        self._source_noisy = self.model.add_noise(source.expand_as(z), noise, t)  # the same eps for both
        return self.model.add_noise(z, noise, t), noise

    def target(self, z_t, t, c, scale):
        _, source_cond = self._source(c)
        B = z_t.shape[0]
        # One U-Net call for the four branches: (current, source) x (cond, uncond).
        latents = torch.cat([z_t, self._source_noisy])
        conds = torch.cat([c.cond.expand(B, -1, -1), source_cond.expand(B, -1, -1)])
        eps_cond, eps_uncond = self.model.eps_pair(latents, torch.cat([t, t]), conds, c.uncond)
        eps_hat = guided(eps_cond, eps_uncond, scale)
        self._source_eps_hat = eps_hat[B:]
        return eps_hat[:B]

    def control(self, z_t, t, noise, c, scale):
        return self._source_eps_hat

"""DDS (Delta Denoising Score; LODS Eq. 4), for editing:

    g = eps_hat_s(z_t; y_target) - eps_hat_s(zsrc_t; y_source)

with the same ``t`` and the same ``eps`` for the current and the source latent, weight 1.
"""

from __future__ import annotations

from lods.diffusion.model import guided
from lods.priors.base import Prior
from lods.schedules import RandomTimesteps


class DDS(Prior):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("guidance_scale", 7.5)
        kwargs.setdefault("weighting", "uniform")
        kwargs.setdefault("timesteps", RandomTimesteps(0.05, 0.95))  # t ~ U[50, 950)
        super().__init__(*args, **kwargs)

    def target(self, z_t, t, c, scale):
        _check_source(c)
        return guided(*self.model.eps_pair(z_t, t, c.cond, c.uncond), scale)

    def control(self, z_t, t, noise, c, scale):
        source_t = self.model.add_noise(c.source_latents.expand_as(z_t), noise, t)  # the same t and eps
        return guided(*self.model.eps_pair(source_t, t, c.source_cond, c.uncond), scale)


def _check_source(c) -> None:
    if c.source_latents is None or c.source_cond is None:
        raise ValueError("DDS needs a source image and caption: use task=image_editing")

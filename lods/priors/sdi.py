"""SDI: score distillation via DDIM inversion (seed 004, Algorithm 3).

    kappa = DDIM inversion of the clean render up to t + tau (ceil(10 (t + tau)) steps, CFG -7.5)
    z_t   = sqrt(abar_t) z + sqrt(1 - abar_t) kappa
    g     = sigma(t) (eps_hat_7.5(z_t; y) - kappa)

``t`` decays linearly with the step (1 -> 0.2 in the paper), ``tau ~ U(0, tau_max)``.
``entropy``: 'paper' adds the thesis' small entropy term N(0, (0.3 sigma(t))^2) to the inverted latent in its
variables ``x_bar = z / sqrt(abar) = z0 + sigma(t) kappa`` (Sec. 5.2), that is ``kappa += 0.3 eps``: noise of a
fixed 0.3 of kappa's own size at every t (the reference code's eta-0.3 DDIM noise is of that size too);
'none' adds nothing. (Adding 0.3 sigma(t) eps to kappa itself would make it 4.4x kappa's size at t = 1 on
SD's schedule: the render's own noise would drown, and in 2D the result stays a speckled canvas.)
"""

from __future__ import annotations

import math

import torch

from lods.priors.base import Prior
from lods.schedules import LinearDecayTimesteps

ENTROPY_MODES = ("paper", "none")


class SDI(Prior):
    def __init__(
        self,
        *args,
        inversion_guidance_scale: float = -7.5,
        tau_max: float = 1 / 30,
        steps_per_unit_time: int = 10,
        entropy: str = "paper",
        entropy_scale: float = 0.3,
        **kwargs,
    ):
        kwargs.setdefault("guidance_scale", 7.5)
        kwargs.setdefault("weighting", "sigma")
        kwargs.setdefault("timesteps", LinearDecayTimesteps(t_max=1.0, t_min=0.2))
        super().__init__(*args, **kwargs)
        if entropy not in ENTROPY_MODES:
            raise ValueError(f"unknown entropy '{entropy}'; choose one of: {', '.join(ENTROPY_MODES)}")
        self.inversion_guidance_scale, self.tau_max = inversion_guidance_scale, tau_max
        self.steps_per_unit_time, self.entropy, self.entropy_scale = steps_per_unit_time, entropy, entropy_scale

    def noisy(self, z, t, noise, c, scale, generator):
        N = self.model.num_train_timesteps
        tau = float(torch.rand((), generator=generator, device=generator.device if generator else "cpu")) * self.tau_max
        t_inv = min(int(t.max()) + int(tau * N), N - 1)
        num_steps = max(1, math.ceil(self.steps_per_unit_time * t_inv / N))
        z_inv = self.model.ddim_invert(z, t_inv, num_steps, c.cond, c.uncond, self.inversion_guidance_scale)
        a_inv = self.model.abar(torch.tensor([t_inv]))
        kappa = (z_inv - a_inv.sqrt() * z) / (1 - a_inv).sqrt()  # the noise that DDIM put into z
        if self.entropy == "paper":
            kappa = kappa + self.entropy_scale * noise  # = N(0, (0.3 sigma(t))^2) on x_bar
        return self.model.add_noise(z, kappa, t), kappa

    def target(self, z_t, t, c, scale):
        return self.cfg(z_t, t, c, scale)

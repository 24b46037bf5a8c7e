"""The shared machinery of every score-distillation prior: gradient = w(t) * (target - control).

A prior turns a rendered latent ``z`` [B, C, h, w] into a gradient on ``z`` without the U-Net
Jacobian. Subclasses say only what differs (see the table in shared/design/ARCHITECTURE.md):

* :meth:`Prior.noisy` -- how ``z_t`` and its noise are made (default: fresh Gaussian noise),
* :meth:`Prior.target` -- the U-Net prediction the render should move towards,
* :meth:`Prior.control` -- what it is compared with (default: the added noise),
* :meth:`Prior.own_loss` -- the loss of the prior's learnable parameters (default: none).

Guidance uses the diffusers convention ``eps_u + s (eps_c - eps_u)``; ``s = inf`` is legal and
means the limit of the gradient divided by ``s``: the pure classifier direction ``eps_c - eps_u``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lods.diffusion.model import DiffusionModel, guided
from lods.diffusion.prompts import Conditioning
from lods.schedules import RandomTimesteps, TimestepSchedule

WEIGHTINGS = ("sds", "sigma", "uniform")


def normalized_guided(eps_cond: Tensor, eps_uncond: Tensor, scale: float) -> Tensor:
    """``guided / s = eps_c + (1 - s)/s eps_u`` (LODS Eq. 7); ``s = inf`` gives ``eps_c - eps_u``."""
    return guided(eps_cond, eps_uncond, scale) / (1.0 if math.isinf(scale) else scale)


def perp_neg_guided(
    eps_cond: Tensor, eps_uncond: Tensor, eps_negatives: Tensor, weights: Tensor, scale: float
) -> Tensor:
    """Perpendicular negative prompting (Armandpour et al. 2023) in the diffusers CFG form.

    ``eps_u + s (d - sum_k w_k perp_d(e_k - eps_u))`` with ``d = eps_c - eps_u`` and ``perp_d`` the
    component orthogonal to ``d`` (per sample): negatives push away from other views without
    cancelling the positive prompt. ``eps_negatives`` [B, K, C, h, w], ``weights`` [B, K]; ``s = inf``
    gives the bracket alone (the limit divided by ``s``).
    """
    d = eps_cond - eps_uncond
    flat = d.flatten(1)
    delta = d.clone()
    for k in range(eps_negatives.shape[1]):
        e = (eps_negatives[:, k] - eps_uncond).flatten(1)
        along = (e * flat).sum(1, keepdim=True) / (flat * flat).sum(1, keepdim=True).clamp_min(1e-12)
        delta = delta - weights[:, k, None, None, None] * (e - along * flat).view_as(d)
    return delta if math.isinf(scale) else eps_uncond + scale * delta


def inverse(scale: float) -> float:
    """``1/s``, which is 0 for ``s = inf``."""
    return 0.0 if math.isinf(scale) else 1.0 / scale


def sds_loss(z: Tensor, grad: Tensor) -> Tensor:
    """A loss whose gradient on ``z`` is ``grad / B``: ``0.5 ||z - (z - g).detach()||^2 / B``."""
    target = (z - grad).detach()
    return 0.5 * ((z - target) ** 2).sum() / z.shape[0]


@dataclass
class PriorOutput:
    grad: Tensor  # [B, C, h, w] gradient on z: w(t) * (target - control)
    loss: Tensor  # scalar loss of the prior's learnable parameters (0 when it learns nothing)
    t: Tensor  # [B] timesteps used
    info: dict[str, float] = field(default_factory=dict)


class Prior(nn.Module):
    """Base class; see the module docstring. Learnable parameters are ordinary module parameters."""

    #: a learnable prior sets this: trained with its own loss at ``lr``
    learns: bool = False
    #: the gradient is the CFG one divided by the guidance scale (LODS Eq. 7/9), so that s = inf is legal
    normalized: bool = False
    #: the own loss comes from the target's U-Net pass (same t and noise; see ``target_and_own_loss``)
    merged_update: bool = False

    def __init__(
        self,
        guidance_scale: float = 100.0,
        weighting: str = "sds",
        timesteps: TimestepSchedule | None = None,
        lr: float = 0.0,
    ):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting '{weighting}'; choose one of: {', '.join(WEIGHTINGS)}")
        if math.isnan(float(guidance_scale)):
            raise ValueError("guidance_scale is NaN; give a number or inf")
        self.guidance_scale = float(guidance_scale)
        self.weighting = weighting
        self.timesteps = timesteps if timesteps is not None else RandomTimesteps()
        self.lr = lr
        self._model: list[DiffusionModel] = []  # a list keeps the frozen model out of state_dict()

    # ------------------------------------------------------------------ set-up
    @property
    def model(self) -> DiffusionModel:
        if not self._model:
            raise RuntimeError(f"{type(self).__name__}.setup(model, conditioning) has not been called")
        return self._model[0]

    def setup(self, model: DiffusionModel, conditioning: Conditioning, max_steps: int = 1) -> None:
        """Bind the diffusion model and create learnable parameters (their initial values may
        depend on the conditioning, e.g. LODS's alpha starts at the null embedding)."""
        self._model = [model]
        self.timesteps.setup(max_steps)

    # --------------------------------------------------------------- the parts
    def weight(self, t: Tensor) -> Tensor:
        """w(t), [B, 1, 1, 1]: DreamFusion's 1 - abar_t, SDI's sigma(t), or 1."""
        if self.weighting == "sds":
            return 1 - self.model.abar(t)
        if self.weighting == "sigma":
            return self.model.sigma(t)
        return torch.ones_like(self.model.abar(t))

    def noisy(
        self, z: Tensor, t: Tensor, noise: Tensor, c: Conditioning, scale: float, generator
    ) -> tuple[Tensor, Tensor]:
        """(z_t, the noise in it); default: forward diffusion with fresh Gaussian noise."""
        return self.model.add_noise(z, noise, t), noise

    def target(self, z_t: Tensor, t: Tensor, c: Conditioning, scale: float) -> Tensor:
        raise NotImplementedError

    def control(self, z_t: Tensor, t: Tensor, noise: Tensor, c: Conditioning, scale: float) -> Tensor:
        """Default: the added noise (``0`` in the ``s = inf`` limit of a CFG target)."""
        return noise

    def own_loss(self, z: Tensor, c: Conditioning, t: Tensor, noise: Tensor, generator=None) -> Tensor:
        """Loss of the learnable parameters on the detached render (fresh ``t'``, fresh noise)."""
        return z.new_zeros(())

    def target_and_own_loss(self, z_t: Tensor, t: Tensor, noise: Tensor, c: Conditioning, scale: float):
        """(target, own loss at ``t' = t``, ``eps' = noise``) from one U-Net pass: ``merged_update``."""
        raise NotImplementedError(f"{type(self).__name__} has no merged update")

    def cfg(self, z_t: Tensor, t: Tensor, c: Conditioning, scale: float) -> Tensor:
        """The pretrained model's guided prediction for ``c.cond``: CFG, or Perp-Neg when the
        conditioning carries negative view prompts (one more U-Net call per negative)."""
        eps_cond, eps_uncond = self.model.eps_pair(z_t, t, c.cond, c.uncond)
        if c.negatives is None or scale == 1.0:
            return guided(eps_cond, eps_uncond, scale)
        eps_negatives = torch.stack([self.model.eps(z_t, t, c.negatives[:, k]) for k in range(c.negatives.shape[1])], 1)
        return perp_neg_guided(eps_cond, eps_uncond, eps_negatives, c.negative_weights, scale)

    def loss_scale(self, scale: float) -> float:
        """Factor that brings a normalized gradient back to the CFG scale of SDS (``s``; 1 for ``s = inf``).

        Adam does not care about the scale of one loss, but task losses and regularisers (NeRF sparsity,
        image-to-3D reference losses) are weighted against SDS's; this keeps those weights meaningful."""
        return scale if self.normalized and math.isfinite(scale) else 1.0

    # ---------------------------------------------------------------- one step
    def sample_timesteps(self, step: int, batch_size: int, generator=None) -> Tensor:
        return self.timesteps(step, batch_size, self.model.num_train_timesteps, generator, self.model.device)

    def forward(
        self,
        z: Tensor,
        c: Conditioning,
        step: int = 0,
        guidance_scale: float | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        t_own: Tensor | None = None,
        noise_own: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PriorOutput:
        """Gradient on ``z`` and the prior's own loss. ``t``/``noise`` (and ``t_own``/``noise_own`` for
        the learnable loss) may be injected; otherwise they are drawn from ``generator``."""
        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        z = z.detach()
        B = z.shape[0]
        if t is None:
            t = self.sample_timesteps(step, B, generator)
        if noise is None:
            noise = randn_like(z, generator)
        with torch.no_grad():
            z_t, noise = self.noisy(z, t, noise, c, scale, generator)
            if not self.merged_update:
                target = self.target(z_t, t, c, scale)
            control = self.control(z_t, t, noise, c, scale)
        loss = z.new_zeros(())
        if self.merged_update:  # one U-Net forward serves the gradient and the own loss (LODS Sec. 3.6)
            target, loss = self.target_and_own_loss(z_t, t, noise, c, scale)
        grad = self.weight(t) * (target.detach() - control)
        if self.learns and not self.merged_update:
            if t_own is None:  # t' ~ U[0, N)
                t_own = torch.randint(
                    0,
                    self.model.num_train_timesteps,
                    (B,),
                    generator=generator,
                    device=generator.device if generator else "cpu",
                ).to(z.device)
            if noise_own is None:
                noise_own = randn_like(z, generator)
            loss = self.own_loss(z, c, t_own, noise_own, generator)
        info = {"t": float(t.float().mean()), "guidance_scale": scale, "grad_norm": float(grad.norm() / B)}
        return PriorOutput(grad=grad, loss=loss, t=t, info=info)


def randn_like(z: Tensor, generator: torch.Generator | None) -> Tensor:
    """Gaussian noise shaped like ``z``, drawn from ``generator`` (on its own device) for reproducibility."""
    device = generator.device if generator is not None else z.device
    return torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype).to(z.device)


def mse(a: Tensor, b: Tensor) -> Tensor:
    return torch.nn.functional.mse_loss(a, b)

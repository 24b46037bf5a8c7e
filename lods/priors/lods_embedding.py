"""LODS with a learnable unconditional embedding (LODS Sec. 3.4, Algorithm 2).

    g = w(t) [ eps(z_t; y) + (1 - s)/s eps(z_t; alpha) - eps/s ]       (Eq. 7)
    alpha <- argmin ||eps(z_t'; alpha) - eps'||^2                       (Eq. 8, independent of s)

``alpha`` starts at the null (negative-prompt) embedding, or at the source caption when editing
(Sec. 3.5). With ``alpha`` frozen at the null embedding, Eq. 7 is SDS divided by ``s``.

``merged_update=True`` is the paper's faster variant (Sec. 3.6): Eq. 8 reuses Eq. 7's noisy latent
(t' = t, eps' = eps), so eps(z_t; alpha) is computed once, with gradient, and a step costs one U-Net
backward more than SDS instead of a forward and a backward. The paper reports a small quality drop.
"""

from __future__ import annotations

import torch
from torch import nn

from lods.priors.base import Prior, inverse, mse, normalized_guided


class LODSEmbedding(Prior):
    learns = True
    normalized = True

    def __init__(self, *args, merged_update: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.merged_update = merged_update

    def setup(self, model, conditioning, max_steps=1):
        super().setup(model, conditioning, max_steps)
        self.alpha = nn.Parameter(conditioning.learnable_init[:1].detach().float().clone())  # [1, L, D]

    def target(self, z_t, t, c, scale):
        eps_cond, eps_alpha = self.model.eps_pair(z_t, t, c.cond, self.alpha.to(c.cond.dtype))  # one U-Net call
        return normalized_guided(eps_cond, eps_alpha, scale)  # Eq. 7: eps_c + (1-s)/s eps(alpha)

    def control(self, z_t, t, noise, c, scale):
        return noise * inverse(scale)  # Eq. 7: eps / s

    def own_loss(self, z, c, t, noise, generator=None):
        z_t = self.model.add_noise(z, noise, t)
        return mse(self.model.eps(z_t, t, self.alpha), noise)  # Eq. 8

    def target_and_own_loss(self, z_t, t, noise, c, scale):
        with torch.no_grad():
            eps_cond = self.model.eps(z_t, t, c.cond)
        eps_alpha = self.model.eps(z_t, t, self.alpha.to(c.cond.dtype))  # grad to alpha only
        return normalized_guided(eps_cond, eps_alpha.detach(), scale), mse(eps_alpha, noise)  # Eq. 7, Eq. 8

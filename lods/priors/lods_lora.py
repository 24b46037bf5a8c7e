"""LODS with learnable LoRA parameters psi (LODS Sec. 3.5, Algorithm 3).

    g = w(t) [ eps(z_t; y) + (1 - s)/s eps_psi(z_t; null) - eps/s ]    (Eq. 9)
    psi <- argmin ||eps_psi(z_t'; null) - eps'||^2                      (Eq. 10)

One U-Net: LoRA off for the conditional branch, on (at ``lora_scale``; reference code 0.5) for the
unconditional one. ``null`` is the negative prompt, or the source caption when editing.
``merged_update=True``: Eq. 10 reuses Eq. 9's noisy latent and U-Net pass (Sec. 3.6; see lods_embedding.py).
"""

from __future__ import annotations

import torch
from torch import nn

from lods.priors.base import Prior, inverse, mse, normalized_guided

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


class LODSLoRA(Prior):
    learns = True
    normalized = True
    adapter_name = "lods"

    def __init__(self, *args, lora_rank: int = 4, lora_scale: float = 0.5, merged_update: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.lora_rank, self.lora_scale, self.merged_update = lora_rank, lora_scale, merged_update

    def setup(self, model, conditioning, max_steps=1):
        super().setup(model, conditioning, max_steps)
        # The parameters live inside the U-Net; the ParameterList shares them so that the optimizer
        # and checkpoints see them as this prior's.
        self.lora = nn.ParameterList(model.add_lora(self.adapter_name, self.lora_rank, ATTENTION_PROJECTIONS))
        self.null = conditioning.learnable_init[:1]

    def eps_psi(self, z_t, t):
        with self.model.adapter(self.adapter_name, self.lora_scale) as lora:
            return self.model.eps(z_t, t, self.null, cross_attention_kwargs=lora)

    def target(self, z_t, t, c, scale):
        eps_cond = self.model.eps(z_t, t, c.cond)  # LoRA off
        return normalized_guided(eps_cond, self.eps_psi(z_t, t), scale)  # Eq. 9

    def control(self, z_t, t, noise, c, scale):
        return noise * inverse(scale)

    def own_loss(self, z, c, t, noise, generator=None):
        return mse(self.eps_psi(self.model.add_noise(z, noise, t), t), noise)  # Eq. 10

    def target_and_own_loss(self, z_t, t, noise, c, scale):
        with torch.no_grad():
            eps_cond = self.model.eps(z_t, t, c.cond)  # LoRA off
        eps_psi = self.eps_psi(z_t, t)  # grad to the LoRA only
        return normalized_guided(eps_cond, eps_psi.detach(), scale), mse(eps_psi, noise)  # Eq. 9, Eq. 10

"""VSD (ProlificDreamer; LODS Eq. 5): g = w(t) (eps_hat_s(z_t; y) - eps_psi(z_t; y, camera)).

``psi`` is a LoRA on the U-Net plus a camera embedding (an MLP of the flattened camera-to-world
matrix, added to the time embedding), trained with the ordinary diffusion loss on the current
renders, the camera dropped with probability ``camera_dropout``. The embedding's last layer starts
at zero, so at step 0 ``eps_psi = eps(z_t; y)`` and VSD equals LODS with ``s = inf`` (Sec. 3.6).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from lods.priors.base import Prior, mse
from lods.priors.lods_lora import ATTENTION_PROJECTIONS
from lods.schedules import AnnealedTimesteps


class CameraEmbedding(nn.Module):
    """16 -> time-embedding width MLP; float32 whatever the U-Net's dtype."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(16, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, camera: Tensor) -> Tensor:
        return self.mlp(camera.float())


class VSD(Prior):
    learns = True
    adapter_name = "vsd"

    def __init__(self, *args, lora_rank: int = 4, camera_dropout: float = 0.1, use_camera: bool = True, **kwargs):
        kwargs.setdefault("guidance_scale", 7.5)
        kwargs.setdefault("timesteps", AnnealedTimesteps(0.02, 0.98, t_max_after=0.5, anneal_fraction=0.2))
        super().__init__(*args, **kwargs)
        self.lora_rank, self.camera_dropout, self.use_camera = lora_rank, camera_dropout, use_camera

    def setup(self, model, conditioning, max_steps=1):
        super().setup(model, conditioning, max_steps)
        self.lora = nn.ParameterList(model.add_lora(self.adapter_name, self.lora_rank, ATTENTION_PROJECTIONS))
        width = model.unet.time_embedding.linear_2.out_features
        self.camera_embedding = CameraEmbedding(width).to(model.device) if self.use_camera else None

    @contextlib.contextmanager
    def _camera_conditioning(self):
        """Temporarily plug the camera embedding into the U-Net's class-embedding slot."""
        unet = self.model.unet
        previous = unet.class_embedding
        unet.class_embedding = self.camera_embedding
        try:
            yield
        finally:
            unet.class_embedding = previous

    def eps_psi(self, z_t: Tensor, t: Tensor, cond: Tensor, camera: Tensor | None) -> Tensor:
        with self.model.adapter(self.adapter_name, 1.0) as lora:
            if self.camera_embedding is None:
                return self.model.eps(z_t, t, cond, cross_attention_kwargs=lora)
            if camera is None:  # 2D: no camera, the "dropped" condition
                camera = z_t.new_zeros(z_t.shape[0], 16)
            with self._camera_conditioning():
                return self.model.eps(z_t, t, cond, cross_attention_kwargs=lora, class_labels=camera)

    def target(self, z_t, t, c, scale):
        return self.cfg(z_t, t, c, scale)  # pretrained, LoRA off

    def control(self, z_t, t, noise, c, scale):
        return self.eps_psi(z_t, t, c.cond, c.cameras)

    def own_loss(self, z, c, t, noise, generator=None):
        camera = c.cameras
        if camera is not None and self.camera_dropout > 0:
            draw = torch.rand(camera.shape[0], 1, generator=generator, device=generator.device if generator else "cpu")
            camera = camera * (draw >= self.camera_dropout).to(camera)
        z_t = self.model.add_noise(z, noise, t)
        return mse(self.eps_psi(z_t, t, c.cond, camera), noise)  # diffusion loss of psi on the renders

"""A plain 2D image (the LODS paper's 2D experiments): several particles, in latent or RGB space."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lods.backbones.base import RenderOutput
from lods.diffusion.model import DiffusionModel

REPRESENTATIONS = ("latent", "rgb")
INITS = ("random", "zeros", "source")


class ImageBackbone(nn.Module):
    """``num_particles`` images optimised directly.

    ``representation='latent'`` optimises the VAE latent (the paper's 2D setting; decoded at the
    end); ``'rgb'`` optimises pixels through a sigmoid and encodes them with gradient every step.
    ``init='source'`` starts from the task's source image (editing).
    """

    def __init__(
        self,
        num_particles: int = 1,
        resolution: int | None = None,
        representation: str = "latent",
        init: str = "random",
        init_std: float = 1.0,
        lr: float = 3e-2,
    ):
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(f"unknown representation '{representation}'; choose one of: {', '.join(REPRESENTATIONS)}")
        if init not in INITS:
            raise ValueError(f"unknown init '{init}'; choose one of: {', '.join(INITS)}")
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        self.num_particles, self.resolution = num_particles, resolution
        self.representation, self.init, self.init_std, self.lr = representation, init, init_std, lr

    def setup(self, model: DiffusionModel, source_rgb: Tensor | None = None, generator=None) -> None:
        """Create the parameters at the model's resolution (or ``resolution``)."""
        self.resolution = self.resolution or model.image_size
        if self.resolution % model.vae_scale_factor:
            raise ValueError(
                f"resolution {self.resolution} is not a multiple of the VAE factor {model.vae_scale_factor}"
            )
        P, H = self.num_particles, self.resolution
        if self.init == "source":
            if source_rgb is None:
                raise ValueError("init='source' needs a source image: use task=image_editing")
            source_rgb = source_rgb.to(model.device).expand(P, -1, -1, -1)
            if self.representation == "latent":
                with torch.no_grad():
                    value = model.encode(source_rgb)
            else:
                value = torch.logit(source_rgb.clamp(1e-3, 1 - 1e-3))
        else:
            shape = (P, model.latent_channels, H // model.vae_scale_factor, H // model.vae_scale_factor)
            if self.representation == "rgb":
                shape = (P, 3, H, H)
            value = torch.zeros(shape, device=model.device)
            if self.init == "random":
                noise = torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")
                value = noise.to(model.device) * self.init_std
        self.image = nn.Parameter(value.detach().clone().float())

    dims = 2

    def param_groups(self) -> list[dict]:
        return [{"params": [self.image], "lr": self.lr, "name": "backbone"}]

    def render(self, cameras=None, step: int | None = None) -> RenderOutput:
        if self.representation == "latent":
            return RenderOutput(rgb=None, latent=self.image)
        return RenderOutput(rgb=torch.sigmoid(self.image))

    @torch.no_grad()
    def images(self, model: DiffusionModel, cameras=None) -> Tensor:
        """The current images in [0, 1], [P, 3, H, W]."""
        out = self.render()
        return model.decode(out.latent) if out.rgb is None else out.rgb

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        return {}

    def after_backward(self, out: RenderOutput, step: int, optimizer) -> dict[str, float]:
        return {}

    def prepare_state_dict(self, state_dict: dict, prefix: str = "") -> None:
        pass

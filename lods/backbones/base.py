"""What every backbone returns from ``render``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class RenderOutput:
    rgb: Tensor | None  # [B, 3, H, W] in [0, 1]; None for a backbone that lives in latent space
    latent: Tensor | None = None  # [B, C, h, w] when the backbone optimises the latent directly
    alpha: Tensor | None = None  # [B, 1, H, W]
    depth: Tensor | None = None  # [B, 1, H, W]
    normal: Tensor | None = None  # [B, 3, H, W]

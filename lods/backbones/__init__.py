"""Differentiable representations that render images: 2D image/latent (more in later issues)."""

from lods.backbones.base import RenderOutput
from lods.backbones.image import ImageBackbone

__all__ = ["ImageBackbone", "RenderOutput"]

"""Diffusion models: loading SD-format pipelines, noise schedule, VAE, text prompts, DDIM."""

from lods.diffusion.architectures import ARCHITECTURES, build_random_model
from lods.diffusion.loading import ModelNotFoundError, load_model, resolve_device, resolve_dtype
from lods.diffusion.model import DiffusionModel, guided
from lods.diffusion.tiny import build_tiny_model

__all__ = [
    "ARCHITECTURES",
    "DiffusionModel",
    "ModelNotFoundError",
    "build_random_model",
    "build_tiny_model",
    "guided",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]

"""lods: score-distillation diffusion priors (SDS, VSD, LODS, DDS, SDI) on 2D images, NeRF and 3D Gaussians."""

__version__ = "0.1.0"

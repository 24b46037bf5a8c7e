"""Image files: grids of tensors to PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor


def to_uint8(image: Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [H, W, 3] uint8."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def make_grid(images: Tensor, columns: int | None = None) -> np.ndarray:
    """[N, 3, H, W] -> one [rows*H, cols*W, 3] uint8 array."""
    n, _, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = to_uint8(image)
    return grid


def save_grid(images: Tensor, path: str | Path, columns: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_grid(images, columns)).save(path)
    return path

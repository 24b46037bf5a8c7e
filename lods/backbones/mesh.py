"""Meshes from implicit fields: marching cubes on a density grid, vertex colours, .obj and .glb files.

``extract_mesh`` samples ``density_fn`` on a regular grid over a box (in chunks, so memory stays bounded
whatever the resolution), runs scikit-image's marching cubes at ``threshold`` and colours each vertex with
``color_fn``. ``write_mesh`` writes a Wavefront .obj with per-vertex colours (``v x y z r g b``) and a
binary glTF .glb (through trimesh, colours as the ``COLOR_0`` attribute).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

DensityFn = Callable[[Tensor], Tensor]  # points [N, 3] -> densities [N] (or [N, 1])
ColorFn = Callable[[Tensor, Tensor], Tensor]  # points [N, 3], unit normals [N, 3] -> colours [N, 3] in [0, 1]


def _box(bound: float | Sequence[float] | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """``bound`` as (lower [3], upper [3]): a half-size r (the cube [-r, r]^3), or [lower, upper]."""
    if isinstance(bound, (int, float)):
        if not bound > 0:
            raise ValueError(f"bound must be > 0, got {bound}")
        return np.full(3, -float(bound)), np.full(3, float(bound))
    lower, upper = (np.asarray(v, dtype=np.float64).reshape(3) for v in bound)
    if not (upper > lower).all():
        raise ValueError(f"bound must be [lower, upper] with lower < upper in every axis, got {bound}")
    return lower, upper


def extract_mesh(
    density_fn: DensityFn,
    color_fn: ColorFn | None,
    bound: float | Sequence[float] | Sequence[Sequence[float]],
    resolution: int = 128,
    threshold: float = 10.0,
    chunk: int = 65536,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Marching cubes on ``density_fn`` over ``bound``: ``(vertices [V, 3], faces [F, 3], colors [V, 3])``.

    ``bound`` is a half-size r (the cube [-r, r]^3) or ``[lower, upper]``; the grid has ``resolution``
    points per axis, queried ``chunk`` at a time. Faces are wound so that their normals point out of the
    dense region (the side where density < ``threshold``). ``color_fn`` gets the vertices and their unit
    outward normals; without it every vertex is mid-grey. Returns None, with a warning, when the grid never
    crosses ``threshold`` (nothing to mesh, or everything dense).
    """
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    lower, upper = _box(bound)
    axes = [torch.linspace(float(lo), float(hi), resolution, dtype=torch.float32) for lo, hi in zip(lower, upper)]
    densities = torch.empty(resolution**3, dtype=torch.float32)
    # One x-slab of the grid after another: at most ``chunk`` points are queried at a time.
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), dim=-1).reshape(-1, 2)
    slab = resolution * resolution
    with torch.no_grad():
        for ix in range(resolution):
            points = torch.cat([axes[0][ix].expand(slab, 1), yz], dim=-1)
            for start in range(0, slab, chunk):
                part = points[start : start + chunk].to(device)
                values = density_fn(part).reshape(-1).float().cpu()
                densities[ix * slab + start : ix * slab + start + part.shape[0]] = values
    grid = densities.reshape(resolution, resolution, resolution).numpy()
    if not np.isfinite(grid).all():
        warnings.warn("the density grid holds NaN or inf values; they are treated as empty", stacklevel=2)
        grid = np.nan_to_num(grid, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(grid.min()), float(grid.max())
    if not low < threshold < high:
        warnings.warn(
            f"no surface at density threshold {threshold}: the field's density on the {resolution}^3 grid is in "
            f"[{low:.4g}, {high:.4g}]; no mesh was extracted (lower the threshold, or train longer)",
            stacklevel=2,
        )
        return None
    from skimage.measure import marching_cubes

    spacing = tuple(float(v) for v in (upper - lower) / (resolution - 1))
    # gradient_direction="descent": normals point towards decreasing density, i.e. out of the object.
    vertices, faces, normals, _ = marching_cubes(grid, level=threshold, spacing=spacing, gradient_direction="descent")
    vertices = vertices + lower[None]
    if len(faces) == 0:
        warnings.warn(f"marching cubes found no faces at density threshold {threshold}", stacklevel=2)
        return None
    normals = normals / np.clip(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12, None)
    if color_fn is None:
        colors = np.full((len(vertices), 3), 0.5, dtype=np.float32)
    else:
        v = torch.from_numpy(vertices.astype(np.float32))
        n = torch.from_numpy(normals.astype(np.float32))
        with torch.no_grad():
            colors = torch.cat(
                [
                    color_fn(v[i : i + chunk].to(device), n[i : i + chunk].to(device)).float().cpu()
                    for i in range(0, len(v), chunk)
                ]
            )
        colors = colors.clamp(0, 1).numpy()
    return vertices.astype(np.float32), faces.astype(np.int64), colors.astype(np.float32)


def write_mesh(
    vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, directory: str | Path, name: str = "mesh"
) -> list[Path]:
    """Write ``<name>.obj`` (vertex colours as ``v x y z r g b``) and ``<name>.glb``; returns both paths."""
    import trimesh

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if colors is None:
        colors = np.full((len(vertices), 3), 0.5)
    colors = np.clip(np.asarray(colors, dtype=np.float64)[:, :3], 0, 1)

    obj_path = directory / f"{name}.obj"
    with obj_path.open("w") as f:
        f.write(f"# {len(vertices)} vertices, {len(faces)} faces; vertex colours in [0, 1] after the position\n")
        np.savetxt(f, np.concatenate([vertices, colors], axis=1), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
        np.savetxt(f, faces + 1, fmt="f %d %d %d")  # .obj indices are 1-based

    rgba = np.concatenate([colors, np.ones((len(colors), 1))], axis=1)
    mesh = trimesh.Trimesh(vertices, faces, vertex_colors=np.round(rgba * 255).astype(np.uint8), process=False)
    glb_path = directory / f"{name}.glb"
    mesh.export(glb_path)
    log.info("wrote %s and %s (%d vertices, %d faces)", obj_path, glb_path, len(vertices), len(faces))
    return [obj_path, glb_path]

"""3D Gaussian rasterization: gsplat's on CUDA, a differentiable pure-PyTorch one everywhere else.

``rasterize_cpu`` mirrors ``gsplat.rasterization`` (gsplat 1.4.0, the version nerfstudio pins) for the
arguments this project uses: same signature, same outputs ``(render_colors [C, H, W, D],
render_alphas [C, H, W, 1], meta)``, same conventions (read from gsplat 1.4.0's CUDA sources, named below):

* projection (``fully_fused_projection_fwd.cu``): quats are wxyz and normalised; covariance
  ``R S S^T R^T``; EWA Jacobian of the pinhole projection with ``x/z``, ``y/z`` clamped to the image
  extent plus 30% of the half-FOV tangent (1.3 tan(fov/2) for a centred principal point); ``eps2d``
  added to the diagonal of the 2D covariance; a Gaussian is culled when ``z < near_plane``,
  ``z > far_plane``, the blurred determinant is <= 0, ``radius <= radius_clip`` or its 3-sigma square
  (``radius = ceil(3 sqrt(lambda_max))``) misses the image;
* colours (``rendering.py``, ``spherical_harmonics.cuh``): with ``sh_degree`` the SH coefficients are
  evaluated in the direction from the camera centre to the Gaussian, then ``max(color + 0.5, 0)``;
* compositing (``rasterize_to_pixels_fwd.cu``, ``isect_tiles.cu``): 16x16 tiles, a Gaussian is
  composited into every pixel of every tile its 3-sigma square touches; pixel centres at
  ``(x + 0.5, y + 0.5)``; front to back in camera-space z; ``alpha = min(0.999, o exp(-q/2))`` with
  ``q`` the Mahalanobis distance under the conic; contributions with ``alpha < 1/255`` are skipped;
  a pixel stops before the Gaussian that would bring its transmittance to ``T <= 1e-4``;
  ``render_alpha = 1 - T``; a background adds ``T * bg``;
* depth (``rendering.py``): "D" is the accumulated z-depth ``sum_i w_i z_i``, "ED" is it divided by
  ``max(alpha, 1e-10)``; "RGB+D"/"RGB+ED" append it as the last channel (with a zero background).

Algorithm of the CPU path (all vectorised, gradients by plain autograd):

1. Project every Gaussian into every camera: ``means2d [C, N, 2]``, ``conics [C, N, 3]``,
   ``depths [C, N]``, integer ``radii [C, N]`` (0 = culled).
2. Intersect with 16x16 tiles exactly like gsplat: one entry per (visible Gaussian, touched tile),
   sorted by (camera, tile, depth).
3. Composite tile by tile. Tiles are sorted by their number of Gaussians ``K`` and processed in
   chunks padded to the chunk's largest ``K``; each chunk evaluates ``alpha [tiles, 256, K]``, the
   transmittance by ``torch.cumprod`` of ``1 - alpha`` along the depth-sorted axis, the weights
   ``alpha T`` (zeroed after termination) and ``colors = weights @ features`` with one ``bmm``.

Cost: time and memory are proportional to ``256 * sum_tiles K_tile`` (the tile-Gaussian
intersections times the 256 pixels of a tile, plus at most 1/3 padding inside a chunk), not to
``pixels * N``: a small Gaussian touches one to four tiles. Autograd keeps ~36 bytes per
pixel-Gaussian pair for the backward pass (about nine float32 tensors of that size); a chunk holds at
most ``_CHUNK_ELEMENTS`` pairs, which bounds the transient memory of one step but not what autograd
saves. Example, one CPU thread (shared machine): 2000 Gaussians at 64x64, 4.9k intersections, 1.3M
pairs: ~35 ms forward, ~25 ms backward, 47 MB saved for backward.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

TILE_SIZE = 16  # gsplat's default (and only tested) tile size
ALPHA_THRESHOLD = 1.0 / 255.0  # skip contributions below this alpha
MAX_ALPHA = 0.999  # alpha = min(MAX_ALPHA, opacity * exp(-q / 2))
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before the Gaussian that would bring T to <= this
_CHUNK_ELEMENTS = 1 << 22  # pixel-Gaussian pairs per compositing chunk (bounds transient memory)

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
MAX_SH_DEGREE = 3

# Real spherical-harmonics constants, in gsplat's (and the 3DGS paper's) basis order and signs.
_SH_C0 = 0.2820947917738781
_SH_C1 = 0.48860251190292
_SH_C2 = (1.092548430592079, 0.9461746957575601, 0.3153915652525201, 0.5462742152960395)
_SH_C3 = (0.5900435899266435, 1.445305721320277, 2.285228997322329, 0.4570457994644658)
_SH_C3_Z = (1.865881662950577, 1.119528997770346)


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,
    render_mode: RenderMode = "RGB+ED",
    eps2d: float = 0.3,
    packed: bool = False,
    radius_clip: float = 0.0,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
) -> tuple[Tensor, Tensor, dict]:
    """``gsplat.rasterization`` for CUDA tensors when gsplat imports, else ``rasterize_cpu``."""
    kwargs = dict(
        near_plane=near_plane,
        far_plane=far_plane,
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        render_mode=render_mode,
        eps2d=eps2d,
        packed=packed,
        radius_clip=radius_clip,
        rasterize_mode=rasterize_mode,
    )
    args = (means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    if means.is_cuda and torch.cuda.is_available():
        gsplat_rasterization = _gsplat_rasterization()
        if gsplat_rasterization is not None:
            return gsplat_rasterization(*args, **kwargs)
    return rasterize_cpu(*args, **kwargs)


def _gsplat_rasterization():
    try:
        from gsplat import rasterization
    except ImportError:
        return None
    return rasterization


def rasterize_cpu(
    means: Tensor,  # [N, 3] world-space centres
    quats: Tensor,  # [N, 4] wxyz, need not be normalised
    scales: Tensor,  # [N, 3] activated (positive) scales
    opacities: Tensor,  # [N] in [0, 1]
    colors: Tensor,  # [(C,) N, D] features, or [(C,) N, K, 3] SH coefficients when sh_degree is set
    viewmats: Tensor,  # [C, 4, 4] world-to-camera, OpenCV (x right, y down, looking along +z)
    Ks: Tensor,  # [C, 3, 3] pixel intrinsics
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,  # [C, D]
    render_mode: RenderMode = "RGB+ED",
    eps2d: float = 0.3,
    packed: bool = False,
    radius_clip: float = 0.0,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
) -> tuple[Tensor, Tensor, dict]:
    """Differentiable pure-PyTorch ``gsplat.rasterization`` (see the module docstring).

    Returns ``render_colors [C, H, W, X]`` (X = D for "RGB", 1 for "D"/"ED", D + 1 for "RGB+D"/"RGB+ED"),
    ``render_alphas [C, H, W, 1]`` and gsplat's ``meta`` dict. ``meta["means2d"]`` is the tensor the
    rasterizer reads, so ``meta["means2d"].retain_grad()`` gives gsplat's densification gradient. With
    ``packed=True`` the per-Gaussian entries of ``meta`` are ``[nnz, ...]`` with ``camera_ids`` and
    ``gaussian_ids``, as in gsplat. Works on any device; it is the fallback where gsplat is unavailable.
    """
    N, C = means.shape[0], viewmats.shape[0]
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, render_mode, rasterize_mode)

    radii, means2d, depths, conics, compensations = _project(
        means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, radius_clip
    )
    opacities = opacities.expand(C, N)
    if rasterize_mode == "antialiased":
        opacities = opacities * compensations
    colors = _colors_per_camera(means, colors, viewmats, sh_degree)  # [C, N, D]

    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)

    if packed:  # keep only the visible (camera, Gaussian) pairs, as gsplat's packed mode does
        camera_ids, gaussian_ids = torch.nonzero(radii > 0, as_tuple=True)
        radii, means2d, depths, conics = (x[camera_ids, gaussian_ids] for x in (radii, means2d, depths, conics))
        opacities, colors = opacities[camera_ids, gaussian_ids], colors[camera_ids, gaussian_ids]
        flat_camera_ids = camera_ids
    else:
        camera_ids = gaussian_ids = None
        flat_camera_ids = torch.arange(C, device=means.device).repeat_interleave(N)

    tile_width, tile_height = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    tiles_per_gauss, flatten_ids, tile_counts = _intersect_tiles(
        means2d.reshape(-1, 2), radii.reshape(-1), depths.reshape(-1), flat_camera_ids, C, tile_width, tile_height
    )
    render_colors, render_alphas = _composite(
        means2d.reshape(-1, 2),
        conics.reshape(-1, 3),
        opacities.reshape(-1),
        colors.reshape(-1, colors.shape[-1]),
        flatten_ids,
        tile_counts,
        C,
        tile_width,
        tile_height,
        width,
        height,
    )
    if backgrounds is not None:
        render_colors = render_colors + (1.0 - render_alphas) * backgrounds[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        expected_depth = render_colors[..., -1:] / render_alphas.clamp(min=1e-10)
        render_colors = torch.cat([render_colors[..., :-1], expected_depth], dim=-1)

    isect_offsets = (torch.cumsum(tile_counts, 0) - tile_counts).to(torch.int32)
    meta = {
        "camera_ids": camera_ids,
        "gaussian_ids": gaussian_ids,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "tiles_per_gauss": tiles_per_gauss.reshape(radii.shape),
        "flatten_ids": flatten_ids.to(torch.int32),
        "isect_offsets": isect_offsets.reshape(C, tile_height, tile_width),
        "width": width,
        "height": height,
        "tile_size": TILE_SIZE,
        "n_cameras": C,
    }
    return render_colors, render_alphas, meta


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, render_mode, rasterize_mode):
    N, C = means.shape[0], viewmats.shape[0]
    if means.shape != (N, 3) or quats.shape != (N, 4) or scales.shape != (N, 3) or opacities.shape != (N,):
        raise ValueError(
            f"expected means [N, 3], quats [N, 4], scales [N, 3], opacities [N]; got {tuple(means.shape)}, "
            f"{tuple(quats.shape)}, {tuple(scales.shape)}, {tuple(opacities.shape)}"
        )
    if viewmats.shape != (C, 4, 4) or Ks.shape != (C, 3, 3):
        raise ValueError(f"expected viewmats [C, 4, 4], Ks [C, 3, 3]; got {tuple(viewmats.shape)}, {tuple(Ks.shape)}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"unknown render_mode {render_mode!r}; choose one of: {', '.join(RENDER_MODES)}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}; choose one of: {', '.join(RASTERIZE_MODES)}")
    if sh_degree is None:
        if not ((colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N))):
            raise ValueError(f"colors must be [N, D] or [C, N, D] without sh_degree; got {tuple(colors.shape)}")
    else:
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree {sh_degree} is not supported; choose one of: 0, 1, 2, 3")
        shape_ok = (colors.dim() == 3 and colors.shape[0] == N) or (colors.dim() == 4 and colors.shape[:2] == (C, N))
        if not shape_ok or colors.shape[-1] != 3 or colors.shape[-2] < (sh_degree + 1) ** 2:
            raise ValueError(
                f"colors must be SH coefficients [N, K, 3] or [C, N, K, 3] with K >= {(sh_degree + 1) ** 2} "
                f"for sh_degree={sh_degree}; got {tuple(colors.shape)}"
            )


def _quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] from wxyz quaternions (normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def _project(means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, radius_clip):
    """EWA splatting of every Gaussian into every camera (gsplat's fully_fused_projection, non-packed).

    Returns radii [C, N] int32 (0 = culled), means2d [C, N, 2], depths [C, N], conics [C, N, 3]
    (upper triangle of the inverse blurred 2D covariance) and antialiasing compensations [C, N].
    Culled entries are zero and carry no gradient.
    """
    R_cam, t_cam = viewmats[:, :3, :3], viewmats[:, :3, 3]  # [C, 3, 3], [C, 3]
    means_c = torch.einsum("cij,nj->cni", R_cam, means) + t_cam[:, None, :]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)  # [C, N]
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries finite (no NaN gradients)

    # Sigma = (R S)(R S)^T, and in camera space (R_cam R S)(R_cam R S)^T.
    RS = _quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]
    RS_c = torch.einsum("cij,njk->cnik", R_cam, RS)  # [C, N, 3, 3]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # Jacobian of the projection, evaluated with x/z and y/z clamped to 1.3x the visible extent.
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)  # clamped x/z
    ty = torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    # rows of J @ RS_c, J = [[fx/z, 0, -fx tx/z], [0, fy/z, -fy ty/z]] (tx, ty already divided by z)
    J_RS_0 = (fx / z)[..., None] * (RS_c[..., 0, :] - tx[..., None] * RS_c[..., 2, :])  # [C, N, 3]
    J_RS_1 = (fy / z)[..., None] * (RS_c[..., 1, :] - ty[..., None] * RS_c[..., 2, :])
    cov_a = (J_RS_0 * J_RS_0).sum(-1)  # 2D covariance [[a, b], [b, c]]
    cov_b = (J_RS_0 * J_RS_1).sum(-1)
    cov_c = (J_RS_1 * J_RS_1).sum(-1)
    det_orig = cov_a * cov_c - cov_b * cov_b
    cov_a, cov_c = cov_a + eps2d, cov_c + eps2d  # low-pass blur: at least ~1 pixel std
    det = cov_a * cov_c - cov_b * cov_b
    valid = in_depth & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    # Mip-Splatting's rho; the tiny floor keeps sqrt's gradient finite for degenerate Gaussians.
    compensations = torch.sqrt(torch.clamp(det_orig / det, min=1e-20))
    conics = torch.stack([cov_c / det, -cov_b / det, cov_a / det], dim=-1)  # [C, N, 3]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)  # [C, N, 2]

    with torch.no_grad():
        half_trace = 0.5 * (cov_a + cov_c)
        lambda_max = half_trace + torch.sqrt(torch.clamp(half_trace * half_trace - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(lambda_max))
        u, v = means2d.unbind(-1)
        on_image = (u + radius > 0) & (u - radius < width) & (v + radius > 0) & (v - radius < height)
        valid = valid & (radius > radius_clip) & on_image
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)

    keep = valid[..., None]
    means2d = torch.where(keep, means2d, torch.zeros_like(means2d))
    conics = torch.where(keep, conics, torch.zeros_like(conics))
    depths = torch.where(valid, means_c[..., 2], torch.zeros_like(z))
    return radii, means2d, depths, conics, compensations


def _sh_to_rgb(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Evaluate real SH of ``degree`` (0..3) with coefficients [..., K, 3] in directions [..., 3]."""
    bases = [torch.full_like(coeffs[..., 0, 0], _SH_C0)]
    if degree >= 1:
        x, y, z = F.normalize(dirs, dim=-1).unbind(-1)
        bases += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        z2, xy2, x2_y2 = z * z, 2 * x * y, x * x - y * y  # z^2, sin/cos(2 phi) sin^2(theta)
        bases += [
            _SH_C2[3] * xy2,
            -_SH_C2[0] * z * y,
            _SH_C2[1] * z2 - _SH_C2[2],
            -_SH_C2[0] * z * x,
            _SH_C2[3] * x2_y2,
        ]
    if degree >= 3:
        cos3, sin3 = x * x2_y2 - y * xy2, x * xy2 + y * x2_y2  # cos/sin(3 phi) sin^3(theta)
        tmp = -_SH_C3[2] * z2 + _SH_C3[3]
        bases += [
            -_SH_C3[0] * sin3,
            _SH_C3[1] * z * xy2,
            tmp * y,
            z * (_SH_C3_Z[0] * z2 - _SH_C3_Z[1]),
            tmp * x,
            _SH_C3[1] * z * x2_y2,
            -_SH_C3[0] * cos3,
        ]
    bases = torch.stack(bases, dim=-1)  # [..., (degree + 1)^2]
    return torch.einsum("...k,...kd->...d", bases, coeffs[..., : bases.shape[-1], :])


def _colors_per_camera(means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: int | None) -> Tensor:
    """Per-camera features [C, N, D]: the colours as given, or SH evaluated from each camera centre."""
    C, N = viewmats.shape[0], means.shape[0]
    if sh_degree is None:
        return colors.expand(C, N, colors.shape[-1]) if colors.dim() == 2 else colors
    camera_centres = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
    dirs = means[None, :, :] - camera_centres[:, None, :]  # [C, N, 3]
    coeffs = colors.expand(C, *colors.shape) if colors.dim() == 3 else colors  # [C, N, K, 3]
    return torch.clamp_min(_sh_to_rgb(sh_degree, dirs, coeffs) + 0.5, 0.0)


@torch.no_grad()
def _intersect_tiles(means2d, radii, depths, camera_ids, C, tile_width, tile_height):
    """gsplat's isect_tiles: entries (Gaussian, tile) sorted by camera, tile and depth.

    Returns tiles_per_gauss [M], flatten_ids [n_isects] (rows of the flat per-Gaussian tensors, in
    compositing order) and the number of Gaussians of every tile [C * tile_height * tile_width].
    """
    device = means2d.device
    tile_radius = radii.to(means2d.dtype) / TILE_SIZE
    tile_xy = means2d / TILE_SIZE
    tile_min = torch.floor(tile_xy - tile_radius[:, None]).clamp(min=0)
    tile_max = torch.ceil(tile_xy + tile_radius[:, None]).clamp(min=0)
    limit = torch.tensor([tile_width, tile_height], device=device, dtype=means2d.dtype)
    tile_min = torch.minimum(tile_min, limit).long()
    tile_max = torch.minimum(tile_max, limit).long()
    span = torch.where((radii > 0)[:, None], tile_max - tile_min, torch.zeros_like(tile_max))  # [M, 2]
    tiles_per_gauss = span[:, 0] * span[:, 1]

    # Enumerate the touched tiles of each Gaussian, Gaussians visited front to back so that one
    # stable sort by tile id leaves every tile's list in depth order.
    order = torch.argsort(depths, stable=True)
    counts = tiles_per_gauss[order]
    gauss = order.repeat_interleave(counts)  # [n_isects]
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(gauss.shape[0], device=device) - first.repeat_interleave(counts)
    span_x = span[gauss, 0]
    tile_x = tile_min[gauss, 0] + local % span_x.clamp(min=1)
    tile_y = tile_min[gauss, 1] + local // span_x.clamp(min=1)
    tile_ids = (camera_ids[gauss] * tile_height + tile_y) * tile_width + tile_x
    tile_ids, by_tile = torch.sort(tile_ids, stable=True)
    flatten_ids = gauss[by_tile]
    tile_counts = torch.bincount(tile_ids, minlength=C * tile_height * tile_width)
    return tiles_per_gauss.to(torch.int32), flatten_ids, tile_counts


def _tile_chunks(sorted_counts: list[int]) -> list[tuple[int, int, int]]:
    """Split tiles sorted by decreasing Gaussian count into (start, stop, K) chunks.

    A chunk is padded to its first (largest) count K: it takes tiles while their count is at least 3/4
    of K (so padding wastes at most a quarter) and while it holds at most _CHUNK_ELEMENTS pairs.
    """
    chunks, start, n = [], 0, len(sorted_counts)
    while start < n:
        K = max(sorted_counts[start], 1)
        max_tiles = max(1, _CHUNK_ELEMENTS // (TILE_SIZE * TILE_SIZE * K))
        stop = start + 1
        while stop < n and stop - start < max_tiles and 4 * max(sorted_counts[stop], 1) >= 3 * K:
            stop += 1
        chunks.append((start, stop, K))
        start = stop
    return chunks


def _composite(means2d, conics, opacities, features, flatten_ids, tile_counts, C, tile_width, tile_height, W, H):
    """Front-to-back alpha compositing of the depth-sorted Gaussians of every 16x16 tile.

    Inputs are flat per-Gaussian rows [M, ...]; returns colors [C, H, W, D] and alphas [C, H, W, 1].
    """
    device, dtype = means2d.device, means2d.dtype
    D, M = features.shape[-1], means2d.shape[0]
    # A padding row M: opacity 0, so it never contributes.
    means2d = torch.cat([means2d, means2d.new_zeros(1, 2)])
    conics = torch.cat([conics, conics.new_zeros(1, 3)])
    opacities = torch.cat([opacities, opacities.new_zeros(1)])
    features = torch.cat([features, features.new_zeros(1, D)])

    padded_ids = torch.cat([flatten_ids, flatten_ids.new_full((1,), M)])
    tile_offsets = torch.cumsum(tile_counts, 0) - tile_counts
    tile_order = torch.argsort(tile_counts, descending=True, stable=True)
    chunks = _tile_chunks(tile_counts[tile_order].tolist())
    pixel = torch.arange(TILE_SIZE, device=device, dtype=dtype) + 0.5  # pixel centres inside a tile

    out_colors, out_alphas = [], []
    for start, stop, K in chunks:  # tiles with similar K, padded to the chunk's largest K
        tiles = tile_order[start:stop]  # [T]
        slot = torch.arange(K, device=device)
        present = slot < tile_counts[tiles, None]  # [T, K]
        position = torch.where(present, tile_offsets[tiles, None] + slot, len(flatten_ids))
        index = padded_ids[position]  # [T, K] rows of the per-Gaussian tensors, front to back

        local_tile = tiles % (tile_width * tile_height)
        px = (local_tile % tile_width * TILE_SIZE)[:, None].to(dtype) + pixel  # [T, 16] pixel-centre x
        py = (local_tile // tile_width * TILE_SIZE)[:, None].to(dtype) + pixel  # [T, 16] pixel-centre y
        mean, conic, opacity = means2d[index], conics[index], opacities[index]  # [T, K, 2], [T, K, 3], [T, K]
        dx = mean[:, None, :, 0] - px[:, :, None]  # [T, 16 (x), K]
        dy = mean[:, None, :, 1] - py[:, :, None]  # [T, 16 (y), K]
        # q/2 = (a dx^2 + c dy^2) / 2 + b dx dy, assembled from per-row and per-column terms: [T, 16, 16, K]
        half_a_dx2 = 0.5 * conic[:, None, :, 0] * dx * dx
        half_c_dy2 = 0.5 * conic[:, None, :, 2] * dy * dy
        b_dx = conic[:, None, :, 1] * dx
        sigma = (half_c_dy2[:, :, None, :] + half_a_dx2[:, None, :, :]) + dy[:, :, None, :] * b_dx[:, None, :, :]
        alpha = torch.clamp_max(opacity[:, None, None, :] * torch.exp(-sigma), MAX_ALPHA)
        alpha = torch.where((alpha >= ALPHA_THRESHOLD) & (sigma >= 0), alpha, 0.0)
        # Transmittance behind / in front of each Gaussian along the depth-sorted axis (1 - alpha >= 0.001,
        # so cumprod's backward never divides by zero; it is 3x faster than exp(cumsum(log1p(-alpha)))).
        T_after = torch.cumprod(1.0 - alpha, dim=-1)
        T_before = torch.cat([torch.ones_like(T_after[..., :1]), T_after[..., :-1]], dim=-1)
        keep = T_after.detach() > TRANSMITTANCE_MIN  # a prefix of the list: T only decreases
        weights = torch.where(keep, alpha, 0.0) * T_before
        weights = weights.reshape(len(tiles), TILE_SIZE * TILE_SIZE, K)
        out_colors.append(torch.bmm(weights, features[index]))  # [T, 256, D]
        out_alphas.append(weights.sum(-1, keepdim=True))  # [T, 256, 1] = 1 - final T

    inverse = torch.argsort(tile_order)  # back from count order to tile order
    grid = (C, tile_height, tile_width, TILE_SIZE, TILE_SIZE)

    def to_image(chunks: list[Tensor]) -> Tensor:
        tiles = torch.cat(chunks)[inverse]  # [n_tiles, 256, X]
        image = tiles.reshape(*grid, -1).permute(0, 1, 3, 2, 4, 5)  # [C, th, 16, tw, 16, X]
        return image.reshape(C, tile_height * TILE_SIZE, tile_width * TILE_SIZE, -1)[:, :H, :W]

    return to_image(out_colors), to_image(out_alphas)

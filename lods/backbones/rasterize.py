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

Algorithm of the CPU path (all vectorised; plain autograd except for the compositing):

1. Project every Gaussian into every camera: ``means2d [C, N, 2]``, ``conics [C, N, 3]``,
   ``depths [C, N]``, integer ``radii [C, N]`` (0 = culled).
2. Intersect with 16x16 tiles exactly like gsplat: one entry per (visible Gaussian, touched tile),
   sorted by (camera, tile, depth).
3. Composite tile by tile, in 4x4 pixel blocks: a tile's depth-sorted list is split over its 16
   blocks, and a Gaussian is left out of a block where its alpha is below 1/255 at every pixel
   (outside the box around its ellipse ``o exp(-q/2) = 1/255``, with a margin). Such contributions are
   skipped by gsplat too, so the result is the same, while the work shrinks 2-5x for Gaussians a few
   pixels wide. Blocks are sorted by their number of Gaussians ``K`` and processed in chunks padded to
   the chunk's largest ``K``; each chunk evaluates ``alpha [blocks, 16, K]``, the transmittance by
   ``torch.cumprod`` of ``1 - alpha`` along the depth-sorted axis, the weights ``alpha T`` (zeroed after
   termination) and ``colors = weights @ features`` with one ``bmm``. The chunk's backward pass is
   written by hand (``_CompositeTiles``, gsplat's backward kernel in closed form): it keeps only
   ``alpha`` and ``T``, and takes about as many tensor passes as the forward.

Cost: time and memory are proportional to the pixel-Gaussian pairs of the blocks (plus at most 1/3
padding inside a chunk), not to ``pixels * N``. The backward pass keeps 8 bytes per pair (``alpha``
and ``T``, float32); a chunk holds at most ``_CHUNK_ELEMENTS`` pairs, which bounds the transient memory
of one step but not what is kept for the backward pass. Measured on one CPU thread (shared machine),
forward + backward at 64x64, one camera, SH degree 3, Gaussians in a ball of radius 0.6 seen from
distance 3: 1000 Gaussians ~15 ms, 2000 ~19 ms, 4000 ~26 ms, 8000 ~38 ms (16x16 tiles and plain
autograd, as this file did before: 36, 63, 127 and 236 ms).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

TILE_SIZE = 16  # gsplat's default (and only tested) tile size
BLOCK_SIZE = 4  # the compositing works on 4x4 pixel blocks of a tile (an exact subdivision, see _composite)
ALPHA_THRESHOLD = 1.0 / 255.0  # skip contributions below this alpha
MAX_ALPHA = 0.999  # alpha = min(MAX_ALPHA, opacity * exp(-q / 2))
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before the Gaussian that would bring T to <= this
_NEG_SIGMA_MIN = -20.0  # exp(-20) < 1/255: clamping -sigma here changes no alpha that is not skipped
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


@torch.no_grad()
def _split_tiles_into_blocks(means2d, conics, opacities, flatten_ids, tile_counts, tile_width, tile_height):
    """Each tile's depth-sorted list, split over its BLOCK_SIZE x BLOCK_SIZE pixel blocks.

    A (tile, Gaussian) entry goes to every block of its tile that holds a pixel centre inside the box
    around the ellipse ``o exp(-q/2) >= 1/255`` (half extents ``sqrt(2 ln(255 o) Sigma_xx)`` and
    ``sqrt(2 ln(255 o) Sigma_yy)``, ``Sigma`` the inverse conic, widened by a safety margin): outside it
    every alpha is below 1/255 and skipped by the compositing anyway, so leaving the entry out of a
    block changes nothing, while the blocks (not the tiles) bound the work. Returns the block id of each
    kept entry and its row in the per-Gaussian tensors, sorted by block and, within a block, by depth.
    """
    device, dtype = means2d.device, means2d.dtype
    per_side = TILE_SIZE // BLOCK_SIZE
    tile_of = torch.repeat_interleave(torch.arange(tile_counts.shape[0], device=device), tile_counts)
    local = tile_of % (tile_width * tile_height)
    origin_x = (local % tile_width * TILE_SIZE).to(dtype)  # pixel coordinates of the tile's corner
    origin_y = (local // tile_width * TILE_SIZE).to(dtype)
    mean, conic, opacity = means2d[flatten_ids], conics[flatten_ids], opacities[flatten_ids]
    a, b, c = conic.unbind(-1)
    det = a * c - b * b
    level = 2.0 * torch.log(torch.clamp_min(opacity * (1.0 / ALPHA_THRESHOLD), 1.0))  # q where alpha = 1/255
    half_x = torch.sqrt(level * (1.0 + 1e-3) * c / det) + 0.01
    half_y = torch.sqrt(level * (1.0 + 1e-3) * a / det) + 0.01
    finite = torch.isfinite(half_x) & torch.isfinite(half_y) & (det > 0)
    half_x = torch.where(finite, half_x, torch.full_like(half_x, 2.0 * TILE_SIZE))  # degenerate: whole tile
    half_y = torch.where(finite, half_y, torch.full_like(half_y, 2.0 * TILE_SIZE))
    # Pixel columns i of the tile (centre origin + i + 0.5) within [mean - half, mean + half], as blocks.
    first_x = torch.ceil(mean[:, 0] - half_x - 0.5 - origin_x).clamp(0, TILE_SIZE)
    last_x = torch.floor(mean[:, 0] + half_x - 0.5 - origin_x).clamp(-1, TILE_SIZE - 1)
    first_y = torch.ceil(mean[:, 1] - half_y - 0.5 - origin_y).clamp(0, TILE_SIZE)
    last_y = torch.floor(mean[:, 1] + half_y - 0.5 - origin_y).clamp(-1, TILE_SIZE - 1)
    visible = (opacity >= 0.5 * ALPHA_THRESHOLD) & (first_x <= last_x) & (first_y <= last_y)
    block_x0 = torch.div(first_x.long(), BLOCK_SIZE, rounding_mode="floor")
    block_y0 = torch.div(first_y.long(), BLOCK_SIZE, rounding_mode="floor")
    span_x = torch.div(last_x.long(), BLOCK_SIZE, rounding_mode="floor") - block_x0 + 1
    span_y = torch.div(last_y.long(), BLOCK_SIZE, rounding_mode="floor") - block_y0 + 1
    counts = torch.where(visible, span_x * span_y, torch.zeros_like(span_x))

    entry = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts)
    first = torch.cumsum(counts, 0) - counts
    offset = torch.arange(entry.shape[0], device=device) - first[entry]
    block_x = block_x0[entry] + offset % span_x[entry]
    block_y = block_y0[entry] + offset // span_x[entry]
    block_ids = tile_of[entry] * per_side * per_side + block_y * per_side + block_x
    block_ids, order = torch.sort(block_ids, stable=True)  # entries were in (tile, depth) order
    return block_ids, flatten_ids[entry[order]]


def _tile_chunks(sorted_counts: list[int], pixels: int = TILE_SIZE * TILE_SIZE) -> list[tuple[int, int, int]]:
    """Split tiles (or blocks of ``pixels`` pixels) sorted by decreasing Gaussian count into (start, stop, K) chunks.

    A chunk is padded to its first (largest) count K: it takes tiles while their count is at least 3/4
    of K (so padding wastes at most a quarter) and while it holds at most _CHUNK_ELEMENTS pairs.
    """
    chunks, start, n = [], 0, len(sorted_counts)
    while start < n:
        K = max(sorted_counts[start], 1)
        max_tiles = max(1, _CHUNK_ELEMENTS // (pixels * K))
        stop = start + 1
        while stop < n and stop - start < max_tiles and 4 * max(sorted_counts[stop], 1) >= 3 * K:
            stop += 1
        chunks.append((start, stop, K))
        start = stop
    return chunks


def _composite(means2d, conics, opacities, features, flatten_ids, tile_counts, C, tile_width, tile_height, W, H):
    """Front-to-back alpha compositing of the depth-sorted Gaussians of every 16x16 tile, block by block.

    Inputs are flat per-Gaussian rows [M, ...]; returns colors [C, H, W, D] and alphas [C, H, W, 1].
    """
    device, dtype = means2d.device, means2d.dtype
    D, M = features.shape[-1], means2d.shape[0]
    S, per_side = BLOCK_SIZE, TILE_SIZE // BLOCK_SIZE
    block_ids, rows = _split_tiles_into_blocks(
        means2d.detach(), conics.detach(), opacities.detach(), flatten_ids, tile_counts, tile_width, tile_height
    )
    n_blocks = tile_counts.shape[0] * per_side * per_side
    block_counts = torch.bincount(block_ids, minlength=n_blocks)
    # A padding row M: opacity 0, so it never contributes.
    means2d = torch.cat([means2d, means2d.new_zeros(1, 2)])
    conics = torch.cat([conics, conics.new_zeros(1, 3)])
    opacities = torch.cat([opacities, opacities.new_zeros(1)])
    features = torch.cat([features, features.new_zeros(1, D)])

    padded_rows = torch.cat([rows, rows.new_full((1,), M)])
    block_offsets = torch.cumsum(block_counts, 0) - block_counts
    block_order = torch.argsort(block_counts, descending=True, stable=True)
    n_live = int((block_counts > 0).sum())  # blocks with at least one Gaussian, first in block_order
    chunks = _tile_chunks(block_counts[block_order[:n_live]].tolist(), S * S)
    pixel = torch.arange(S, device=device, dtype=dtype) + 0.5  # pixel centres inside a block

    out_colors, out_alphas = [], []
    for start, stop, K in chunks:  # blocks with similar K, padded to the chunk's largest K
        blocks = block_order[start:stop]  # [B]
        slot = torch.arange(K, device=device)
        present = slot < block_counts[blocks, None]  # [B, K]
        position = torch.where(present, block_offsets[blocks, None] + slot, len(rows))
        index = padded_rows[position]  # [B, K] rows of the per-Gaussian tensors, front to back

        local_tile = blocks // (per_side * per_side) % (tile_width * tile_height)
        sub = blocks % (per_side * per_side)
        x0 = local_tile % tile_width * TILE_SIZE + sub % per_side * S
        y0 = local_tile // tile_width * TILE_SIZE + sub // per_side * S
        px = x0[:, None].to(dtype) + pixel  # [B, S] pixel-centre x
        py = y0[:, None].to(dtype) + pixel  # [B, S] pixel-centre y
        colors, alphas = _CompositeTiles.apply(means2d[index], conics[index], opacities[index], features[index], px, py)
        out_colors.append(colors)  # [B, S * S, D]
        out_alphas.append(alphas)  # [B, S * S, 1] = 1 - final T
    empty = n_blocks - n_live
    out_colors.append(features.new_zeros(empty, S * S, D))
    out_alphas.append(features.new_zeros(empty, S * S, 1))

    inverse = torch.argsort(block_order)  # back from count order to block order
    grid = (C, tile_height, tile_width, per_side, per_side, S, S)

    def to_image(chunks: list[Tensor]) -> Tensor:
        blocks = torch.cat(chunks)[inverse]  # [n_blocks, S * S, X]
        image = blocks.reshape(*grid, -1).permute(0, 1, 3, 5, 2, 4, 6, 7)  # [C, th, bs, S, tw, bs, S, X]
        return image.reshape(C, tile_height * TILE_SIZE, tile_width * TILE_SIZE, -1)[:, :H, :W]

    return to_image(out_colors), to_image(out_alphas)


class _CompositeTiles(torch.autograd.Function):
    """Front-to-back compositing of a chunk of S x S pixel blocks, with a hand-written backward (gsplat's, vectorised).

    Inputs per block t and depth-sorted slot k: ``mean [T, K, 2]``, ``conic [T, K, 3]``, ``opacity [T, K]``,
    ``feature [T, K, D]``, and the pixel-centre coordinates ``px [T, S]`` (columns), ``py [T, S]`` (rows).
    Outputs ``colors [T, S * S, D]`` and ``alphas [T, S * S, 1]``, pixels in row-major order.

    Forward: ``alpha = min(0.999, o exp(-q/2))``, zeroed below 1/255 (or q < 0) and from the Gaussian that
    would bring the transmittance to <= 1e-4 on (the kept Gaussians are a prefix of the list, since T only
    decreases); ``w_k = alpha_k T_k`` with ``T_k = prod_{j<k} (1 - alpha_j)``; ``colors = sum_k w_k f_k``,
    ``alphas = sum_k w_k``. It keeps ``alpha`` and ``T`` for the backward pass (8 bytes per pixel-Gaussian
    pair; plain autograd kept ~36).

    Backward, per pixel, with ``G_k = dL/dcolors . f_k + dL/dalphas``:
    ``dL/dalpha_k = T_k G_k - (sum_{j>k} w_j G_j) / (1 - alpha_k)`` (the suffix sum is the total minus an
    inclusive cumsum), ``dL/dq = -alpha dL/dalpha / 2`` and ``dL/do = alpha/o dL/dalpha`` where alpha was not
    clamped, then the quadratic form's derivatives, summed over the block's pixels separably (the x offsets
    depend only on the column, the y offsets only on the row). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, mean, conic, opacity, feature, px, py):
        T_, K = opacity.shape
        S = px.shape[1]
        dx = mean[:, None, :, 0] - px[:, :, None]  # [T, S (x), K]
        dy = mean[:, None, :, 1] - py[:, :, None]  # [T, S (y), K]
        # -q/2 = -(a dx^2 + c dy^2) / 2 - b dx dy, from per-column and per-row terms: [T, S (y), S (x), K]
        neg_half_a_dx2 = -0.5 * conic[:, None, :, 0] * dx * dx
        neg_half_c_dy2 = -0.5 * conic[:, None, :, 2] * dy * dy
        neg_b_dx = -conic[:, None, :, 1] * dx
        neg_sigma = (neg_half_c_dy2[:, :, None, :] + neg_half_a_dx2[:, None, :, :]).addcmul_(
            dy[:, :, None, :], neg_b_dx[:, None, :, :]
        )
        # exp is ~50x slower on arguments near and below float32's underflow (-87): clamp them where
        # o exp(-sigma) < 1/255 anyway (the result is unchanged, those alphas are skipped).
        alpha = torch.exp(neg_sigma.clamp_min(_NEG_SIGMA_MIN)).mul_(opacity[:, None, None, :])
        clamped = bool((opacity > MAX_ALPHA).any())  # only an opacity above 0.999 can reach the clamp
        if clamped:
            alpha.clamp_max_(MAX_ALPHA)
        alpha.masked_fill_(~((alpha >= ALPHA_THRESHOLD) & (neg_sigma <= 0)), 0.0)  # NaN-safe: skipped
        alpha = alpha.reshape(T_, S * S, K)
        # transmittance[..., k] = prod_{j<k} (1 - alpha_j), k = 0..K (cumprod's backward is never needed)
        transmittance = alpha.new_empty(T_, S * S, K + 1)
        transmittance[..., 0] = 1.0
        torch.neg(alpha, out=transmittance[..., 1:]).add_(1.0)
        transmittance = torch.cumprod(transmittance, dim=-1)
        if bool((transmittance[..., -1] <= TRANSMITTANCE_MIN).any()):  # some pixel stops before its last Gaussian
            alpha.masked_fill_(transmittance[..., 1:] <= TRANSMITTANCE_MIN, 0.0)  # T only decreases: a suffix
        T_before = transmittance[..., :K]
        weights = alpha * T_before
        colors_alphas = torch.bmm(weights, torch.cat([feature, feature.new_ones(T_, K, 1)], dim=-1))
        ctx.save_for_backward(mean, conic, opacity, feature, px, py, alpha, T_before)
        ctx.clamped = clamped
        return colors_alphas[..., :-1], colors_alphas[..., -1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_colors, grad_alphas):
        mean, conic, opacity, feature, px, py, alpha, T_before = ctx.saved_tensors
        T_, K = opacity.shape
        S = px.shape[1]
        weights = alpha * T_before  # [T, S * S, K]
        G = torch.baddbmm(grad_alphas, grad_colors, feature.transpose(1, 2))  # [T, S * S, K]
        grad_feature = torch.bmm(weights.transpose(1, 2), grad_colors)  # [T, K, D]
        wG = weights.mul_(G)
        suffix = wG.sum(-1, keepdim=True) - torch.cumsum(wG, dim=-1)  # sum_{j>k} w_j G_j
        grad_alpha = (T_before * G).sub_(suffix.div_(1.0 - alpha))
        # Through alpha = o exp(-sigma): dL/d(-sigma) = alpha dL/dalpha, which is 0 where alpha was skipped
        # (alpha = 0); where it was clamped to 0.999 no gradient passes.
        if ctx.clamped:
            grad_alpha.masked_fill_(alpha >= MAX_ALPHA, 0.0)
        grad_neg_sigma = grad_alpha.mul_(alpha).reshape(T_, S, S, K)  # [T, S (y), S (x), K]
        dx = mean[:, None, :, 0] - px[:, :, None]  # [T, S (x), K]
        dy = mean[:, None, :, 1] - py[:, :, None]  # [T, S (y), K]
        g_col = grad_neg_sigma.sum(1)  # [T, S (x), K]
        g_row = grad_neg_sigma.sum(2)  # [T, S (y), K]
        g_row_dx = (grad_neg_sigma * dx[:, None, :, :]).sum(2)  # [T, S (y), K]: sum over x of dx dL/d(-sigma)
        # dL/do = sum over pixels of exp(-sigma) dL/dalpha = sum alpha / o dL/dalpha
        grad_opacity = g_col.sum(1) / torch.where(opacity > 0, opacity, torch.ones_like(opacity))
        sum_dx = (g_col * dx).sum(1)  # sum over pixels of dx dL/d(-sigma), [T, K]
        sum_dy = (g_row * dy).sum(1)
        a, b, c = conic.unbind(-1)
        # sigma = (a dx^2 + c dy^2) / 2 + b dx dy, dx = mean_x - px: dsigma/dmean = (a dx + b dy, c dy + b dx)
        grad_mean = -torch.stack([a * sum_dx + b * sum_dy, c * sum_dy + b * sum_dx], dim=-1)
        grad_conic = -torch.stack(
            [0.5 * (g_col * dx * dx).sum(1), (g_row_dx * dy).sum(1), 0.5 * (g_row * dy * dy).sum(1)], dim=-1
        )
        return grad_mean, grad_conic, grad_opacity, grad_feature, None, None

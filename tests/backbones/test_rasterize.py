"""The pure-PyTorch Gaussian rasterizer: analytic checks, a literal port of gsplat's kernel loop, gradients."""

import math

import pytest
import torch

from lods.backbones.rasterize import rasterize, rasterize_cpu
from lods.cameras import opengl_to_opencv, orbit_cameras

SH_C0, SH_C1 = 0.2820947917738781, 0.48860251190292


def pinhole(focal: float, cx: float, cy: float, C: int = 1, dtype=torch.float32):
    """Identity world-to-camera (the world *is* the OpenCV camera frame) and pixel K."""
    K = torch.tensor([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype).expand(C, 4, 4).clone(), K.expand(C, 3, 3).clone()


def gaussians(means, scale, opacity, colors, dtype=torch.float32):
    """Isotropic Gaussians from lists: means [N, 3], scalar or [N] scale and opacity, colors [N, D]."""
    means = torch.as_tensor(means, dtype=dtype)
    N = means.shape[0]
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype).expand(N, 4).clone()
    scales = torch.as_tensor(scale, dtype=dtype).expand(N)[:, None].expand(N, 3).clone()
    opacities = torch.as_tensor(opacity, dtype=dtype).expand(N).clone()
    return means, quats, scales, opacities, torch.as_tensor(colors, dtype=dtype)


def random_scene(N: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g, dtype=dtype) * 0.5
    quats = torch.randn(N, 4, generator=g, dtype=dtype)
    scales = torch.rand(N, 3, generator=g, dtype=dtype) * 0.15 + 0.02
    opacities = torch.rand(N, generator=g, dtype=dtype) * 0.9 + 0.05
    colors = torch.rand(N, 3, generator=g, dtype=dtype)
    return means, quats, scales, opacities, colors


def orbit(width: int, height: int, azimuths=(20.0,), dtype=torch.float32):
    cams = orbit_cameras(torch.tensor(azimuths), 15.0, 3.0, 45.0, width, height)
    return opengl_to_opencv(cams.c2w).to(dtype), cams.intrinsics().to(dtype)


def reference_composite(meta, features, width, height, backgrounds=None):
    """gsplat's rasterize_to_pixels kernel loop, one Gaussian at a time (vectorised over pixels only).

    Reads the projection from ``meta`` (non-packed) and repeats isect_tiles' tile test, the 1/255
    skip, the 0.999 clamp and the exclusive T <= 1e-4 stop literally.
    """
    C, N = meta["radii"].shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px, py = xs.to(features.dtype) + 0.5, ys.to(features.dtype) + 0.5
    colors_out, alphas_out = [], []
    for c in range(C):
        T = torch.ones(height, width, dtype=features.dtype)
        out = torch.zeros(height, width, features.shape[-1], dtype=features.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        for g in torch.argsort(meta["depths"][c], stable=True).tolist():
            radius = int(meta["radii"][c, g])
            if radius <= 0:
                continue
            mx, my = meta["means2d"][c, g].tolist()
            a, b, cc = meta["conics"][c, g].tolist()
            t_min_x, t_max_x = math.floor((mx - radius) / 16), math.ceil((mx + radius) / 16)
            t_min_y, t_max_y = math.floor((my - radius) / 16), math.ceil((my + radius) / 16)
            in_tiles = (xs // 16 >= t_min_x) & (xs // 16 < t_max_x) & (ys // 16 >= t_min_y) & (ys // 16 < t_max_y)
            dx, dy = mx - px, my - py
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp_max(meta["opacities"][c, g] * torch.exp(-sigma), 0.999)
            active = in_tiles & ~done & (sigma >= 0) & (alpha >= 1 / 255)
            next_T = T * (1 - alpha)
            stop = active & (next_T <= 1e-4)
            done |= stop
            active &= ~stop
            out += torch.where(active[..., None], (alpha * T)[..., None] * features[c, g], 0.0)
            T = torch.where(active, next_T, T)
        if backgrounds is not None:
            out = out + T[..., None] * backgrounds[c]
        colors_out.append(out)
        alphas_out.append(1 - T[..., None])
    return torch.stack(colors_out), torch.stack(alphas_out)


def test_projects_to_the_pixel_predicted_by_K_and_viewmat():
    viewmats, Ks = orbit(48, 32, azimuths=(0.0, 70.0))
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5], [0.0, 0.5, 0.0], [0.3, -0.2, 0.1]])
    means, quats, scales, opacities, colors = gaussians(points, 0.01, 0.9, torch.ones(4, 3))
    _, _, meta = rasterize_cpu(means, quats, scales, opacities, colors, viewmats, Ks, 48, 32)
    cam = torch.einsum("cij,nj->cni", viewmats[:, :3, :3], points) + viewmats[:, None, :3, 3]
    pix = torch.einsum("cij,cnj->cni", Ks, cam)
    torch.testing.assert_close(meta["means2d"], pix[..., :2] / pix[..., 2:], atol=1e-4, rtol=0)
    torch.testing.assert_close(meta["depths"], cam[..., 2])
    # Project convention (azimuth 0 looks at the front from +x): world up is image up, +y is image right.
    u_origin, v_origin = meta["means2d"][0, 0]
    assert (u_origin, v_origin) == pytest.approx((24.0, 16.0), abs=1e-4)
    assert meta["means2d"][0, 1, 1] < v_origin  # +z: above the centre (smaller row)
    assert meta["means2d"][0, 2, 0] > u_origin  # +y: right of the centre
    # A lone small Gaussian lights up the pixel that contains its projected centre.
    one = [x[3:] for x in (means, quats, scales, opacities, colors)]
    _, alphas, _ = rasterize_cpu(*one, viewmats, Ks, 48, 32)
    for c in range(2):
        row, col = divmod(int(alphas[c, ..., 0].argmax()), 48)
        assert (col, row) == (int(pix[c, 3, 0] / pix[c, 3, 2]), int(pix[c, 3, 1] / pix[c, 3, 2]))


def test_conics_are_the_inverse_of_the_ewa_covariance():
    """Anisotropic Gaussians, some off-screen where the Jacobian's x/z is clamped to 1.3 tan(fov/2)."""
    means, quats, scales, opacities, colors = random_scene(12, seed=1, dtype=torch.float64)
    means[:2] = torch.tensor([[0.0, 3.0, 0.0], [0.0, -0.5, 2.0]], dtype=torch.float64)  # far right, far up
    scales[:2] = 0.8  # big enough to reach into the image
    viewmats, Ks = orbit(32, 24, azimuths=(0.0,), dtype=torch.float64)
    _, _, meta = rasterize_cpu(means, quats, scales, opacities, colors, viewmats, Ks, 32, 24)
    # Rotation from the unit quaternion (cos t/2, sin t/2 n) by Rodrigues' formula.
    q = torch.nn.functional.normalize(quats, dim=-1)
    angle = 2 * torch.atan2(q[:, 1:].norm(dim=-1), q[:, 0])
    n = torch.nn.functional.normalize(q[:, 1:], dim=-1)
    cross = torch.zeros(12, 3, 3, dtype=torch.float64)
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -n[:, 2], n[:, 1], -n[:, 0]
    cross = cross - cross.transpose(1, 2)
    rot = torch.eye(3, dtype=torch.float64) + angle.sin()[:, None, None] * cross
    rot = rot + (1 - angle.cos())[:, None, None] * cross @ cross
    world_cov = rot @ torch.diag_embed(scales**2) @ rot.transpose(1, 2)
    W = viewmats[0, :3, :3]
    cam = means @ W.T + viewmats[0, :3, 3]
    x, y, z = cam.unbind(-1)
    f = Ks[0, 0, 0]
    tan_half_x, tan_half_y = 16 / f, 12 / f
    x = z * (x / z).clamp(-1.3 * tan_half_x, 1.3 * tan_half_x)
    y = z * (y / z).clamp(-1.3 * tan_half_y, 1.3 * tan_half_y)
    J = torch.zeros(12, 2, 3, dtype=torch.float64)
    J[:, 0, 0], J[:, 0, 2] = f / z, -f * x / z**2
    J[:, 1, 1], J[:, 1, 2] = f / z, -f * y / z**2
    cov2d = J @ W @ world_cov @ W.T @ J.transpose(1, 2) + 0.3 * torch.eye(2, dtype=torch.float64)
    conic = torch.linalg.inv(cov2d)
    visible = meta["radii"][0] > 0
    assert visible[:2].all() and (meta["means2d"][0, 0, 0] > 32) and (meta["means2d"][0, 1, 1] < 0)
    want = torch.stack([conic[:, 0, 0], conic[:, 0, 1], conic[:, 1, 1]], dim=-1)
    torch.testing.assert_close(meta["conics"][0][visible], want[visible])


@pytest.mark.parametrize("eps2d", [0.3, 0.0])
def test_isotropic_alpha_profile(eps2d):
    focal, depth, scale, opacity = 40.0, 4.0, 0.2, 0.8
    viewmats, Ks = pinhole(focal, cx=16.3, cy=15.6)  # off-grid centre: checks pixel centres at +0.5
    means, quats, scales, opacities, colors = gaussians([[0.0, 0.0, depth]], scale, opacity, [[1.0, 1.0, 1.0]])
    _, alphas, meta = rasterize_cpu(means, quats, scales, opacities, colors, viewmats, Ks, 32, 32, eps2d=eps2d)
    var_px = (focal * scale / depth) ** 2 + eps2d  # sigma_px^2 = (f s / z)^2, plus the eps2d blur
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    r2 = (xs - 16.3) ** 2 + (ys - 15.6) ** 2
    expected = opacity * torch.exp(-r2 / (2 * var_px))
    expected = torch.where(expected >= 1 / 255, expected, 0.0)  # gsplat skips alpha < 1/255
    torch.testing.assert_close(alphas[0, ..., 0], expected, atol=1e-6, rtol=1e-5)
    # gsplat's radius: 3 sqrt(lambda_max), with the eigenvalue gap floored at sqrt(0.01) = 0.1
    assert int(meta["radii"][0, 0]) == math.ceil(3 * math.sqrt(var_px + 0.1))


def test_front_to_back_order():
    viewmats, Ks = pinhole(30.0, 8.0, 8.0)
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]

    def centre_colour(z_red, z_green):
        scene = gaussians([[0.0, 0.0, z_red], [0.0, 0.0, z_green]], 0.3, 0.7, [red, green])
        rgb, _, _ = rasterize_cpu(*scene, viewmats, Ks, 16, 16, render_mode="RGB")
        return rgb[0, 8, 8], rgb[0, 7:9, 7:9]  # pixel (8, 8) and the four pixels around the centre

    (near_red, quad_a), (near_green, quad_b) = centre_colour(2.0, 3.0), centre_colour(3.0, 2.0)
    assert near_red[0] > near_red[1] and near_green[1] > near_green[0]
    torch.testing.assert_close(quad_a[..., [1, 0, 2]], quad_b, rtol=1e-5, atol=1e-6)  # swap depths = swap colours
    # The four centre pixels are 0.5 px from the centre in x and y: r^2 = 0.5.
    a_red = 0.7 * math.exp(-0.5 / (2 * ((30 * 0.3 / 2.0) ** 2 + 0.3)))
    a_green = 0.7 * math.exp(-0.5 / (2 * ((30 * 0.3 / 3.0) ** 2 + 0.3)))
    assert quad_a[0, 0, 0] == pytest.approx(a_red, rel=1e-5)
    assert quad_a[0, 0, 1] == pytest.approx(a_green * (1 - a_red), rel=1e-5)


def test_matches_gsplat_kernel_loop():
    """Tiles, depth order, 1/255 skip and T termination against a literal per-Gaussian loop.

    Both sides composite the same <= 24 layers per pixel with differently ordered arithmetic, so the check
    runs in float64: reordering then moves a value by ~24 * 2**-53 of the feature scale (depths ~3), far below
    the 1e-10 allowed, while a wrong tile, order, skip or stop changes a pixel by at least 1/255 of a colour.
    """
    dtype = torch.float64
    means, quats, scales, opacities, colors = random_scene(24, seed=3, dtype=dtype)
    # An opaque stack in front of the centre: the second layer would push T below 1e-4, so it stops.
    means[:3] = torch.tensor([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.1, 0.0, 0.0]], dtype=dtype)
    scales[:3], opacities[:3] = 0.3, 1.0
    viewmats, Ks = orbit(40, 24, azimuths=(0.0, 140.0), dtype=dtype)  # not a multiple of the 16 px tile
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], dtype=dtype)
    rgbd, alphas, meta = rasterize_cpu(
        means, quats, scales, opacities, colors, viewmats, Ks, 40, 24, backgrounds=bg, render_mode="RGB+D"
    )
    assert rgbd.shape == (2, 24, 40, 4) and alphas.shape == (2, 24, 40, 1) and rgbd.dtype == dtype
    features = torch.cat([colors.expand(2, -1, -1), meta["depths"][..., None]], dim=-1)
    bg_d = torch.cat([bg, torch.zeros(2, 1, dtype=dtype)], dim=-1)
    ref_rgbd, ref_alphas = reference_composite(meta, features, 40, 24, bg_d)
    torch.testing.assert_close(rgbd, ref_rgbd, atol=1e-10, rtol=0)
    torch.testing.assert_close(alphas, ref_alphas, atol=1e-10, rtol=0)
    assert alphas.max() < 1 - 1e-4  # pixels stop before T reaches 1e-4


def test_pixel_stops_before_transmittance_reaches_1e_4():
    viewmats, Ks = pinhole(30.0, 8.5, 8.5)  # the Gaussians sit exactly on the centre of pixel (8, 8)
    layers = [[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 4.0]]
    scene = gaussians(layers, 0.5, 1.0, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    rgb, alphas, _ = rasterize_cpu(*scene, viewmats, Ks, 16, 16, render_mode="RGB")
    # Layer 1 clamps to alpha 0.999 (T = 1e-3); layer 2 would leave T = 1e-6 <= 1e-4, so the pixel stops there.
    assert alphas[0, 8, 8, 0] == pytest.approx(0.999, abs=1e-6)
    torch.testing.assert_close(rgb[0, 8, 8], torch.tensor([0.999, 0.0, 0.0]))


def test_background_composited_with_transmittance():
    viewmats, Ks = pinhole(30.0, 8.0, 8.0, C=2)
    scene = gaussians([[0.0, 0.0, 3.0]], 0.2, 0.9, [[1.0, 0.5, 0.0]])
    bg = torch.tensor([[0.0, 0.0, 1.0], [0.2, 0.2, 0.2]])
    plain, alphas, _ = rasterize_cpu(*scene, viewmats, Ks, 16, 16)
    over, alphas_bg, _ = rasterize_cpu(*scene, viewmats, Ks, 16, 16, backgrounds=bg)
    torch.testing.assert_close(alphas_bg, alphas)
    torch.testing.assert_close(over[..., :3], plain[..., :3] + (1 - alphas) * bg[:, None, None])
    torch.testing.assert_close(over[..., 3], plain[..., 3])  # the depth channel gets no background
    torch.testing.assert_close(over[:, 0, 0, :3], bg)  # an empty corner is pure background


def test_expected_and_accumulated_depth():
    viewmats, Ks = pinhole(30.0, 8.0, 8.0)
    scene = gaussians([[0.1, -0.1, 2.5]], 0.25, 0.99, [[1.0, 1.0, 1.0]])
    rgbed, alphas, _ = rasterize_cpu(*scene, viewmats, Ks, 16, 16)  # default "RGB+ED"
    covered = alphas[..., 0] > 0
    assert covered.sum() > 100
    torch.testing.assert_close(rgbed[..., 3][covered], torch.full_like(rgbed[..., 3][covered], 2.5))
    rgbd, _, _ = rasterize_cpu(*scene, viewmats, Ks, 16, 16, render_mode="RGB+D")
    torch.testing.assert_close(rgbd[..., 3:], 2.5 * alphas)
    depth, _, _ = rasterize_cpu(*scene, viewmats, Ks, 16, 16, render_mode="ED")
    assert depth.shape == (1, 16, 16, 1)
    torch.testing.assert_close(depth[..., 0][covered], rgbed[..., 3][covered])


def test_sh_degree_0_and_1():
    viewmats, Ks = orbit(16, 16, azimuths=(30.0,))
    means, quats, scales, opacities, _ = gaussians([[0.0, 0.0, 0.0], [0.2, 0.3, -0.1]], 0.2, 0.8, torch.zeros(2, 3))
    dc = torch.tensor([[0.5, -1.0, -3.0], [1.2, 0.0, 0.3]])  # -3.0: clamped to 0 after + 0.5
    shs = torch.zeros(2, 4, 3)
    shs[:, 0] = dc
    plain = torch.clamp_min(SH_C0 * dc + 0.5, 0.0)
    args = (means, quats, scales, opacities)
    want, _, _ = rasterize_cpu(*args, plain, viewmats, Ks, 16, 16)
    got, _, _ = rasterize_cpu(*args, shs, viewmats, Ks, 16, 16, sh_degree=0)
    torch.testing.assert_close(got, want)
    # Degree 1: basis (-C1 y, C1 z, -C1 x) of the unit direction from the camera centre to the Gaussian.
    shs[:, 1:] = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.4, 0.0], [0.0, 0.0, 0.5]])
    centre = torch.linalg.inv(viewmats)[0, :3, 3]
    x, y, z = torch.nn.functional.normalize(means - centre, dim=-1).unbind(-1)
    band1 = torch.stack([-SH_C1 * y * 0.3, SH_C1 * z * 0.4, -SH_C1 * x * 0.5], dim=-1)
    want, _, _ = rasterize_cpu(*args, torch.clamp_min(SH_C0 * dc + band1 + 0.5, 0.0), viewmats, Ks, 16, 16)
    got, _, _ = rasterize_cpu(*args, shs, viewmats, Ks, 16, 16, sh_degree=1)
    torch.testing.assert_close(got, want)
    got3, _, _ = rasterize_cpu(*args, torch.cat([shs, torch.zeros(2, 12, 3)], 1), viewmats, Ks, 16, 16, sh_degree=3)
    torch.testing.assert_close(got3, want)  # higher bands with zero coefficients change nothing


def test_gradcheck_float64():
    means, quats, scales, opacities, colors = random_scene(3, seed=5, dtype=torch.float64)
    scales = scales + 0.1
    viewmats, Ks = orbit(8, 8, dtype=torch.float64)
    inputs = tuple(x.clone().requires_grad_(True) for x in (means, quats, scales, opacities, colors))

    def render(*params):
        rgbd, alphas, _ = rasterize_cpu(*params, viewmats, Ks, 8, 8)
        return rgbd, alphas

    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_float64_with_clamped_alpha_and_termination():
    """The hand-written compositing backward where alpha is clamped to 0.999 and pixels stop early."""
    viewmats, Ks = pinhole(12.0, 4.0, 4.0, dtype=torch.float64)
    # The first two sit on the centre of pixel (4, 4), where alpha = min(0.999, 0.9995) clamps; behind
    # the first, T = 1e-3 and the second would bring it to 1e-6, so that pixel stops there.
    layers = [[2.0 / 24, 2.0 / 24, 2.0], [2.5 / 24, 2.5 / 24, 2.5], [-0.05, 0.02, 3.0], [0.3, 0.2, 3.5]]
    means, quats, scales, opacities, colors = gaussians(
        layers, 0.3, 0.9, torch.rand(4, 3, generator=torch.Generator().manual_seed(0)), dtype=torch.float64
    )
    opacities = torch.tensor([0.9995, 0.9995, 0.8, 0.6], dtype=torch.float64)  # the first two clamp at the centre
    quats = quats + torch.tensor([[0.0, 0.1, -0.2, 0.05]], dtype=torch.float64)
    scales = scales * torch.tensor([[1.0, 0.7, 1.2]], dtype=torch.float64)
    inputs = tuple(x.clone().requires_grad_(True) for x in (means, quats, scales, opacities, colors))

    def render(*params):
        rgbd, alphas, _ = rasterize_cpu(*params, viewmats, Ks, 8, 8)
        return rgbd, alphas

    rgbd, alphas = render(*inputs)
    assert float(alphas[0, 4, 4, 0].detach()) == pytest.approx(0.999)  # clamped, then stopped
    torch.testing.assert_close(rgbd[0, 4, 4, :3].detach(), 0.999 * colors[0])
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_block_culling_changes_nothing(monkeypatch):
    """Compositing in 4x4 blocks (Gaussians left out where alpha < 1/255) equals whole 16x16 tiles.

    The claim is exactness: both paths composite the same Gaussians in the same depth order per pixel, and
    only the grouping of the backward's sums over pixels differs. It is checked in float64, where that
    regrouping moves a sum of n terms by at most ~n * 2**-53 times the sum of their magnitudes: here
    n <= 2 cameras x 40 x 36 pixels = 2880 per parameter, so 1e-9 relative to the largest gradient entry is
    four orders of magnitude above what reordering can do (in float32 the same bound is ~2e-4, which is
    why a float32 comparison at 1e-5 failed on another processor).
    """
    import lods.backbones.rasterize as rasterize_module

    dtype = torch.float64
    means, quats, scales, opacities, shs = random_scene(300, seed=21, dtype=dtype)
    scales = scales * torch.rand(300, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)  # some needles
    shs = torch.randn(300, 4, 3, generator=torch.Generator().manual_seed(2), dtype=dtype) * 0.3
    viewmats, Ks = orbit(40, 36, azimuths=(0.0, 100.0), dtype=dtype)
    bg = torch.ones(2, 3, dtype=dtype)

    def run():
        params = [x.clone().requires_grad_(True) for x in (means, quats, scales, opacities, shs)]
        rgbd, alphas, meta = rasterize_cpu(*params, viewmats, Ks, 40, 36, sh_degree=1, backgrounds=bg)
        weights = torch.linspace(0.5, 1.5, rgbd.numel(), dtype=dtype).reshape(rgbd.shape)
        ((rgbd * weights).sum() + alphas.square().sum()).backward()
        return [rgbd.detach(), alphas.detach(), *(p.grad for p in params)]

    blocks = run()
    monkeypatch.setattr(rasterize_module, "BLOCK_SIZE", 16)
    tiles = run()
    for a, b in zip(blocks, tiles):
        assert a.dtype == torch.float64 and b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9 * float(b.abs().max()))


def test_gradients_finite_and_nonzero():
    means, quats, scales, opacities, shs = random_scene(40, seed=7)
    shs = torch.randn(40, 16, 3, generator=torch.Generator().manual_seed(0)) * 0.3
    viewmats, Ks = orbit(24, 24, azimuths=(0.0, 180.0))
    means[0] = torch.linalg.inv(viewmats[0])[:3, 3] * 1.05  # behind camera 0 (culled), in front of camera 1
    params = [x.clone().requires_grad_(True) for x in (means, quats, scales, opacities, shs)]
    rgbd, alphas, meta = rasterize_cpu(*params, viewmats, Ks, 24, 24, sh_degree=3, backgrounds=torch.ones(2, 3))
    meta["means2d"].retain_grad()  # what gsplat's densification strategy reads
    (rgbd.square().sum() + alphas.sum()).backward()
    assert meta["radii"][0, 0] == 0 and meta["radii"][1, 0] > 0
    for name, p in zip(["means", "quats", "scales", "opacities", "shs"], params):
        assert torch.isfinite(p.grad).all(), name
        assert (p.grad.abs().sum(-1) > 0 if p.dim() > 1 else p.grad.abs() > 0).float().mean() > 0.5, name
    assert torch.isfinite(meta["means2d"].grad).all() and meta["means2d"].grad.abs().sum() > 0


def test_packed_matches_unpacked_and_antialiased_dims():
    scene = random_scene(30, seed=11)
    viewmats, Ks = orbit(32, 16, azimuths=(0.0, 200.0))
    full = rasterize_cpu(*scene, viewmats, Ks, 32, 16)
    packed = rasterize_cpu(*scene, viewmats, Ks, 32, 16, packed=True)
    torch.testing.assert_close(packed[0], full[0])
    torch.testing.assert_close(packed[1], full[1])
    meta, pmeta = full[2], packed[2]
    nnz = int((meta["radii"] > 0).sum())
    assert pmeta["means2d"].shape == (nnz, 2) and pmeta["camera_ids"].shape == (nnz,)
    torch.testing.assert_close(pmeta["depths"], meta["depths"][pmeta["camera_ids"], pmeta["gaussian_ids"]])
    _, aa_alphas, _ = rasterize_cpu(*scene, viewmats, Ks, 32, 16, rasterize_mode="antialiased")
    assert (aa_alphas <= full[1] + 1e-6).all() and aa_alphas.sum() < full[1].sum()


def test_rejects_unknown_modes():
    scene = random_scene(2, seed=0)
    viewmats, Ks = orbit(8, 8)
    with pytest.raises(ValueError, match="unknown render_mode 'RGBD'; choose one of: RGB, D, ED"):
        rasterize_cpu(*scene, viewmats, Ks, 8, 8, render_mode="RGBD")
    with pytest.raises(ValueError, match="sh_degree 4 is not supported"):
        rasterize_cpu(*scene[:4], torch.zeros(2, 25, 3), viewmats, Ks, 8, 8, sh_degree=4)


def test_rasterize_falls_back_to_cpu_for_cpu_tensors():
    scene = random_scene(10, seed=2)
    viewmats, Ks = orbit(16, 16)
    got, want = rasterize(*scene, viewmats, Ks, 16, 16), rasterize_cpu(*scene, viewmats, Ks, 16, 16)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


@pytest.mark.cuda
def test_cpu_path_matches_gsplat_on_cuda():
    gsplat = pytest.importorskip("gsplat")
    means, quats, scales, opacities, colors = random_scene(500, seed=13)
    scales = scales * 0.5
    viewmats, Ks = orbit(64, 48, azimuths=(10.0, 130.0))
    bg = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    kwargs = dict(render_mode="RGB+ED", packed=False)

    def run(fn, device):
        params = [x.detach().to(device).clone().requires_grad_(True) for x in (means, quats, scales, opacities, colors)]
        rgbd, alphas, _ = fn(*params, viewmats.to(device), Ks.to(device), 64, 48, backgrounds=bg.to(device), **kwargs)
        weights = torch.linspace(0.5, 1.5, rgbd.numel(), device=device).reshape(rgbd.shape)
        ((rgbd[..., :3] * weights[..., :3]).sum() + alphas.sum()).backward()
        return [t.detach().cpu() for t in (rgbd, alphas, *(p.grad for p in params))]

    ours = run(rasterize_cpu, "cpu")
    theirs = run(gsplat.rasterization, "cuda")
    names = ["rgb+ed", "alpha", "d_means", "d_quats", "d_scales", "d_opacities", "d_colors"]
    report = {}
    for name, a, b in zip(names, ours, theirs):
        if name == "rgb+ed":  # expected depth is ill-conditioned where alpha ~ 0: compare it where covered
            covered = ours[1][..., 0] > 0.05
            report["rgb"] = (a[..., :3] - b[..., :3]).abs().max().item()
            report["ed"] = (a[..., 3] - b[..., 3])[covered].abs().max().item()
            continue
        report[name] = (a - b).abs().max().item()
        report[name + " (rel L2)"] = ((a - b).norm() / b.norm().clamp(min=1e-12)).item()
    print("max |rasterize_cpu - gsplat|:", {k: f"{v:.2e}" for k, v in report.items()})
    assert report["rgb"] < 1e-2 and report["alpha"] < 1e-2 and report["ed"] < 1e-2
    for name in names[2:]:
        assert report[name + " (rel L2)"] < 2e-2, name

"""The toyworld ray caster against closed-form answers: silhouettes, depths, normals, Lambertian shading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lods.toyworld import grammar, render
from lods.toyworld.grammar import parse_caption
from lods.toyworld.render import (
    AMBIENT,
    BACKGROUND,
    DEFAULT_DISTANCE,
    DIFFUSE,
    EVAL_VIEWS,
    LIGHT_DIRECTION,
    default_cameras,
    render_caption,
    render_scene,
)
from tests.tolerances import sum_atol

ODD = 65  # an odd size puts the centre pixel's ray (supersample 1) exactly on the optical axis
CENTRE = ODD // 2


def lit(colour: tuple[float, float, float], normal: tuple[float, float, float]) -> torch.Tensor:
    """The Lambertian formula the renderer promises, evaluated by hand."""
    n_dot_l = max(0.0, sum(n * light for n, light in zip(normal, LIGHT_DIRECTION)))
    return torch.tensor(colour) * (AMBIENT + DIFFUSE * n_dot_l)


def direction_to_camera(azimuth: float, elevation: float) -> torch.Tensor:
    az, el = math.radians(azimuth), math.radians(elevation)
    return torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


VIEWS = [(0.0, 0.0), (90.0, 15.0), (200.0, -20.0), (315.0, 60.0), (0.0, 90.0)]


def test_sphere_silhouette_area_matches_the_projection():
    gt = render_caption("a red sphere", [a for a, _ in VIEWS], [e for _, e in VIEWS], size=64)
    cameras = default_cameras(0.0, 0.0, 64)
    focal = cameras.intrinsics()[0, 1, 1].item()
    r, d = grammar.SPHERE_RADIUS, DEFAULT_DISTANCE
    radius_px = focal * r / math.sqrt(d * d - r * r)  # tangent cone of a centred sphere: a circle
    expected = math.pi * radius_px**2
    for area in gt.alpha.sum((1, 2, 3)).tolist():
        assert area == pytest.approx(expected, rel=0.03)
    assert torch.equal(gt.alpha, gt.object_alpha)


def test_sphere_centre_depth_and_normal():
    gt = render_caption("a red sphere", [a for a, _ in VIEWS], [e for _, e in VIEWS], size=ODD, supersample=1)
    for i, (az, el) in enumerate(VIEWS):
        assert gt.depth[i, 0, CENTRE, CENTRE].item() == pytest.approx(
            DEFAULT_DISTANCE - grammar.SPHERE_RADIUS, abs=1e-4
        )
        normal = gt.normal[i, :, CENTRE, CENTRE]
        assert torch.allclose(normal, direction_to_camera(az, el), atol=1e-4)
    # With supersampling the centre pixel averages nearby rays: still within a pixel's worth of curvature.
    gt3 = render_caption("a red sphere", 0.0, 15.0, size=ODD)
    assert gt3.depth[0, 0, CENTRE, CENTRE].item() == pytest.approx(DEFAULT_DISTANCE - grammar.SPHERE_RADIUS, abs=2e-3)


@pytest.mark.parametrize(
    ("azimuth", "elevation", "face"),
    [
        (0.0, 0.0, (1, 0, 0)),
        (90.0, 0.0, (0, 1, 0)),
        (180.0, 0.0, (-1, 0, 0)),
        (270.0, 0.0, (0, -1, 0)),
        (30.0, 90.0, (0, 0, 1)),
    ],
)
def test_cube_face_colour_is_lambertian(azimuth, elevation, face):
    gt = render_caption("a red cube", azimuth, elevation, size=ODD)
    patch = gt.rgb[0, :, CENTRE - 3 : CENTRE + 4, CENTRE - 3 : CENTRE + 4]  # well inside the facing face
    expected = lit(grammar.COLOURS["red"], face)
    assert torch.allclose(patch, expected[:, None, None].expand_as(patch), atol=1e-5)
    assert torch.allclose(gt.normal[0, :, CENTRE, CENTRE], torch.tensor(face, dtype=torch.float32), atol=1e-5)
    assert gt.depth[0, 0, CENTRE, CENTRE].item() == pytest.approx(DEFAULT_DISTANCE - grammar.CUBE_HALF, abs=1e-4)


def test_the_back_face_gets_ambient_light_only():
    assert LIGHT_DIRECTION[0] > 0  # the light comes from the front half
    gt = render_caption("a blue cube", 180.0, 0.0, size=ODD)
    expected = torch.tensor(grammar.COLOURS["blue"]) * AMBIENT
    assert torch.allclose(gt.rgb[0, :, CENTRE, CENTRE], expected, atol=1e-6)


CONE_SLANT = math.hypot(2 * grammar.CONE_HALF_HEIGHT, grammar.CONE_RADIUS)


@pytest.mark.parametrize(
    ("caption", "front_depth", "front_normal", "top_depth"),
    [
        ("a red cylinder", grammar.CYLINDER_RADIUS, (1.0, 0.0, 0.0), grammar.CYLINDER_HALF_HEIGHT),
        # Mid-height radius; the side normal leans up by the cone's slope; the apex is on top.
        (
            "a red cone",
            grammar.CONE_RADIUS / 2,
            (2 * grammar.CONE_HALF_HEIGHT / CONE_SLANT, 0.0, grammar.CONE_RADIUS / CONE_SLANT),
            grammar.CONE_HALF_HEIGHT,
        ),
        ("a red torus", grammar.TORUS_MAJOR + grammar.TORUS_MINOR, (1.0, 0.0, 0.0), None),  # from above: the hole
    ],
)
def test_centre_depths_of_the_other_shapes(caption, front_depth, front_normal, top_depth):
    gt = render_caption(caption, [0.0, 0.0], [0.0, 90.0], size=ODD, supersample=1)
    assert gt.depth[0, 0, CENTRE, CENTRE].item() == pytest.approx(DEFAULT_DISTANCE - front_depth, abs=1e-3)
    assert torch.allclose(gt.normal[0, :, CENTRE, CENTRE], torch.tensor(front_normal), atol=1e-3)
    if top_depth is None:
        assert gt.alpha[1, 0, CENTRE, CENTRE].item() == 0.0
        assert gt.depth[1, 0, CENTRE, CENTRE].item() == 0.0
    else:
        assert gt.depth[1, 0, CENTRE, CENTRE].item() == pytest.approx(DEFAULT_DISTANCE - top_depth, abs=1e-3)


def test_torus_sphere_tracing_matches_the_quartic():
    """Depths of the sphere-traced torus against float64 roots of the torus quartic, ray by ray."""
    cameras = default_cameras([20.0, 0.0], [35.0, 90.0], 24)
    origins, dirs = render.camera_rays(cameras)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    t, _ = render.intersect_torus(o, d)
    R, r = grammar.TORUS_MAJOR, grammar.TORUS_MINOR
    hits = 0
    for oi, di, ti in zip(o.double().numpy(), d.double().numpy(), t.tolist()):
        # (|p|^2 + R^2 - r^2)^2 = 4 R^2 (x^2 + y^2), p = o + t d, |d| = 1
        od, oo = oi @ di, oi @ oi
        k = oo + R * R - r * r
        coefficients = [
            1.0,
            4 * od,
            2 * k + 4 * od * od - 4 * R * R * (di[0] ** 2 + di[1] ** 2),
            4 * k * od - 8 * R * R * (oi[0] * di[0] + oi[1] * di[1]),
            k * k - 4 * R * R * (oi[0] ** 2 + oi[1] ** 2),
        ]
        roots = np.roots(coefficients)
        real = sorted(x.real for x in roots if abs(x.imag) < 1e-6 and x.real > 0)
        if not real:
            assert math.isinf(ti)
            continue
        if abs(np.polyval(np.polyder(coefficients), real[0])) < 1e-2:
            continue  # a grazing (double) root: an edge ray, either answer is acceptable
        hits += 1
        assert ti == pytest.approx(real[0], abs=1e-3)
    assert hits > 50


def test_front_marker_is_seen_from_the_front_only():
    gt = render_caption("a red cube with a blue front", [0.0, 180.0, 90.0], [0.0, 0.0, 0.0], size=ODD)
    assert gt.marker[0].sum() > 0.5 * gt.object_alpha[0].sum()
    assert gt.marker[1].sum() == 0 and gt.marker[2].sum() == 0
    assert torch.allclose(gt.rgb[0, :, CENTRE, CENTRE], lit(grammar.COLOURS["blue"], (1, 0, 0)), atol=1e-5)
    assert torch.allclose(gt.rgb[1, :, CENTRE, CENTRE], lit(grammar.COLOURS["red"], (-1, 0, 0)), atol=1e-5)
    sphere = render_caption("a green sphere with a yellow front", [0.0, 180.0], [15.0, 15.0])
    assert sphere.marker[0].sum() > 0 and sphere.marker[1].sum() == 0


def test_patterns_show_both_colours():
    charcoal = torch.tensor(grammar.PATTERN_COLOUR)
    for caption in ("a striped red sphere", "a checkered red cube"):
        gt = render_caption(caption, 30.0, 15.0, supersample=1)
        pixels = gt.rgb[0].permute(1, 2, 0)[gt.alpha[0, 0] > 0]
        # Lambertian shades of a colour are multiples of it: test the chromaticity, not the brightness.
        chroma = pixels / pixels.sum(-1, keepdim=True)
        is_charcoal = (chroma - charcoal / charcoal.sum()).abs().amax(-1) < 1e-4
        red = torch.tensor(grammar.COLOURS["red"])
        is_red = (chroma - red / red.sum()).abs().amax(-1) < 1e-4
        assert is_charcoal.float().mean() > 0.2 and is_red.float().mean() > 0.2
        assert (is_charcoal | is_red).all()


def test_floor_and_wall():
    floor = render_caption("a red cube on a blue floor", 0.0, 90.0, size=ODD, supersample=1)
    # Overhead, the floor shows around the cube: a pixel between the cube and the floor's edge.
    column = CENTRE + 14
    assert floor.object_alpha[0, 0, CENTRE, column] == 0 and floor.alpha[0, 0, CENTRE, column] == 1
    assert torch.allclose(floor.rgb[0, :, CENTRE, column], lit(grammar.COLOURS["blue"], (0, 0, 1)), atol=1e-5)
    assert torch.allclose(floor.normal[0, :, CENTRE, column], torch.tensor([0.0, 0.0, 1.0]))

    wall = render_caption("a red sphere in front of a checkered blue wall", [0.0, 180.0], [15.0, 15.0], size=ODD)
    behind = wall.alpha[0, 0] - wall.object_alpha[0, 0]  # wall pixels in the front view
    assert behind.sum() > 0.5 * wall.object_alpha[0].sum()
    wall_normals = wall.normal[0].permute(1, 2, 0)[behind == 1]
    assert torch.allclose(wall_normals, torch.tensor([1.0, 0.0, 0.0]).expand_as(wall_normals), atol=1e-5)
    assert wall.object_alpha[1].sum() == 0  # from the back, the wall hides the object
    assert torch.allclose(wall.normal[1, :, CENTRE, CENTRE], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-5)


def test_every_scene_fits_in_frame():
    """The largest scenes of each kind leave the image border empty from any azimuth, elevation -30..90."""
    captions = [
        "a red sphere on a blue floor",
        "a red sphere in front of a blue wall",
        "a red cube",
        "a red sphere on top of a red sphere on top of a red sphere",
        "a red torus, a red torus and a red torus in a row",
        "a red torus to the left of a red torus",
        "a red torus in front of a red torus",
    ]
    azimuths, elevations = torch.meshgrid(torch.arange(0, 360, 45.0), torch.arange(-30, 91, 30.0), indexing="ij")
    cameras = default_cameras(azimuths.reshape(-1), elevations.reshape(-1), 64)
    for caption in captions:
        alpha = render_scene(parse_caption(caption), cameras, supersample=1).alpha[:, 0]
        alpha[:, 2:-2, 2:-2] = 0  # keep a 2-pixel border
        assert alpha.sum() == 0, caption


def test_output_contract():
    gt = render_caption(
        "a striped purple torus with a green front on a checkered white floor", [0.0, 45.0, 180.0], 15.0
    )
    assert gt.rgb.shape == (3, 3, 64, 64) and gt.normal.shape == (3, 3, 64, 64)
    for field in (gt.alpha, gt.depth, gt.object_alpha, gt.marker):
        assert field.shape == (3, 1, 64, 64)
    assert gt.rgb.min() >= 0 and gt.rgb.max() <= 1 and torch.isfinite(gt.depth).all()
    assert set((gt.alpha * 9).round().unique().tolist()) <= set(range(10))  # coverage of 3x3 sub-samples
    empty = gt.alpha == 0
    assert torch.equal(gt.rgb[:, :, 0, 0], torch.tensor(BACKGROUND).expand(3, 3))
    assert (gt.depth[empty] == 0).all() and (gt.normal * empty).abs().sum() == 0
    assert (gt.marker <= gt.object_alpha + 1e-6).all() and (gt.object_alpha <= gt.alpha + 1e-6).all()
    lengths = gt.normal.norm(dim=1, keepdim=True)[gt.alpha == 1]
    assert torch.allclose(lengths, torch.ones_like(lengths), atol=1e-5)


def test_batch_equals_one_view_at_a_time():
    views = EVAL_VIEWS[:3]
    batch = render_caption("a checkered orange cone with a blue front", [a for a, _ in views], [e for _, e in views])
    for i, (az, el) in enumerate(views):
        single = render_caption("a checkered orange cone with a blue front", az, el)
        # Rays are built element by element (lods.cameras.camera_rays) and traced per ray, so batching changes
        # nothing before the box filter; that sums 3x3 sub-samples of colours <= 1 (bound: sum_atol(9, 1.0)).
        torch.testing.assert_close(batch.rgb[i], single.rgb[0], rtol=0, atol=sum_atol(9, 1.0))


def test_eval_views():
    assert EVAL_VIEWS[0] == (0.0, 15.0) and len(EVAL_VIEWS) == 8
    assert len({az for az, _ in EVAL_VIEWS}) == 8

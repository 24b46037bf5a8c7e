"""Analytic ray caster for toyworld scenes: batched over cameras, anti-aliased by supersampling, CPU-fast.

Conventions (``lods.cameras``): world +z up, front faces +x, OpenGL camera-to-world matrices, rays through
pixel centres, row 0 at the image top. Each output pixel averages ``supersample**2`` rays on a regular
sub-pixel grid (a box filter).

Appearance is view-independent: Lambertian shading with a fixed world-space directional light and an
ambient term, ``rgb = albedo * (AMBIENT + DIFFUSE * max(0, n . LIGHT_DIRECTION))`` computed directly on the
sRGB albedos of ``grammar.COLOURS``; no shadows, no specular. Rays that hit nothing take ``BACKGROUND``.
Floor and wall are thin two-sided surfaces (their normal faces the camera). Since AMBIENT + DIFFUSE < 1 and
every albedo is <= 0.95, every lit surface differs from the white background by >= 0.09 in some channel,
which is what lets ``metrics`` recover a foreground mask from colour alone.

Primitives (object space, see ``grammar``): sphere, cube, capped cylinder and capped cone are intersected in
closed form; the torus is sphere-traced on its exact SDF for a fixed number of steps, from where the ray
enters its bounding sphere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from lods.cameras import Cameras, camera_rays, orbit_cameras
from lods.toyworld import grammar
from lods.toyworld.grammar import Backdrop, ObjectSpec, Scene

BACKGROUND = (1.0, 1.0, 1.0)
DEFAULT_DISTANCE = 3.0
DEFAULT_FOVY_DEG = 45.0
DEFAULT_SIZE = 64
SUPERSAMPLE = 3
LIGHT_DIRECTION = tuple(
    v / math.sqrt(0.5**2 + 0.3**2 + 1.0) for v in (0.5, 0.3, 1.0)
)  # from above, the front and the front viewer's right
AMBIENT = 0.45
DIFFUSE = 0.5
EVAL_ELEVATION = 15.0
# (azimuth, elevation) in degrees: 8 azimuths around the object, starting at the front (azimuth 0).
EVAL_VIEWS: tuple[tuple[float, float], ...] = tuple((float(az), EVAL_ELEVATION) for az in range(0, 360, 45))

STRIPES = 16  # meridian stripes around an object's vertical axis
CHECKER_CELL = 1 / 6  # object-space checker cell (scale 1); cells are offset by half so no face lies on a seam
BACKDROP_CELL = 0.2  # world-space stripe width / checker cell of floors and walls
MARKER_COS = math.cos(math.radians(45.0))  # front marker: outward normal within 45 degrees of +x
TORUS_STEPS = 48
TORUS_EPS = 1e-4  # sphere-tracing hit threshold, object-space units
_NO_HIT = math.inf


@dataclass
class GroundTruth:
    """A rendered batch. Shapes [B, C, H, W]; every value is the mean over a pixel's sub-samples.

    rgb:          [B, 3, H, W] in [0, 1], composited over BACKGROUND.
    alpha:        [B, 1, H, W] fraction of sub-samples that hit anything (objects, floor or wall).
    depth:        [B, 1, H, W] mean ray distance (along the unit ray, from the camera centre) over the
                  sub-samples that hit; 0 where alpha == 0 (no hit), never inf.
    normal:       [B, 3, H, W] world-space unit normal, the renormalised mean over hitting sub-samples;
                  for floor and wall the side facing the camera; 0 where alpha == 0.
    object_alpha: [B, 1, H, W] fraction of sub-samples whose first hit is an object (not floor or wall).
    marker:       [B, 1, H, W] fraction of sub-samples whose first hit is a front marker.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor
    object_alpha: Tensor
    marker: Tensor

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def __getitem__(self, index) -> GroundTruth:
        def pick(x: Tensor) -> Tensor:
            return x[index : index + 1] if isinstance(index, int) else x[index]

        return GroundTruth(*(pick(getattr(self, f.name)) for f in fields(self)))


# ----------------------------------------------------------------------------------------------------------
# Ray-primitive intersections in object space. Inputs: origins o [N, 3], unit directions d [N, 3].
# Outputs: ray distance t [N] (inf on a miss) and outward unit normal n [N, 3] (finite everywhere).


def _hits(t: Tensor, valid: Tensor) -> Tensor:
    return torch.where(valid & (t > 0), t, torch.full_like(t, _NO_HIT))


def _nearest(*candidates: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Per ray, the candidate (t, n) with the smallest t (entry point of a convex solid seen from outside)."""
    t, n = candidates[0]
    for t_k, n_k in candidates[1:]:
        closer = t_k < t
        t, n = torch.where(closer, t_k, t), torch.where(closer[:, None], n_k, n)
    return t, n


def _point(o: Tensor, d: Tensor, t: Tensor) -> Tensor:
    return o + torch.where(torch.isfinite(t), t, torch.zeros_like(t))[:, None] * d


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return num / torch.where(den.abs() < 1e-12, torch.full_like(den, 1e-12), den)


def _quadratic(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Roots of a t^2 + 2 b t + c = 0 (numerically stable form) and whether they are real."""
    disc = b * b - a * c
    sq = disc.clamp_min(0).sqrt()
    q = -(b + torch.where(b >= 0, sq, -sq))
    return _safe_div(q, a), _safe_div(c, q), disc >= 0


def _cap(o: Tensor, d: Tensor, z: float, radius: float) -> tuple[Tensor, Tensor]:
    """A disc of this radius in the plane z = const, normal +z if z > 0 else -z (a solid's top or bottom)."""
    t = _safe_div(z - o[:, 2], d[:, 2])
    p = _point(o, d, t)
    t = _hits(t, p[:, 0] ** 2 + p[:, 1] ** 2 <= radius**2)
    n = torch.tensor([0.0, 0.0, 1.0 if z > 0 else -1.0], dtype=o.dtype, device=o.device).expand_as(o)
    return t, n


def intersect_sphere(o: Tensor, d: Tensor, radius: float = grammar.SPHERE_RADIUS) -> tuple[Tensor, Tensor]:
    t_near, t_far, real = _quadratic(torch.ones_like(o[:, 0]), (o * d).sum(-1), (o * o).sum(-1) - radius**2)
    t = _hits(torch.minimum(t_near, t_far), real)
    return t, _point(o, d, t) / radius


def intersect_box(o: Tensor, d: Tensor, half: float = grammar.CUBE_HALF) -> tuple[Tensor, Tensor]:
    t1, t2 = _safe_div(-half - o, d), _safe_div(half - o, d)  # slab method
    t_in = torch.minimum(t1, t2).amax(-1)
    t_out = torch.maximum(t1, t2).amin(-1)
    t = _hits(t_in, t_in <= t_out)
    p = _point(o, d, t)
    axis = p.abs().argmax(-1)
    n = F.one_hot(axis, 3).to(o.dtype) * p.sign()
    return t, n


def intersect_cylinder(
    o: Tensor, d: Tensor, radius: float = grammar.CYLINDER_RADIUS, half_height: float = grammar.CYLINDER_HALF_HEIGHT
) -> tuple[Tensor, Tensor]:
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - radius**2
    t_near, t_far, real = _quadratic(a, b, c)
    t_side = torch.minimum(t_near, t_far)
    p = _point(o, d, t_side)
    t_side = _hits(t_side, real & (a > 1e-12) & (p[:, 2].abs() <= half_height))
    n_side = torch.stack([p[:, 0] / radius, p[:, 1] / radius, torch.zeros_like(a)], -1)
    return _nearest((t_side, n_side), _cap(o, d, half_height, radius), _cap(o, d, -half_height, radius))


def intersect_cone(
    o: Tensor, d: Tensor, radius: float = grammar.CONE_RADIUS, half_height: float = grammar.CONE_HALF_HEIGHT
) -> tuple[Tensor, Tensor]:
    """Capped cone: base disc at z = -half_height, apex at z = +half_height."""
    k2 = (radius / (2 * half_height)) ** 2
    w = half_height - o[:, 2]  # apex height above the origin
    # x^2 + y^2 = k^2 (apex_z - z)^2 along the ray; the z range keeps the lower nappe only.
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] + k2 * w * d[:, 2]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * w**2
    t1, t2, real = _quadratic(a, b, c)
    candidates = [_cap(o, d, -half_height, radius)]
    for t_k in (t1, t2):
        p = _point(o, d, torch.where(real, t_k, torch.zeros_like(t_k)))
        t_k = _hits(t_k, real & torch.isfinite(t_k) & (p[:, 2].abs() <= half_height + 1e-5))  # slack: the apex
        n_k = torch.stack([p[:, 0], p[:, 1], k2 * (half_height - p[:, 2])], -1)
        candidates.append((t_k, F.normalize(n_k, dim=-1)))
    return _nearest(*candidates)


def torus_sdf(p: Tensor, major: float = grammar.TORUS_MAJOR, minor: float = grammar.TORUS_MINOR) -> Tensor:
    """Signed distance to a torus lying flat (axis +z), centred at the origin."""
    ring = torch.sqrt(p[..., 0] ** 2 + p[..., 1] ** 2) - major
    return torch.sqrt(ring**2 + p[..., 2] ** 2) - minor


def intersect_torus(
    o: Tensor, d: Tensor, major: float = grammar.TORUS_MAJOR, minor: float = grammar.TORUS_MINOR
) -> tuple[Tensor, Tensor]:
    bound = major + minor + 1e-3
    t_near, t_far, real = _quadratic(torch.ones_like(o[:, 0]), (o * d).sum(-1), (o * o).sum(-1) - bound**2)
    t = torch.full_like(t_near, _NO_HIT)
    n = torch.zeros_like(o)
    idx = torch.nonzero(real & (t_far > 0)).squeeze(-1)  # sphere-trace only rays that enter the bound
    if idx.numel() == 0:
        return t, n
    o_in, d_in, t_exit = o[idx], d[idx], torch.maximum(t_near, t_far)[idx]
    t_in = torch.minimum(t_near, t_far)[idx].clamp_min(0)
    for _ in range(TORUS_STEPS):  # the SDF is exact, so each step stays in front of the surface
        t_in = t_in + torus_sdf(o_in + t_in[:, None] * d_in, major, minor)
    p = o_in + t_in[:, None] * d_in
    hit = (torus_sdf(p, major, minor) < TORUS_EPS) & (t_in < t_exit)
    ring = F.normalize(torch.stack([p[:, 0], p[:, 1], torch.zeros_like(t_in)], -1), dim=-1) * major
    t[idx] = torch.where(hit, t_in, torch.full_like(t_in, _NO_HIT))
    n[idx] = F.normalize(p - ring, dim=-1)
    return t, n


INTERSECT = {
    "sphere": intersect_sphere,
    "cube": intersect_box,
    "cylinder": intersect_cylinder,
    "cone": intersect_cone,
    "torus": intersect_torus,
}


def intersect_floor(o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    t = _safe_div(grammar.FLOOR_Z - o[:, 2], d[:, 2])
    p = _point(o, d, t)
    t = _hits(t, p[:, 0] ** 2 + p[:, 1] ** 2 <= grammar.FLOOR_RADIUS**2)
    side = torch.where(o[:, 2] >= grammar.FLOOR_Z, 1.0, -1.0)  # two-sided: the normal faces the camera
    return t, F.pad(side[:, None], (2, 0))


def intersect_wall(o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    t = _safe_div(grammar.WALL_X - o[:, 0], d[:, 0])
    p = _point(o, d, t)
    z_min, z_max = grammar.WALL_Z_RANGE
    t = _hits(t, (p[:, 1].abs() <= grammar.WALL_HALF_WIDTH) & (p[:, 2] >= z_min) & (p[:, 2] <= z_max))
    side = torch.where(o[:, 0] >= grammar.WALL_X, 1.0, -1.0)
    return t, F.pad(side[:, None], (0, 2))


# ----------------------------------------------------------------------------------------------------------
# Materials: albedo at a surface point (patterns live in object space for objects, world space for backdrops).


def _parity(*coords: Tensor, cell: float) -> Tensor:
    """1 on odd cells of a checkerboard (or stripes, with one coordinate) with cells centred on 0, else 0."""
    total = sum(torch.floor(c / cell + 0.5) for c in coords)
    return torch.remainder(total, 2)


def _vec(values: tuple[float, float, float], like: Tensor) -> Tensor:
    """A constant 3-vector (colour, position, direction) on like's device and dtype."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _patterned(base: str, odd: Tensor | None, like: Tensor) -> Tensor:
    colour = _vec(grammar.COLOURS[base], like).expand(like.shape[0], 3)
    if odd is None:
        return colour
    return torch.where(odd[:, None] > 0, _vec(grammar.PATTERN_COLOUR, like), colour)


def object_albedo(obj: ObjectSpec, p: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """Albedo [N, 3] at object-space points p [N, 3] with normals n, and whether each is on the front marker."""
    odd = None
    if obj.surface == "striped":
        odd = _parity(torch.atan2(p[:, 1], p[:, 0]), cell=2 * math.pi / STRIPES)
    elif obj.surface == "checkered":
        odd = _parity(p[:, 0], p[:, 1], p[:, 2], cell=CHECKER_CELL)
    albedo = _patterned(obj.colour, odd, p)
    marker = torch.zeros_like(p[:, 0], dtype=torch.bool)
    if obj.marker_colour is not None:
        marker = n[:, 0] > MARKER_COS
        albedo = torch.where(marker[:, None], _vec(grammar.COLOURS[obj.marker_colour], p), albedo)
    return albedo, marker


def backdrop_albedo(backdrop: Backdrop, kind: str, p: Tensor) -> Tensor:
    """Albedo of a floor (stripes run along x, checker in x-y) or a wall (vertical stripes, checker in y-z)."""
    u, v = (p[:, 1], p[:, 0]) if kind == "floor" else (p[:, 1], p[:, 2])
    odd = None
    if backdrop.surface == "striped":
        odd = _parity(u, cell=BACKDROP_CELL)
    elif backdrop.surface == "checkered":
        odd = _parity(u, v, cell=BACKDROP_CELL)
    return _patterned(backdrop.colour, odd, p)


# ----------------------------------------------------------------------------------------------------------
# Rendering.


@dataclass
class RayHits:
    """First hits of N rays: t [N] (world ray distance, inf on a miss), normal [N, 3] (0 on a miss),
    rgb [N, 3] (shaded; BACKGROUND on a miss), and [N] bools hit / is_object / is_marker."""

    t: Tensor
    normal: Tensor
    rgb: Tensor
    hit: Tensor
    is_object: Tensor
    is_marker: Tensor


def intersect_object(obj: ObjectSpec, origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
    """World-space (t, normal) of rays [N, 3] with a placed object; only rays that meet its bounding sphere
    are intersected (most rays of a frame miss any one object)."""
    local = (origins - _vec(obj.position, origins)) / obj.scale  # uniform scale: directions stay unit
    bound = math.hypot(*grammar.HALF_EXTENTS[obj.shape]) + 1e-3
    _, t_far, real = _quadratic(
        torch.ones_like(local[:, 0]), (local * dirs).sum(-1), (local * local).sum(-1) - bound**2
    )
    idx = torch.nonzero(real & (t_far > 0)).squeeze(-1)
    t = torch.full_like(local[:, 0], _NO_HIT)
    normal = torch.zeros_like(local)
    if idx.numel():
        t_in, normal[idx] = INTERSECT[obj.shape](local[idx], dirs[idx])
        t[idx] = t_in * obj.scale  # object-space distance -> world distance
    return t, normal


def trace(scene: Scene, origins: Tensor, dirs: Tensor) -> RayHits:
    """First hits of rays [N, 3] with a scene, shaded."""
    surfaces: list[tuple[str, ObjectSpec | Backdrop]] = [("object", obj) for obj in scene.objects]
    if scene.floor is not None:
        surfaces.append(("floor", scene.floor))
    if scene.wall is not None:
        surfaces.append(("wall", scene.wall))
    t = torch.full_like(origins[:, 0], _NO_HIT)
    normal = torch.zeros_like(origins)
    which = torch.full_like(t, -1, dtype=torch.long)
    for k, (kind, spec) in enumerate(surfaces):
        if kind == "object":
            t_k, n_k = intersect_object(spec, origins, dirs)
        else:
            t_k, n_k = (intersect_floor if kind == "floor" else intersect_wall)(origins, dirs)
        closer = t_k < t
        t, normal, which = (
            torch.where(closer, t_k, t),
            torch.where(closer[:, None], n_k, normal),
            which.masked_fill(closer, k),
        )

    hit = which >= 0
    albedo = torch.zeros_like(origins)
    is_marker = torch.zeros_like(hit)
    points = _point(origins, dirs, t)
    for k, (kind, spec) in enumerate(surfaces):
        mask = which == k
        if not mask.any():
            continue
        if kind == "object":
            local = (points[mask] - _vec(spec.position, origins)) / spec.scale
            albedo[mask], is_marker[mask] = object_albedo(spec, local, normal[mask])
        else:
            albedo[mask] = backdrop_albedo(spec, kind, points[mask])
    light = _vec(LIGHT_DIRECTION, origins)
    shading = AMBIENT + DIFFUSE * (normal @ light).clamp_min(0)
    rgb = torch.where(hit[:, None], albedo * shading[:, None], _vec(BACKGROUND, origins))
    return RayHits(t, normal, rgb, hit, hit & (which < len(scene.objects)), is_marker)


def render_scene(scene: Scene, cameras: Cameras, supersample: int = SUPERSAMPLE) -> GroundTruth:
    """Render a scene from a batch of cameras at cameras.height x cameras.width."""
    if supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    B, H, W, s = len(cameras), cameras.height, cameras.width, supersample
    fine = Cameras(
        cameras.c2w, cameras.fovy_deg, cameras.azimuth_deg, cameras.elevation_deg, cameras.distance, W * s, H * s
    )
    origins, dirs = camera_rays(fine)  # [B, Hs, Ws, 3]
    hits = trace(scene, origins.reshape(-1, 3), dirs.reshape(-1, 3))
    hit = hits.hit.to(dirs.dtype)

    def pool(x: Tensor) -> Tensor:  # [N, C] at sub-sample resolution -> [B, C, H, W] box-filtered
        x = x.reshape(B, H * s, W * s, -1).permute(0, 3, 1, 2)
        return F.avg_pool2d(x, s) if s > 1 else x

    alpha = pool(hit[:, None])
    covered = alpha > 0
    depth = pool(torch.where(hits.hit, hits.t, 0.0)[:, None]) / alpha.clamp_min(1e-12)
    normal = F.normalize(pool(hits.normal * hit[:, None]), dim=1)
    return GroundTruth(
        rgb=pool(hits.rgb).clamp(0, 1),
        alpha=alpha,
        depth=torch.where(covered, depth, 0.0),
        normal=torch.where(covered, normal, 0.0),
        object_alpha=pool(hits.is_object.to(dirs.dtype)[:, None]),
        marker=pool(hits.is_marker.to(dirs.dtype)[:, None]),
    )


def default_cameras(
    azimuth_deg: float | Sequence[float] | Tensor,
    elevation_deg: float | Sequence[float] | Tensor,
    size: int = DEFAULT_SIZE,
) -> Cameras:
    """Cameras at toyworld's fixed distance and field of view (square images of side ``size``)."""
    return orbit_cameras(
        torch.as_tensor(azimuth_deg, dtype=torch.float32),
        torch.as_tensor(elevation_deg, dtype=torch.float32),
        DEFAULT_DISTANCE,
        DEFAULT_FOVY_DEG,
        size,
        size,
    )


def eval_cameras(size: int = DEFAULT_SIZE, views: Sequence[tuple[float, float]] = EVAL_VIEWS) -> Cameras:
    """The evaluation cameras (EVAL_VIEWS by default), in order."""
    return default_cameras([az for az, _ in views], [el for _, el in views], size)


def render_caption(
    caption: str,
    azimuth_deg: float | Sequence[float] | Tensor,
    elevation_deg: float | Sequence[float] | Tensor,
    size: int = DEFAULT_SIZE,
    supersample: int = SUPERSAMPLE,
) -> GroundTruth:
    """Ground truth of a caption (a view suffix is ignored) from one or more (azimuth, elevation) views."""
    return render_scene(grammar.parse_caption(caption), default_cameras(azimuth_deg, elevation_deg, size), supersample)


def benchmark_fps(size: int = DEFAULT_SIZE, supersample: int = SUPERSAMPLE, repeats: int = 3) -> float:
    """Frames per second rendering the EVAL_VIEWS batch for one caption of each kind (torus included)."""
    captions = [
        "a checkered red cube with a yellow front",
        "a striped blue torus on a checkered white floor",
        "a green sphere in front of a striped purple wall",
        "an orange cone on top of a white cylinder on top of a blue torus",
    ]
    cameras = eval_cameras(size)
    scenes = [grammar.parse_caption(c) for c in captions]
    render_scene(scenes[0], cameras, supersample)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for scene in scenes:
            render_scene(scene, cameras, supersample)
    fps = repeats * len(scenes) * len(cameras) / (time.perf_counter() - start)
    print(
        f"toyworld render: {fps:.1f} frames/s at {size}x{size}, supersample {supersample}, "
        f"batches of {len(cameras)}, {torch.get_num_threads()} threads"
    )
    return fps

"""Score 2D results against the toyworld's ground truth, and measure the embedded prior's own samples.

A caption names a scene and, through its view suffix, a *range* of views ("front view" is any
azimuth within 45 degrees of the front below 60 degrees elevation; no suffix means any view). A 2D
result is therefore compared with the ground-truth render, among a grid of candidate cameras in
that range, that it matches best (lowest mean squared error), and the metrics are computed there.

An open caption (``grammar``, "Open captions") names a *set* of scenes; a 2D result is then scored against
the member of the set and the view that together match it best (lowest mean squared error over every
(member, candidate view) pair, ties to the first member in enumeration order, then the first view), and
the metrics name that member (``matched``, its full caption). A 3D result (:func:`best_scene_3d`) commits
to the one member with the lowest mean squared error over its evaluation views. Fully specified captions
take exactly the path they always took.

Matching a set is exact and affordable (:func:`screen_set`): renders are linear in the albedos, so for each
*geometry* of the set (shapes and layout; colours, patterns and fronts vary within it) the candidate views
are ray-traced once into a few shading maps (per object: front-marker region or not, times all / odd
stripes / odd checks; per backdrop: all / odd stripes / odd checks), every member's render at every view is
a linear combination of them, and every member's squared error against a result is a quadratic form in its
albedos (float64). This screening reproduces ``render.render_scene`` to within SCREEN_TOLERANCE per pixel
value (float32 rounding), so the member and view of least error are among the screened pairs within
SCREEN_MARGIN of the least screened error; those (at least SHORTLIST_MIN, at most SHORTLIST_MAX of them) are
rendered exactly and the least exact error wins.

    python -m lods.toyworld.evaluate --model lods/models/toyworld --captions 12   # prior sample quality
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lods.cameras import Cameras, camera_rays, view_direction
from lods.diffusion.model import DiffusionModel
from lods.toyworld import grammar, render
from lods.toyworld.data import ELEVATION_RANGE
from lods.toyworld.metrics import aggregate, diversity, image_metrics
from lods.toyworld.render import DEFAULT_SIZE, SUPERSAMPLE, GroundTruth, default_cameras, render_scene

AZIMUTH_STEP, ELEVATION_STEP = 15.0, 10.0
METRIC_KEYS = ("psnr", "ssim", "iou", "delta_e", "saturation_bias", "floater_mass")

# Set matching (see the module docstring).
_UNIT_ROUNDOFF = 2.0**-24  # float32
_MAX_MAPS = 9  # shading maps a pixel of a member's screened render combines (one object and a backdrop)
# A pooled pixel is a mean of SUPERSAMPLE^2 products in both the renderer and the screening, combined from at most
# _MAX_MAPS maps with a few more roundings: |screened - rendered| <= (2 s^2 + 2 maps + 8) u per pixel value.
SCREEN_TOLERANCE = (2 * SUPERSAMPLE**2 + 2 * _MAX_MAPS + 8) * _UNIT_ROUNDOFF
# Squared error of a value v against x moves by at most 2 |v - x| d + d^2 <= 2 d + d^2 when v moves by d (values in
# [0, 1]), so the exact best pair's screened MSE is within 2 (2 d + d^2) of the least screened MSE.
SCREEN_MARGIN = 2 * (2 * SCREEN_TOLERANCE + SCREEN_TOLERANCE**2)
SHORTLIST_MIN, SHORTLIST_MAX = 4, 32  # screened pairs rendered exactly (pairs within SCREEN_MARGIN, clipped)
VIEW_CHUNK = 24  # candidate views traced at once (memory: ~VIEW_CHUNK * (size * SUPERSAMPLE)^2 * 60 bytes)
TILE_PIXELS = 4  # rays are culled against each object's bounding sphere in tiles of TILE_PIXELS^2 pixels


def candidate_views(view: str | None) -> list[tuple[float, float]]:
    """(azimuth, elevation) grid of the views a caption's suffix allows (``None``: every view)."""
    azimuths = [-180.0 + AZIMUTH_STEP * i for i in range(int(360 / AZIMUTH_STEP))]
    lo, hi = ELEVATION_RANGE
    elevations = [lo + ELEVATION_STEP * i for i in range(int((hi - lo) / ELEVATION_STEP) + 1)]
    grid = list(itertools.product(azimuths, elevations))
    return [(a, e) for a, e in grid if view is None or view_direction(a, e) == view]


def _cameras(views: Sequence[tuple[float, float]], size: int) -> Cameras:
    return default_cameras([a for a, _ in views], [e for _, e in views], size)


def _pick_view(gt: GroundTruth, image: Tensor) -> int:
    errors = ((gt.rgb - image[None].to(gt.rgb)) ** 2).mean(dim=(1, 2, 3))
    return int(errors.argmin())


def _slice(gt: GroundTruth, i: int) -> GroundTruth:
    return GroundTruth(**{k: getattr(gt, k)[i : i + 1] for k in gt.__dataclass_fields__})


def best_view(image: Tensor, caption: str, size: int | None = None) -> tuple[GroundTruth, tuple[float, float]]:
    """The ground-truth render (and its view) closest to ``image`` [3, H, W] among the caption's views
    (for an open caption, among its members' views too: see :func:`best_match`)."""
    base, view = grammar.split_view_suffix(caption)
    if grammar.is_open(base):
        match = best_match(image, caption, size)
        return match.gt, match.view
    views = candidate_views(view)
    size = size or image.shape[-1]
    gt = render_scene(grammar.parse_caption(base), _cameras(views, size))
    i = _pick_view(gt, image)
    return _slice(gt, i), views[i]


@dataclass
class Match:
    """The ground truth a result is scored against: the render ``gt`` [1, ...] of ``scene`` at ``view``."""

    gt: GroundTruth
    view: tuple[float, float]
    scene: grammar.Scene

    @property
    def caption(self) -> str:
        return grammar.scene_caption(self.scene)


def best_match(image: Tensor, caption: str, size: int | None = None) -> Match:
    """The member of the caption's set and the view (in the suffix's range) that match ``image`` [3, H, W]
    best; for a fully specified caption, :func:`best_view` of its one scene."""
    (match,) = best_matches(image[None], caption, size)
    return match


def best_matches(images: Tensor, caption: str, size: int | None = None) -> list[Match]:
    """:func:`best_match` of each of ``images`` [N, 3, H, W] (the renders are shared)."""
    base, view = grammar.split_view_suffix(caption)
    views = candidate_views(view)
    size = size or images.shape[-1]
    images = images.float().cpu()
    spec = grammar.parse_open_caption(base)
    if not spec.is_open:  # exactly best_view's path, with one render for all the images
        scene = spec.scene()
        gt = render_scene(scene, _cameras(views, size))
        picks = [_pick_view(gt, image) for image in images]
        return [Match(_slice(gt, i), views[i], scene) for i in picks]
    scenes = grammar.consistent_scenes(spec)
    cameras = _cameras(views, size)
    matches = []
    for image, shortlist in zip(images, screen_set(scenes, cameras, images, joint=False)):
        # Exact renders of the shortlisted (member, view) pairs; the least error wins, ties to the first pair.
        best = None
        for member in sorted({m for _, m, _ in shortlist}):
            picked = sorted(v for _, m, v in shortlist if m == member)
            gt = render_scene(scenes[member], cameras[picked])
            errors = ((gt.rgb - image[None].to(gt.rgb)) ** 2).mean(dim=(1, 2, 3))
            for j, v in enumerate(picked):
                key = (errors[j].item(), member, v)
                if best is None or key < best[0]:
                    best = (key, _slice(gt, j))
        (_, member, v), gt = best
        matches.append(Match(gt, views[v], scenes[member]))
    return matches


def best_scene_3d(images: Tensor, caption: str, views: Sequence[tuple[float, float]]) -> grammar.Scene:
    """The one member of the caption's set whose renders at ``views`` ((azimuth, elevation) at toyworld's
    distance and field of view) match ``images`` [V, 3, H, W] best: least mean squared error over the views
    (ties to the first member). A fully specified caption's scene without any rendering."""
    spec = grammar.parse_open_caption(grammar.strip_view_suffix(caption))
    if not spec.is_open:
        return spec.scene()
    if images.shape[0] != len(views):
        raise ValueError(f"{images.shape[0]} result images for {len(views)} views")
    scenes = grammar.consistent_scenes(spec)
    images = images.float().cpu()
    cameras = _cameras(views, images.shape[-1])
    (shortlist,) = screen_set(scenes, cameras, images, joint=True)
    best = None
    for _, member, _ in shortlist:
        error = ((render_scene(scenes[member], cameras).rgb - images) ** 2).mean().item()
        if best is None or (error, member) < best:
            best = (error, member)
    return scenes[best[1]]


# ----------------------------------------------------------------------------------------------------------
# Screening a set of scenes (see the module docstring).

_OBJECT_MAPS_RICH = (
    6  # front region x (all, odd stripes, odd checks), as [all0, all1, stripes0, checks0, stripes1, checks1]
)


class _Rays:
    """The supersampled rays of a batch of cameras, flattened, with tiles for culling."""

    def __init__(self, cameras: Cameras, supersample: int):
        s, H, W = supersample, cameras.height, cameras.width
        fine = Cameras(
            cameras.c2w, cameras.fovy_deg, cameras.azimuth_deg, cameras.elevation_deg, cameras.distance, W * s, H * s
        )
        origins, dirs = camera_rays(fine)
        self.s, self.B, self.H, self.W, self.Hs, self.Ws = s, len(cameras), H, W, H * s, W * s
        self.origins, self.dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        self.centres = cameras.c2w[:, :3, 3]
        side = TILE_PIXELS * s
        nty, ntx = -(-self.Hs // side), -(-self.Ws // side)
        b = torch.arange(self.B)[:, None, None]
        y, x = torch.arange(self.Hs)[None, :, None], torch.arange(self.Ws)[None, None, :]
        tile = ((b * nty + y // side) * ntx + x // side).reshape(-1)
        n_tiles = self.B * nty * ntx
        self.order = torch.argsort(tile, stable=True)
        self.counts = torch.bincount(tile, minlength=n_tiles)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        axis = F.normalize(torch.zeros(n_tiles, 3).index_add_(0, tile, self.dirs), dim=-1)
        cos = (self.dirs * axis[tile]).sum(-1)
        cos_min = torch.ones(n_tiles).scatter_reduce_(0, tile, cos, "amin")
        self.tile_axis, self.tile_angle = axis, torch.acos(cos_min.clamp(-1, 1))
        self.tile_camera = torch.arange(n_tiles) // (nty * ntx)
        self.t_best = torch.full((len(self.dirs),), math.inf)
        self.winner = torch.full((len(self.dirs),), -1, dtype=torch.int16)

    def cull(self, centre: tuple[float, float, float], radius: float) -> Tensor:
        """Indices of the rays of every tile whose cone of rays may meet the sphere (conservatively)."""
        v = torch.tensor(centre) - self.centres[self.tile_camera]
        dist = v.norm(dim=-1)
        angle = torch.acos(((v * self.tile_axis).sum(-1) / dist).clamp(-1, 1))
        reach = torch.asin((radius / dist).clamp(max=1.0))
        keep = (angle <= self.tile_angle + reach + 1e-3) | (dist <= radius)
        counts, starts = self.counts[keep], self.starts[keep]
        offsets = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
        return self.order[torch.arange(int(counts.sum())) + offsets]

    def pixels(self, rays: Tensor) -> Tensor:
        """Flat index (camera, row, column) of the pixel each ray belongs to."""
        camera, rest = rays // (self.Hs * self.Ws), rays % (self.Hs * self.Ws)
        return (camera * self.H + rest // self.Ws // self.s) * self.W + rest % self.Ws // self.s


def _shading(normal: Tensor) -> Tensor:
    light = torch.tensor(render.LIGHT_DIRECTION, dtype=normal.dtype)
    return render.AMBIENT + render.DIFFUSE * (normal @ light).clamp_min(0)


def _odd(albedo: Tensor) -> Tensor:
    """Where a probe albedo (the named colour "red" with a pattern) shows the pattern colour."""
    return (albedo != torch.tensor(grammar.COLOURS["red"], dtype=albedo.dtype)).any(-1)


@dataclass
class _Trace:
    rays: Tensor  # [h] indices of the rays that hit
    pixels: Tensor  # [h] their pixels (rays.pixels)
    t: Tensor  # [h] their distances
    values: Tensor  # [maps, h] shading, split into the maps


def _trace_object(rays: _Rays, shape: str, position: tuple, scale: float, rich: bool) -> _Trace:
    """An object alone: its hits and their shading maps (rich: front region x pattern parity, as rendered)."""
    probe = grammar.ObjectSpec(shape, "red", position=position, scale=scale)
    radius = (math.hypot(*grammar.HALF_EXTENTS[shape]) + 2e-3) * scale
    idx = rays.cull(position, radius)
    origins, dirs = rays.origins[idx], rays.dirs[idx]
    t, normal = render.intersect_object(probe, origins, dirs)
    hit = torch.isfinite(t)
    idx, t, normal, origins, dirs = idx[hit], t[hit], normal[hit], origins[hit], dirs[hit]
    shading = _shading(normal)
    if not rich:
        return _Trace(idx, rays.pixels(idx), t, shading[None])
    local = (origins + t[:, None] * dirs - torch.tensor(position)) / scale
    striped = _odd(render.object_albedo(grammar.ObjectSpec(shape, "red", "striped"), local, normal)[0])
    checkered = _odd(render.object_albedo(grammar.ObjectSpec(shape, "red", "checkered"), local, normal)[0])
    front = render.object_albedo(grammar.ObjectSpec(shape, "red", "plain", "blue"), local, normal)[1]
    back = ~front
    parts = [back, front, back & striped, back & checkered, front & striped, front & checkered]
    return _Trace(idx, rays.pixels(idx), t, torch.stack([shading * p for p in parts]))


def _trace_backdrop(rays: _Rays, kind: str) -> _Trace:
    """A floor or wall alone, over every ray (dense): its distances and [all, odd stripes, odd checks] maps."""
    t, normal = (render.intersect_floor if kind == "floor" else render.intersect_wall)(rays.origins, rays.dirs)
    hit = torch.isfinite(t)
    points = rays.origins + torch.where(hit, t, 0.0)[:, None] * rays.dirs
    shading = torch.where(hit, _shading(normal), 0.0)
    striped = _odd(render.backdrop_albedo(grammar.Backdrop("red", "striped"), kind, points))
    checkered = _odd(render.backdrop_albedo(grammar.Backdrop("red", "checkered"), kind, points))
    every = torch.arange(len(t))
    return _Trace(every, every, t, torch.stack([shading, shading * striped, shading * checkered]))


def _albedos(scenes: Sequence[grammar.Scene], rich: bool) -> Tensor:
    """[M, J, 3] float64: the colour each of a member's maps is multiplied by (the order of the maps)."""
    zero, pattern = (0.0, 0.0, 0.0), grammar.PATTERN_COLOUR
    odd = {name: tuple(p - c for p, c in zip(pattern, rgb)) for name, rgb in grammar.COLOURS.items()}
    rows = []
    for scene in scenes:
        row = []
        for obj in scene.objects:
            colour = grammar.COLOURS[obj.colour]
            if not rich:
                row.append(colour)
                continue
            marked = obj.marker_colour is not None
            front = grammar.COLOURS[obj.marker_colour] if marked else colour
            striped, checkered = obj.surface == "striped", obj.surface == "checkered"
            stripes, checks = odd[obj.colour] if striped else zero, odd[obj.colour] if checkered else zero
            row += [colour, front, stripes, checks, zero if marked else stripes, zero if marked else checks]
        for backdrop in (scene.floor, scene.wall):
            if backdrop is not None:
                stripes = odd[backdrop.colour] if backdrop.surface == "striped" else zero
                checks = odd[backdrop.colour] if backdrop.surface == "checkered" else zero
                row += [grammar.COLOURS[backdrop.colour], stripes, checks]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def _composite(rays: _Rays, objects: list[_Trace], backdrop: _Trace | None) -> tuple[Tensor, Tensor]:
    """The pooled maps [J, B, H*W] and alpha [B, H*W] of a geometry: first hits as ``render.trace`` takes them
    (objects in caption order, then the backdrop; the nearer wins, the earlier on a tie)."""
    alone = len(objects) == 1 and backdrop is None
    if not alone:
        for k, trace in enumerate(objects):
            closer = trace.t < rays.t_best[trace.rays]
            rays.t_best[trace.rays[closer]] = trace.t[closer]
            rays.winner[trace.rays[closer]] = k
    pixels = rays.B * rays.H * rays.W
    backdrop_wins = None if backdrop is None else backdrop.t < rays.t_best
    maps = torch.zeros(sum(len(t.values) for t in objects) + (3 if backdrop else 0), pixels)
    covered, row = torch.zeros(pixels), 0
    for k, trace in enumerate(objects):
        if alone:
            where, values = trace.pixels, trace.values
        else:
            visible = rays.winner[trace.rays] == k
            if backdrop_wins is not None:
                visible &= ~backdrop_wins[trace.rays]
            where, values = trace.pixels[visible], trace.values[:, visible]
        maps[row : row + len(values)].index_add_(1, where, values)
        covered.index_add_(0, where, torch.ones(len(where)))
        row += len(values)
    if not alone:  # reset the shared buffers for the next geometry
        for trace in objects:
            rays.t_best[trace.rays] = math.inf
            rays.winner[trace.rays] = -1
    maps[:row] /= rays.s**2
    alpha = covered / rays.s**2
    if backdrop_wins is not None:
        fine = torch.cat([backdrop.values * backdrop_wins, backdrop_wins[None].float()])
        pooled = F.avg_pool2d(fine.reshape(-1, 1, rays.Hs, rays.Ws), rays.s).reshape(4, pixels)
        maps[row:] = pooled[:3]
        alpha += pooled[3]
    return maps.reshape(len(maps), rays.B, -1), alpha.reshape(rays.B, -1)


def _squared_errors(maps: Tensor, alpha: Tensor, albedos: Tensor, products: Tensor, x: Tensor, joint: bool) -> Tensor:
    """[N, M, B] summed squared errors of M members (albedos [M, J, 3], products = albedos albedos^T [M, J, J])
    of a geometry (maps [J, B, P], alpha [B, P]) against targets x [N, 3, P] (joint: [B, 3, P], N = 1).

    The render is ``u * background + sum_j albedo_j maps_j`` with u = 1 - alpha; with the residual
    R = u * background - x, the error is |R|^2 + 2 sum_j albedo_j . <maps_j, R> + sum_jl albedo_j . albedo_l
    <maps_j, maps_l>, each inner product expanded so that no [N, B, 3, P] tensor is formed (all float64).
    """
    maps, u = maps.double(), 1 - alpha.double()
    J, B, _ = maps.shape
    background = torch.tensor(render.BACKGROUND, dtype=torch.float64)
    gram = torch.bmm(maps.transpose(0, 1), maps.permute(1, 2, 0))  # [B, J, J]
    maps_u = (maps * u).sum(-1)  # [J, B]
    if joint:
        u_x = torch.einsum("bp,bcp->bc", u, x)[None]  # [1, B, 3]
        maps_x = torch.einsum("jbp,bcp->bjc", maps, x)[None]  # [1, B, J, 3]
        x_x = x.square().sum((1, 2))[None]  # [1, B]
    else:
        n = len(x)
        flat = x.reshape(n * 3, -1)
        u_x = (u @ flat.T).reshape(B, n, 3).transpose(0, 1)  # [N, B, 3]
        maps_x = (maps.reshape(J * B, -1) @ flat.T).reshape(J, B, n, 3).permute(2, 1, 0, 3)  # [N, B, J, 3]
        x_x = flat.square().sum(-1).reshape(n, 3).sum(-1)[:, None].expand(n, B)  # [N, B]
    r = (background.square().sum() * u.square().sum(-1))[None] - 2 * (u_x * background).sum(-1) + x_x  # [N, B]
    linear = background * maps_u.T[None, :, :, None] - maps_x  # [N, B, J, 3]: <maps_j, R_c>
    N = len(r)
    cross = (albedos.reshape(len(albedos), -1) @ linear.reshape(N * B, -1).T).reshape(-1, N, B).transpose(0, 1)
    quadratic = products.reshape(len(products), -1) @ gram.reshape(B, -1).T  # [M, B]
    return r[:, None, :] + 2 * cross + quadratic[None]


def screen_set(
    scenes: Sequence[grammar.Scene], cameras: Cameras, targets: Tensor, joint: bool = False
) -> list[list[tuple[float, int, int]]]:
    """Screened (mse, member index, view index) pairs of a set of scenes against result images, best first.

    ``joint`` False: ``targets`` [N, 3, H, W] are N results, each compared with every member at every camera;
    one shortlist per result. ``joint`` True: ``targets`` [V, 3, H, W] are one result's images at the V
    cameras; members are ranked by their mean squared error over the views (view index -1); one shortlist.
    A shortlist holds the pairs within SCREEN_MARGIN of its best (at least SHORTLIST_MIN, at most
    SHORTLIST_MAX), ties in (member, view) order. The scenes must share a category (and arrangement).
    """
    if not scenes:
        raise ValueError("no scenes to screen")
    height, width = cameras.height, cameras.width
    if targets.shape[-2:] != (height, width) or (joint and len(targets) != len(cameras)):
        raise ValueError(f"targets of shape {tuple(targets.shape)} for {len(cameras)} cameras of {height}x{width}")
    rich = scenes[0].category != "multiple"
    groups: dict[tuple, list[int]] = {}
    for i, scene in enumerate(scenes):
        kind = "floor" if scene.floor is not None else "wall" if scene.wall is not None else None
        groups.setdefault((tuple((o.shape, o.position, o.scale) for o in scene.objects), kind), []).append(i)
    albedos = {g: _albedos([scenes[i] for i in members], rich) for g, members in groups.items()}
    products = {g: torch.einsum("mjc,mlc->mjl", a, a) for g, a in albedos.items()}
    x = targets.detach().float().cpu().reshape(len(targets), 3, -1).double()
    n_values = 3 * height * width
    shortlists: list[list[tuple[float, int, int]]] = [[] for _ in range(1 if joint else len(targets))]
    totals = {g: torch.zeros(len(members), dtype=torch.float64) for g, members in groups.items()}
    for start in range(0, len(cameras), VIEW_CHUNK):
        chunk = list(range(start, min(start + VIEW_CHUNK, len(cameras))))
        rays = _Rays(cameras[chunk], SUPERSAMPLE)
        traces: dict[tuple, _Trace] = {}
        backdrops: dict[str, _Trace] = {}
        for (objects, kind), members in groups.items():
            for key in objects:
                if key not in traces:
                    traces[key] = _trace_object(rays, *key, rich)
            if kind is not None and kind not in backdrops:
                backdrops[kind] = _trace_backdrop(rays, kind)
            maps, alpha = _composite(rays, [traces[k] for k in objects], backdrops.get(kind))
            g = (objects, kind)
            errors = _squared_errors(maps, alpha, albedos[g], products[g], x[chunk] if joint else x, joint)
            errors /= n_values  # [N, M, B] mean squared errors
            if joint:
                totals[g] += errors[0].sum(-1)
                continue
            for shortlist, error in zip(shortlists, errors):
                flat = error.reshape(-1)
                values, where = flat.topk(min(SHORTLIST_MAX, len(flat)), largest=False)
                worst = shortlist[-1][0] if len(shortlist) >= SHORTLIST_MAX else math.inf
                for value, w in zip(values.tolist(), where.tolist()):
                    if value <= worst:
                        shortlist.append((value, members[w // len(chunk)], chunk[w % len(chunk)]))
                shortlist.sort()
                del shortlist[SHORTLIST_MAX:]
    if joint:
        ranked = sorted(
            (total / len(cameras), members[i], -1)
            for (g, members) in groups.items()
            for i, total in enumerate(totals[g].tolist())
        )
        shortlists = [ranked[:SHORTLIST_MAX]]
    for shortlist in shortlists:
        best = shortlist[0][0]
        keep = max(SHORTLIST_MIN, sum(1 for value, _, _ in shortlist if value <= best + SCREEN_MARGIN))
        del shortlist[keep:]
    return shortlists


def screened_renders(scenes: Sequence[grammar.Scene], cameras: Cameras) -> Tensor:
    """The screening's renders [M, V, 3, H, W] of scenes (sharing a category) at cameras: what :func:`screen_set`
    compares results with, for checking it against ``render.render_scene`` (SCREEN_TOLERANCE)."""
    rich = scenes[0].category != "multiple"
    rays = _Rays(cameras, SUPERSAMPLE)
    background = torch.tensor(render.BACKGROUND)[:, None]
    out = []
    for scene in scenes:
        kind = "floor" if scene.floor is not None else "wall" if scene.wall is not None else None
        objects = [_trace_object(rays, o.shape, o.position, o.scale, rich) for o in scene.objects]
        maps, alpha = _composite(rays, objects, None if kind is None else _trace_backdrop(rays, kind))
        albedos = _albedos([scene], rich)[0].float()
        image = background * (1 - alpha)[:, None, :] + torch.einsum("jc,jbp->bcp", albedos, maps)
        out.append(image.reshape(len(cameras), 3, cameras.height, cameras.width))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------------------
# Metrics of 2D results.


def ground_truth_metrics(images: Tensor, caption: str) -> tuple[dict, Tensor]:
    """Mean metrics of ``images`` [N, 3, H, W] against their best-matching ground-truth views, and
    those ground-truth renders [N, 3, H, W] (to save beside the result).

    The metrics also hold ``matched``, the full caption of the scene each image was scored against (the
    caption's own scene unless it is open). For an open caption they add the set's size (``set_size``) and
    the diversity of the N results (``lods.toyworld.metrics.diversity``: distinct matched scenes, entropy
    of the open attributes, share of results whose best match reaches IoU VALIDITY_IOU).
    """
    spec = grammar.parse_open_caption(caption)
    per_image, references = [], []
    matches = best_matches(images, caption)
    for image, match in zip(images, matches):
        metrics = image_metrics(image[None].float().cpu(), match.gt)
        azimuth, elevation = match.view
        per_image.append({**metrics, "azimuth": azimuth, "elevation": elevation})
        references.append(match.gt.rgb[0])
    mean: dict = {k: sum(m[k] for m in per_image) / len(per_image) for k in per_image[0]}
    mean["category"] = spec.category
    mean["matched"] = [match.caption for match in matches]
    if spec.is_open:
        mean["set_size"] = grammar.count_consistent(spec)
        mean.update(diversity([m.scene for m in matches], spec, [m["iou"] for m in per_image]))
    return mean, torch.stack(references)


@torch.no_grad()
def sample(
    model: DiffusionModel,
    captions: list[str],
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    seed: int = 0,
    negative_prompt: str = "",
) -> Tensor:
    """DDIM samples (eta 0) of the model for ``captions``, images [N, 3, H, W] in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(captions), model.latent_channels, model.latent_size, model.latent_size)
    latents = torch.randn(shape, generator=generator).to(model.device)
    cond = model.text_embeddings(captions)
    uncond = model.text_embeddings(negative_prompt)
    z0 = model.ddim_sample(latents, model.num_train_timesteps - 1, num_steps, cond, uncond, guidance_scale)
    return model.decode(z0)


def evaluation_captions(per_category: int, seed: int = 1234) -> list[str]:
    """A fixed, seeded set of captions with view suffixes, ``per_category`` per category."""
    import random

    rng = random.Random(seed)
    captions = []
    for category in grammar.CATEGORIES:
        for caption in grammar.sample_captions(per_category, seed + len(captions), category):
            captions.append(grammar.with_view_suffix(caption, rng.choice(("front", "side", "back"))))
    return captions


def evaluate_prior(model: DiffusionModel, per_category: int = 8, seed: int = 0, **sample_kwargs) -> dict:
    """Sample quality of the prior against ground truth, per caption and per category."""
    captions = evaluation_captions(per_category)
    images = torch.cat(
        [sample(model, chunk, seed=seed + i, **sample_kwargs) for i, chunk in enumerate(_chunks(captions, 12))]
    )
    rows = []
    for caption, image in zip(captions, images):
        metrics, _ = ground_truth_metrics(image[None], caption)
        rows.append({"caption": caption, **metrics})
    table = aggregate([{k: r[k] for k in (*METRIC_KEYS, "category")} for r in rows])
    return {"per_caption": rows, "per_category": table, "images": images}


OPEN_KEYS = ("psnr", "iou", "delta_e", "saturation_bias", "distinct_scenes", "attribute_entropy", "validity@0.5")


def open_evaluation_captions(per_category: int, seed: int = 2345) -> list[str]:
    """A fixed, seeded set of *open* captions with view suffixes, ``per_category`` per category (drawn with
    ``grammar.sample_open_captions``; variants that happen to stay fully specified are skipped)."""
    import random

    rng = random.Random(seed)
    captions = []
    for c, category in enumerate(grammar.CATEGORIES):
        draws = iter(grammar.sample_open_captions(50 * per_category, seed + c, category))
        picked = [caption for caption in draws if grammar.is_open(caption)][:per_category]
        captions += [grammar.with_view_suffix(caption, rng.choice(("front", "side", "back"))) for caption in picked]
    return captions


def evaluate_open(
    model: DiffusionModel, per_category: int = 4, samples: int = 8, seed: int = 0, **sample_kwargs
) -> dict:
    """The prior's own samples for open captions: ``samples`` DDIM samples per caption, each scored against
    the member of the caption's set it matches best; per caption the mean metrics and the mode coverage of
    the samples (distinct matched scenes, entropy of the open attributes against its maximum, validity)."""
    rows = []
    for i, caption in enumerate(open_evaluation_captions(per_category)):
        images = sample(model, [caption] * samples, seed=seed + i, **sample_kwargs)
        metrics, _ = ground_truth_metrics(images, caption)
        rows.append({"caption": caption, "samples": samples, **metrics})
    table = aggregate([{k: r[k] for k in (*OPEN_KEYS, "attribute_entropy_max", "category")} for r in rows])
    return {"per_caption": rows, "per_category": table}


def _chunks(items: list, n: int):
    return [items[i : i + n] for i in range(0, len(items), n)]


def markdown_table(per_category: dict[str, dict[str, float]], keys: Sequence[str] = METRIC_KEYS) -> str:
    header = "| category | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    lines = []
    for category, values in per_category.items():
        cells = [f"{values.get(k, math.nan):.3f}" for k in keys]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from lods.diffusion import load_model
    from lods.utils.images import save_grid

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "models" / "toyworld"))
    parser.add_argument("--per-category", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--out", type=Path, default=None, help="folder for evaluation.json and samples.png")
    args = parser.parse_args(argv)
    model = load_model(args.model, device="cpu")
    result = evaluate_prior(model, args.per_category, num_steps=args.steps, guidance_scale=args.guidance)
    print(markdown_table(result["per_category"]))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        save_grid(result["images"], args.out / "samples.png", columns=args.per_category)
        record = {k: v for k, v in result.items() if k != "images"}
        record.update(steps=args.steps, guidance_scale=args.guidance, size=DEFAULT_SIZE)
        (args.out / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

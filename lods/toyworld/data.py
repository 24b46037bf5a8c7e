"""Training views of the toyworld: random scenes, random cameras, captions with view suffixes.

Cameras cover what the 3D tasks sample (full azimuth circle, elevation in ``ELEVATION_RANGE``,
toyworld's fixed distance and field of view); the view suffix is chosen with the thresholds of
:func:`lods.cameras.view_direction`, the same the 3D tasks use. Two ways to draw a scene's cameras:

- uniform (``balanced=False``): azimuth and elevation uniform in their ranges, so the view words come in
  the shares of the 3D tasks' camera distribution (side 39%, overhead 22%, front and back 19.5% each);
- balanced (``balanced=True``): the scene's views go round the view words (front, side, back, overhead,
  starting at a random one), each camera uniform within its word's range, so every word is equally
  common and a scene with 4 views is seen once from each: the model sees the same scene under every view
  word, which is what it needs to learn what the word changes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.progress import Progress
from torch import Tensor

from lods.cameras import BACK_HALF_ANGLE, FRONT_HALF_ANGLE, OVERHEAD_ELEVATION, VIEWS, view_direction
from lods.toyworld import grammar
from lods.toyworld.render import DEFAULT_SIZE, SUPERSAMPLE, default_cameras, render_scene

ELEVATION_RANGE = (-10.0, 80.0)


@dataclass
class ViewSet:
    images: Tensor  # [N, 3, H, W] uint8
    captions: list[str]  # with view suffix, e.g. "a red cube, side view"
    categories: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def camera_in_view(view: str, rng: random.Random) -> tuple[float, float]:
    """(azimuth, elevation) in degrees, uniform within the range ``view_direction`` calls ``view``."""
    low, high = ELEVATION_RANGE
    if view == "overhead":
        return rng.uniform(-180.0, 180.0), rng.uniform(OVERHEAD_ELEVATION, high)
    elevation = rng.uniform(low, OVERHEAD_ELEVATION)
    if view == "front":
        azimuth = rng.uniform(-FRONT_HALF_ANGLE, FRONT_HALF_ANGLE)
    elif view == "back":
        azimuth = rng.uniform(180.0 - BACK_HALF_ANGLE, 180.0 + BACK_HALF_ANGLE)
        azimuth = (azimuth + 180.0) % 360.0 - 180.0
    elif view == "side":
        azimuth = rng.choice((-1.0, 1.0)) * rng.uniform(FRONT_HALF_ANGLE, 180.0 - BACK_HALF_ANGLE)
    else:
        raise ValueError(f"unknown view {view!r}; choose one of: {', '.join(VIEWS)}")
    return azimuth, elevation


def scene_cameras(views_per_scene: int, rng: random.Random, balanced: bool) -> list[tuple[float, float]]:
    """One scene's cameras, (azimuth, elevation) each; see the module docstring for ``balanced``."""
    if not balanced:
        azimuths = [rng.uniform(-180.0, 180.0) for _ in range(views_per_scene)]
        return list(zip(azimuths, [rng.uniform(*ELEVATION_RANGE) for _ in range(views_per_scene)]))
    start = rng.randrange(len(VIEWS))
    return [camera_in_view(VIEWS[(start + i) % len(VIEWS)], rng) for i in range(views_per_scene)]


def render_views(
    num_scenes: int,
    views_per_scene: int,
    seed: int,
    size: int = DEFAULT_SIZE,
    supersample: int = SUPERSAMPLE,
    progress: bool = True,
    balanced: bool = False,
    categories: Sequence[str] = grammar.CATEGORIES,
) -> ViewSet:
    """``num_scenes`` scenes, each seen from ``views_per_scene`` random cameras (``balanced``: going round the
    view words). Scene ``i`` is of category ``categories[i % len(categories)]``: the default gives the three
    categories in equal shares, and repeating a name weights it (``("surroundings", "surroundings", "single",
    "multiple")`` makes half the scenes surroundings)."""
    categories = tuple(categories)
    unknown = sorted(set(categories) - set(grammar.CATEGORIES))
    if not categories or unknown:
        said = f"unknown scene categories {unknown}" if unknown else "no scene categories given"
        raise ValueError(f"{said}; choose from: {', '.join(grammar.CATEGORIES)}")
    rng = random.Random(seed)
    images, captions, view_categories = [], [], []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("rendering toyworld views", total=num_scenes)
        for i in range(num_scenes):
            category = categories[i % len(categories)]
            scene = grammar.scene_at(category, rng.randrange(grammar.count_scenes(category)))
            azimuths, elevations = zip(*scene_cameras(views_per_scene, rng, balanced))
            gt = render_scene(scene, default_cameras(azimuths, elevations, size), supersample)
            images.append((gt.rgb * 255).round().to(torch.uint8))
            caption = grammar.scene_caption(scene)
            captions += [grammar.with_view_suffix(caption, view_direction(a, e)) for a, e in zip(azimuths, elevations)]
            view_categories += [category] * views_per_scene
            bar.advance(task)
    return ViewSet(torch.cat(images), captions, view_categories)

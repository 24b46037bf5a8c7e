"""Training views of the toyworld: random scenes, random cameras, captions with view suffixes.

Cameras follow the distribution the 3D tasks sample from (full azimuth circle, elevation in
``ELEVATION_RANGE``, toyworld's fixed distance and field of view); the view suffix is chosen with
the thresholds of :func:`lods.cameras.view_direction`, the same the 3D tasks use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from rich.progress import Progress
from torch import Tensor

from lods.cameras import view_direction
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


def render_views(
    num_scenes: int,
    views_per_scene: int,
    seed: int,
    size: int = DEFAULT_SIZE,
    supersample: int = SUPERSAMPLE,
    progress: bool = True,
) -> ViewSet:
    """``num_scenes`` scenes (categories in equal shares) seen from ``views_per_scene`` random cameras."""
    rng = random.Random(seed)
    images, captions, categories = [], [], []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("rendering toyworld views", total=num_scenes)
        for i in range(num_scenes):
            category = grammar.CATEGORIES[i % len(grammar.CATEGORIES)]
            scene = grammar.scene_at(category, rng.randrange(grammar.count_scenes(category)))
            azimuths = [rng.uniform(-180.0, 180.0) for _ in range(views_per_scene)]
            elevations = [rng.uniform(*ELEVATION_RANGE) for _ in range(views_per_scene)]
            gt = render_scene(scene, default_cameras(azimuths, elevations, size), supersample)
            images.append((gt.rgb * 255).round().to(torch.uint8))
            caption = grammar.scene_caption(scene)
            captions += [grammar.with_view_suffix(caption, view_direction(a, e)) for a, e in zip(azimuths, elevations)]
            categories += [category] * views_per_scene
            bar.advance(task)
    return ViewSet(torch.cat(images), captions, categories)

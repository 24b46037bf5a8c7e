"""Text conditioning: cached prompt embeddings, view-dependent prompts, and what a prior receives."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lods.cameras import VIEWS, Cameras, view_direction
from lods.diffusion.model import DiffusionModel


def with_view(prompt: str, view: str) -> str:
    """DreamFusion's view suffix: 'a red cube' -> 'a red cube, front view'."""
    return f"{prompt}, {view} view"


@dataclass
class Conditioning:
    """Everything a prior conditions on in one step (embeddings are [1 or B, L, D])."""

    cond: Tensor  # the (target) prompt, view-dependent per sample when enabled
    uncond: Tensor  # the negative / null prompt of classifier-free guidance
    learnable_init: Tensor  # where a learnable unconditional starts: null, or the source caption when editing
    source_cond: Tensor | None = None  # DDS: the source caption
    source_latents: Tensor | None = None  # DDS: the source image's latent [B, C, h, w]
    cameras: Tensor | None = None  # VSD: flattened camera-to-world matrices [B, 16]
    negatives: Tensor | None = None  # Perp-Neg: the other views' prompts [B, K, L, D]
    negative_weights: Tensor | None = None  # Perp-Neg: their weights [B, K]

    def replace(self, **changes) -> Conditioning:
        return replace(self, **changes)


HORIZONTAL_VIEWS = {"front": 0.0, "side": 90.0, "back": 180.0}  # canonical |azimuth| of each view


def perp_neg_weights(azimuth_deg: float, elevation_deg: float, weight: float) -> list[float]:
    """Perp-Neg weights of the front/side/back view prompts as negatives for one camera.

    A view's weight grows with its angular distance from the camera (``weight`` at 180 degrees,
    0 at the camera's own azimuth), so the opposite view is pushed away hardest and neighbouring
    views barely; overhead cameras (no horizontal view) get none.
    """
    if view_direction(azimuth_deg, elevation_deg) == "overhead":
        return [0.0] * len(HORIZONTAL_VIEWS)
    azimuth = abs((azimuth_deg + 180.0) % 360.0 - 180.0)
    return [weight * abs(azimuth - canonical) / 180.0 for canonical in HORIZONTAL_VIEWS.values()]


class PromptSet:
    """The embeddings of a run's prompts, encoded once; :meth:`__call__` picks them per step.

    ``perp_neg_weight > 0`` (with view-dependent prompts) adds Perp-Neg negatives: the front, side and
    back view prompts, weighted by :func:`perp_neg_weights`.
    """

    def __init__(
        self,
        model: DiffusionModel,
        prompt: str,
        negative_prompt: str = "",
        view_dependent: bool = False,
        source_prompt: str | None = None,
        learnable_init: str = "negative",
        perp_neg_weight: float = 0.0,
    ):
        if perp_neg_weight < 0:
            raise ValueError(f"perp_neg_weight must be >= 0, got {perp_neg_weight}")
        if perp_neg_weight and not view_dependent:
            raise ValueError("Perp-Neg (perp_neg_weight > 0) needs view-dependent prompts (view_dependent=true)")
        self.perp_neg_weight = float(perp_neg_weight)
        if learnable_init not in ("negative", "source"):
            raise ValueError(f"unknown learnable_init '{learnable_init}'; choose one of: negative, source")
        if learnable_init == "source" and source_prompt is None:
            raise ValueError("learnable_init='source' needs a source_prompt")
        self.prompt, self.negative_prompt, self.view_dependent = prompt, negative_prompt, view_dependent
        self.source_prompt = source_prompt
        self.base = model.text_embeddings(prompt)  # [1, L, D]
        self.views = model.text_embeddings([with_view(prompt, v) for v in VIEWS]) if view_dependent else None
        self.horizontal = self.views[[VIEWS.index(v) for v in HORIZONTAL_VIEWS]] if view_dependent else None
        self.uncond = model.text_embeddings(negative_prompt)
        self.source = model.text_embeddings(source_prompt) if source_prompt is not None else None
        self.learnable_init = self.source if learnable_init == "source" else self.uncond

    def prompts_for(self, cameras: Cameras | None, batch_size: int) -> list[str]:
        """The prompt strings of a batch (for logging)."""
        if cameras is None or not self.view_dependent:
            return [self.prompt] * batch_size
        return [
            with_view(self.prompt, view_direction(float(a), float(e)))
            for a, e in zip(cameras.azimuth_deg, cameras.elevation_deg)
        ]

    def __call__(self, cameras: Cameras | None, batch_size: int) -> Conditioning:
        if cameras is None or not self.view_dependent:
            cond = self.base.expand(batch_size, -1, -1)
        else:
            index = torch.tensor(
                [
                    VIEWS.index(view_direction(float(a), float(e)))
                    for a, e in zip(cameras.azimuth_deg, cameras.elevation_deg)
                ],
                device=self.views.device,
            )
            cond = self.views[index]
        negatives = weights = None
        if self.perp_neg_weight and cameras is not None:
            weights = torch.tensor(
                [
                    perp_neg_weights(float(a), float(e), self.perp_neg_weight)
                    for a, e in zip(cameras.azimuth_deg, cameras.elevation_deg)
                ],
                device=cond.device,
            )
            negatives = self.horizontal[None].expand(len(cameras), -1, -1, -1)
        return Conditioning(
            cond=cond,
            uncond=self.uncond,
            learnable_init=self.learnable_init,
            source_cond=self.source,
            cameras=None if cameras is None else cameras.flat_c2w().to(cond.device),
            negatives=negatives,
            negative_weights=weights,
        )

"""Image-to-3D (LODS Sec. 4.2, Magic123-style with the text-to-image prior only).

A reference image with a foreground mask is seen from a known camera. Every step renders that
camera as well and adds the reference losses (masked RGB and mask), while the prior shapes the
novel views sampled as in text-to-3D. The prompt describes the object.

Without ``reference_image``, the reference is the toyworld ground truth of the prompt at the
reference camera (its alpha is the mask), so the other views can be scored against ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lods.backbones.base import RenderOutput
from lods.cameras import Cameras, orbit_cameras
from lods.diffusion.model import DiffusionModel
from lods.tasks.text_to_3d import TextTo3D


def load_rgba(path: str | Path, resolution: int) -> tuple[Tensor, Tensor]:
    """An image with an alpha channel -> (rgb over white [1, 3, R, R], mask [1, 1, R, R])."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference image '{path}' does not exist; pass task.reference_image=<a .png>")
    image = Image.open(path)
    if image.mode not in ("RGBA", "LA"):
        raise ValueError(
            f"reference image '{path}' has no alpha channel (mode {image.mode}); give an RGBA image whose alpha "
            "is the object mask"
        )
    rgba = np.asarray(image.convert("RGBA").resize((resolution, resolution), Image.LANCZOS), dtype=np.float32) / 255
    rgba = torch.from_numpy(rgba).permute(2, 0, 1)[None]
    mask = rgba[:, 3:]
    return rgba[:, :3] * mask + (1 - mask), mask


class ImageTo3D(TextTo3D):
    """Text-to-3D plus reference-view losses at a known camera."""

    def __init__(
        self,
        prompt: str,
        reference_image: str | None = None,
        reference_azimuth: float = 0.0,
        reference_elevation: float = 15.0,
        reference_distance: float = 3.0,
        reference_fovy: float = 45.0,
        rgb_weight: float = 1000.0,
        mask_weight: float = 100.0,
        negative_prompt: str = "",
        dims: int = 3,
        batch_size: int = 1,
        eval_azimuths: Sequence[float] = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0),
        **camera_ranges,
    ):
        super().__init__(prompt, negative_prompt, dims, batch_size, eval_azimuths=eval_azimuths, **camera_ranges)
        if rgb_weight < 0 or mask_weight < 0:
            raise ValueError(f"reference loss weights must be >= 0, got rgb {rgb_weight}, mask {mask_weight}")
        self.reference_image = reference_image
        self.reference_view = (float(reference_azimuth), float(reference_elevation))
        self.reference_distance, self.reference_fovy = float(reference_distance), float(reference_fovy)
        self.rgb_weight, self.mask_weight = rgb_weight, mask_weight
        self.reference_rgb: Tensor | None = None
        self.reference_mask: Tensor | None = None

    def setup(self, model: DiffusionModel, resolution: int) -> None:
        super().setup(model, resolution)
        if self.reference_image:
            rgb, mask = load_rgba(self.reference_image, resolution)
        else:
            rgb, mask = self._toyworld_reference(resolution)
        self.reference_rgb, self.reference_mask = rgb.to(model.device), mask.to(model.device)
        self._reference_cameras = self.reference_cameras().to(model.device)  # rendered every step

    def _toyworld_reference(self, resolution: int) -> tuple[Tensor, Tensor]:
        from lods.toyworld import grammar
        from lods.toyworld.render import render_scene

        caption = grammar.strip_view_suffix(self.prompt)
        try:
            spec = grammar.parse_open_caption(caption)
        except ValueError as err:
            raise ValueError(
                f"task.reference_image is not set and the prompt '{self.prompt}' is not a toyworld caption, so "
                f"there is no ground truth to take the reference view from ({err}); pass "
                "task.reference_image=<an RGBA .png>"
            ) from err
        if spec.is_open:
            example = grammar.scene_caption(grammar.consistent_scenes(spec)[0])
            raise ValueError(
                f"task.reference_image is not set and the prompt '{self.prompt}' is an open caption (it names "
                f"{grammar.count_consistent(spec)} scenes), so there is no one ground truth to take the reference "
                f"view from; give a full caption (e.g. '{example}') or task.reference_image=<an RGBA .png>"
            )
        scene = grammar.parse_caption(caption)
        gt = render_scene(scene, self.reference_cameras(resolution))
        return gt.rgb, gt.alpha

    def reference_cameras(self, size: int | None = None) -> Cameras:
        size = size or self._size()
        azimuth, elevation = self.reference_view
        return orbit_cameras(azimuth, elevation, self.reference_distance, self.reference_fovy, size, size)

    def losses(self, out: RenderOutput, step: int, backbone=None) -> dict[str, Tensor]:
        """Masked RGB MSE and mask MSE of the reference view's render (Magic123's reference losses)."""
        ref = backbone.render(self._reference_cameras, step)
        mask = self.reference_mask
        rgb_loss = (mask * (ref.rgb - self.reference_rgb) ** 2).sum() / (3 * mask.sum().clamp_min(1.0))
        losses = {"reference_rgb": self.rgb_weight * rgb_loss}
        if ref.alpha is not None and self.mask_weight:
            losses["reference_mask"] = self.mask_weight * torch.nn.functional.mse_loss(ref.alpha, mask)
        return losses

    def eval_views(self) -> list[tuple[float, float]]:
        """The evaluation orbit without the reference view: ground truth is scored on unseen views."""
        return [v for v in super().eval_views() if v != self.reference_view]

    def describe(self) -> dict:
        return {**super().describe(), "reference_image": self.reference_image, "reference_view": self.reference_view}

"""Text-to-3D (LODS Sec. 4.1 and 4.3): random cameras around the object, view-dependent prompts.

Cameras follow ``lods.cameras`` (world +z up, the object's front faces +x = azimuth 0). Each step
samples ``batch_size`` cameras: elevation, distance and field of view uniform in their ranges,
azimuths either independent or *batch-uniform* (stratified: one per 360/B sector, with a shared
random offset, as threestudio does), so a batch always sees the object from around.
The view-dependent prompt ("..., front view") uses the thresholds of ``lods.cameras.view_direction``
-- the ones the toyworld captions were rendered with.

The defaults match the toyworld prior's training views (distance 3, fovy 45, elevation -10..80);
Stable Diffusion presets widen them (``experiments/``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lods.cameras import Cameras, orbit_cameras
from lods.diffusion.model import DiffusionModel
from lods.diffusion.prompts import Conditioning, PromptSet
from lods.tasks.text_to_image import TextToImage

EVAL_ELEVATION = 15.0  # lods.toyworld.render.EVAL_ELEVATION: the evaluation orbit's elevation
EVAL_AZIMUTHS = tuple(float(a) for a in range(0, 360, 45))  # lods.toyworld.render.EVAL_VIEWS


def _range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    if len(value) != 2 or not value[0] <= value[1]:
        raise ValueError(f"task.{name} must be [min, max] with min <= max, got {list(value)}")
    if value[0] < low or value[1] > high:
        raise ValueError(f"task.{name} = {list(value)} is outside the allowed range [{low}, {high}]")
    return float(value[0]), float(value[1])


class TextTo3D(TextToImage):
    """One prompt, a random camera per image of the batch, an evaluation orbit."""

    dims = 3

    def __init__(
        self,
        prompt: str,
        negative_prompt: str = "",
        dims: int = 3,
        batch_size: int = 1,
        elevation_range: Sequence[float] = (-10.0, 80.0),
        azimuth_range: Sequence[float] = (-180.0, 180.0),
        distance_range: Sequence[float] = (3.0, 3.0),
        fovy_range: Sequence[float] = (45.0, 45.0),
        batch_uniform_azimuth: bool = True,
        view_dependent: bool = True,
        perp_neg_weight: float = 0.0,
        eval_elevation: float = EVAL_ELEVATION,
        eval_azimuths: Sequence[float] = EVAL_AZIMUTHS,
        eval_distance: float = 3.0,
        eval_fovy: float = 45.0,
    ):
        super().__init__(prompt, negative_prompt, dims)
        if batch_size < 1:
            raise ValueError(f"task.batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.elevation_range = _range("elevation_range", elevation_range, -90.0, 90.0)
        self.azimuth_range = _range("azimuth_range", azimuth_range, -360.0, 360.0)
        self.distance_range = _range("distance_range", distance_range, 1e-3, float("inf"))
        self.fovy_range = _range("fovy_range", fovy_range, 1.0, 179.0)
        self.batch_uniform_azimuth, self.view_dependent = batch_uniform_azimuth, view_dependent
        self.perp_neg_weight = perp_neg_weight
        self.eval_elevation, self.eval_azimuths = float(eval_elevation), [float(a) for a in eval_azimuths]
        self.eval_distance, self.eval_fovy = float(eval_distance), float(eval_fovy)
        self.resolution: int | None = None

    def setup(self, model: DiffusionModel, resolution: int) -> None:
        self.resolution = resolution
        self.prompts = PromptSet(
            model,
            self.prompt,
            self.negative_prompt,
            view_dependent=self.view_dependent,
            perp_neg_weight=self.perp_neg_weight,
        )

    # ------------------------------------------------------------------ cameras
    def sample_cameras(self, step: int, batch_size: int, generator: torch.Generator | None = None) -> Cameras:
        def uniform(bounds: tuple[float, float], u: torch.Tensor) -> torch.Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * u

        device = generator.device if generator is not None else "cpu"
        u = torch.rand(4, batch_size, generator=generator, device=device).cpu()
        if self.batch_uniform_azimuth:  # one azimuth per sector of the range, shifted together
            u[0] = (torch.arange(batch_size) + u[0, :1]) / batch_size
        azimuth = uniform(self.azimuth_range, u[0])
        azimuth = (azimuth + 180.0) % 360.0 - 180.0
        return orbit_cameras(
            azimuth,
            uniform(self.elevation_range, u[1]),
            uniform(self.distance_range, u[2]),
            uniform(self.fovy_range, u[3]),
            self._size(),
            self._size(),
        )

    def eval_views(self) -> list[tuple[float, float]]:
        """(azimuth, elevation) of the evaluation orbit, in order."""
        return [(a, self.eval_elevation) for a in self.eval_azimuths]

    def eval_cameras(self) -> Cameras:
        views = self.eval_views()
        return self._orbit([a for a, _ in views], [e for _, e in views])

    def turntable_cameras(self, frames: int, size: int | None = None) -> Cameras:
        """A full turn at the evaluation elevation, starting at the front."""
        azimuths = [360.0 * i / frames for i in range(frames)]
        return self._orbit(azimuths, [self.eval_elevation] * frames, size)

    def _orbit(self, azimuths, elevations, size: int | None = None) -> Cameras:
        size = size or self._size()
        return orbit_cameras(
            torch.tensor(azimuths), torch.tensor(elevations), self.eval_distance, self.eval_fovy, size, size
        )

    def _size(self) -> int:
        if self.resolution is None:
            raise RuntimeError("call task.setup(model, resolution) before sampling cameras")
        return self.resolution

    def conditioning(self, cameras, batch_size: int) -> Conditioning:
        return self.prompts(cameras, batch_size)

    def describe(self) -> dict:
        return {**super().describe(), "batch_size": self.batch_size}

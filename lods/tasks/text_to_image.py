"""2D text-to-image generation with a score-distillation prior (LODS Sec. 4.4)."""

from __future__ import annotations

from torch import Tensor

from lods.backbones.base import RenderOutput
from lods.diffusion.model import DiffusionModel
from lods.diffusion.prompts import Conditioning, PromptSet


def check_prompt(name: str, value) -> str:
    if value is None or not str(value).strip():
        raise ValueError(f'{name} is empty: give one on the command line, e.g. {name}="a red cube"')
    return str(value)


class TextToImage:
    """One prompt, no cameras, no task losses."""

    dims = 2

    def __init__(self, prompt: str, negative_prompt: str = "", dims: int = 2):
        if dims != self.dims:
            raise ValueError(f"{type(self).__name__} is a {self.dims}D task, got dims={dims}")
        self.prompt = check_prompt("prompt", prompt)
        self.negative_prompt = negative_prompt or ""
        self.source_rgb: Tensor | None = None
        self.prompts: PromptSet | None = None

    def setup(self, model: DiffusionModel, resolution: int) -> None:
        self.prompts = PromptSet(model, self.prompt, self.negative_prompt)

    def sample_cameras(self, step: int, batch_size: int, generator=None):
        return None

    def conditioning(self, cameras, batch_size: int) -> Conditioning:
        return self.prompts(cameras, batch_size)

    def eval_cameras(self):
        """The cameras a result is shown and scored from (none for a 2D image)."""
        return None

    def losses(self, out: RenderOutput, step: int, backbone=None) -> dict[str, Tensor]:
        return {}

    def describe(self) -> dict:
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt}

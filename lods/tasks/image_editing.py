"""2D text-guided image editing (DDS; LODS in editing mode, Sec. 3.5 and Figs. 9-10).

The source image is optimised towards the target caption. Learnable priors start their
unconditional embedding (or LoRA condition) at the *source* caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lods.diffusion.model import DiffusionModel
from lods.diffusion.prompts import Conditioning, PromptSet
from lods.tasks.text_to_image import TextToImage, check_prompt

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_SOURCE = ASSETS / "editing" / "red_sphere.png"  # caption: "a red sphere"


def load_image(path: str | Path, resolution: int) -> Tensor:
    """An RGB image file as [1, 3, R, R] in [0, 1] (resized with Lanczos)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source image '{path}' does not exist; pass task.source_image=<an image file>")
    image = Image.open(path).convert("RGB").resize((resolution, resolution), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


class ImageEditing(TextToImage):
    def __init__(
        self, source_prompt: str, prompt: str, source_image: str | None = None, negative_prompt: str = "", dims: int = 2
    ):
        super().__init__(prompt, negative_prompt, dims)
        self.source_prompt = check_prompt("task.source_prompt", source_prompt)
        self.source_image = str(source_image or DEFAULT_SOURCE)
        self._source_latents: Tensor | None = None

    def setup(self, model: DiffusionModel, resolution: int) -> None:
        self.source_rgb = load_image(self.source_image, resolution).to(model.device)
        self.prompts = PromptSet(
            model, self.prompt, self.negative_prompt, source_prompt=self.source_prompt, learnable_init="source"
        )
        with torch.no_grad():
            self._source_latents = model.encode(self.source_rgb)  # VAE posterior mean (DDS)

    def conditioning(self, cameras, batch_size: int) -> Conditioning:
        return self.prompts(cameras, batch_size).replace(source_latents=self._source_latents)

    def describe(self) -> dict:
        return {**super().describe(), "source_prompt": self.source_prompt, "source_image": self.source_image}

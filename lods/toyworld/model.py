"""The embedded toyworld prior that ships in the package (``model=toyworld``)."""

from __future__ import annotations

from pathlib import Path

import torch

from lods.diffusion.loading import ModelNotFoundError, load_model
from lods.diffusion.model import DiffusionModel

PRIOR_DIR = Path(__file__).resolve().parent.parent / "models" / "toyworld"
NAME = "toyworld"


def load_prior(path: str | None = None, device: str | torch.device = "auto", dtype: str = "auto") -> DiffusionModel:
    """Load the toyworld prior (the shipped one unless ``path`` names another training's output)."""
    folder = Path(path) if path else PRIOR_DIR
    if not (folder / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"the toyworld prior is missing from '{folder}'. It ships with the repository (lods/models/toyworld); "
            "retrain it with `make toyworld-prior`, or choose another model (model=tiny, model=sd21_base)."
        )
    model = load_model(str(folder), device=device, dtype=dtype)
    model.name = NAME
    return model


def is_toyworld(model: DiffusionModel) -> bool:
    return getattr(model, "name", None) == NAME

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lods.diffusion import build_tiny_model  # noqa: E402
from lods.diffusion.prompts import PromptSet  # noqa: E402


@pytest.fixture
def model():
    """A fresh tiny random SD-format pipeline on CPU (fresh: LoRA priors add adapters to it)."""
    torch.manual_seed(0)
    return build_tiny_model(seed=0, device="cpu")


@pytest.fixture
def conditioning(model):
    return PromptSet(model, "a red cube", "")(None, 2)


@pytest.fixture
def latents(model):
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, model.latent_channels, model.latent_size, model.latent_size, generator=g)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)

"""Load any diffusers SD-format pipeline (hub id or local folder) as a :class:`DiffusionModel`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lods.diffusion.model import DiffusionModel

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHTS = ("pretrained", "random")


class ModelNotFoundError(FileNotFoundError):
    """A diffusion model could not be found locally or downloaded."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' is fp16 on CUDA and fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    choices = {
        "auto": None,
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in choices:
        raise ValueError(f"unknown dtype '{dtype}'; choose one of: {', '.join(choices)}")
    if choices[dtype] is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    return choices[dtype]


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or os.path.exists(path) or path.count("/") != 1


def _not_found(path: str, reason: str) -> ModelNotFoundError:
    hub_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    if _looks_local(path):
        where = f"the local folder '{os.path.abspath(os.path.expanduser(path))}'"
        hub_id = "<hub-id>"
    else:
        offline = " (offline: HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        where = f"the Hugging Face cache '{hub_cache}' and the hub{offline}"
        hub_id = path
    return ModelNotFoundError(
        f"could not load the diffusion model '{path}': {reason}\n"
        f"  looked in: {where}.\n"
        "  To provide weights: on a machine with internet run\n"
        f"    huggingface-cli download {hub_id} --local-dir /path/to/model\n"
        "  (or copy any diffusers SD-format folder with unet/ vae/ text_encoder/ tokenizer/ scheduler/),\n"
        "  then pass model.path=/path/to/model. The embedded default needs no download."
    )


def load_model(
    path: str,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    revision: str | None = None,
    variant: str | None = None,
    weights: str = "pretrained",
    architecture: str | None = None,
    seed: int = 0,
) -> DiffusionModel:
    """Load the U-Net, VAE, text encoder, tokenizer and noise schedule of an SD-format pipeline.

    ``path`` is a local folder (``model_index.json`` and component subfolders) or a hub id such as
    ``stabilityai/stable-diffusion-2-1-base`` (from the local cache, or downloaded when online).
    ``weights="random"`` loads nothing: it builds ``architecture`` (``sd15``, ``sd21_base``, ``sd21``) at full
    size with random weights seeded by ``seed`` (:mod:`lods.diffusion.architectures`), for measuring time and
    memory where the weights cannot be had.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"unknown model.weights '{weights}'; choose one of: {', '.join(WEIGHTS)}")
    if weights == "random":
        from lods.diffusion.architectures import ARCHITECTURES, build_random_model

        if architecture is None:
            raise ValueError(
                f"model.weights=random needs model.architecture (the model '{path}' names none); "
                f"choose one of: {', '.join(ARCHITECTURES)}"
            )
        return build_random_model(architecture, seed=seed, device=device, dtype=dtype)

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    path = str(path)
    if _looks_local(path):
        folder = Path(os.path.expanduser(path))
        if not folder.is_dir():
            raise _not_found(path, "no such folder")
        missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
        if missing:
            raise _not_found(path, f"the folder lacks the subfolders {', '.join(missing)}")
        source, kwargs = str(folder), {}
    else:
        source = path
        kwargs = {"revision": revision}
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", variant=variant, **kwargs)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", variant=variant, **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", variant=variant, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
        scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as err:  # hub errors subclass OSError
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _not_found(path, first_line) from err
    index = Path(source) / "model_index.json"
    random_weights = index.is_file() and bool(json.loads(index.read_text()).get("_lods_random_weights"))
    return DiffusionModel(
        unet,
        vae,
        text_encoder,
        tokenizer,
        alphas_cumprod=scheduler.alphas_cumprod,
        prediction_type=scheduler.config.prediction_type,
        scheduler_config=dict(scheduler.config),
        name=f"{path} (random weights)" if random_weights else path,
        device=device,
        dtype=torch_dtype,
        random_weights=random_weights,
    )

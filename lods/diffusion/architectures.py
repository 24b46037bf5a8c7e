"""Full-size Stable Diffusion architectures with random weights, built in code (nothing is downloaded).

``model=sd21_base model.weights=random`` (also ``sd15``, ``sd21``) runs the real architecture -- every layer,
width and resolution of the public checkpoint -- with seeded random weights, so that the time and memory of a
full-size run can be measured where the weights cannot be had. Its images are noise: nothing it produces
says anything about a method's quality, and every output says so (the model's name ends in
"(random weights)", ``metrics.json`` has ``model/random_weights: true``, the log warns).

The values below are those of the diffusers checkpoints' ``unet/``, ``vae/`` and ``text_encoder/``
``config.json`` and ``scheduler/scheduler_config.json`` (stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1-base,
stabilityai/stable-diffusion-2-1). SD 2.x's text encoder is OpenCLIP ViT-H/14 as diffusers' conversion keeps it:
its first 23 of 24 layers (SD 2 conditions on the penultimate layer). No tokenizer can be downloaded either:
:func:`lods.diffusion.tokenizer.clip_byte_tokenizer` gives ids in CLIP's layout, padded to 77.

Initialisation is fast and deterministic: parameters are created on the meta device (no default init), then
filled on the target device from one seeded pool of uniform numbers (a prime number of them, so the rows of
a weight matrix are distinct shifts of it). Weights are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch's
default for linear and convolution layers, norm scales 1, biases 0. The same seed gives the same weights on
every device (per dtype).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field

import torch

from lods.diffusion.loading import resolve_device, resolve_dtype
from lods.diffusion.model import DiffusionModel
from lods.diffusion.tokenizer import clip_byte_tokenizer

log = logging.getLogger(__name__)

POOL_SIZE = 1_048_573  # a prime: longer than any row, so no two rows of a weight matrix repeat each other

# Shared by SD 1.5 and SD 2.x: the 1000-step scaled-linear schedule and the f=8 VAE (latents 4 x 64 x 64 at 512).
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    scaling_factor=0.18215,
)
UNET = dict(
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    center_input_sample=False,
)
CLIP_VIT_L14 = dict(  # openai/clip-vit-large-patch14's text tower (SD 1.x)
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    hidden_act="quick_gelu",
    max_position_embeddings=77,
    projection_dim=768,
    layer_norm_eps=1e-5,
)
OPENCLIP_VIT_H14 = dict(  # OpenCLIP ViT-H/14's text tower up to its penultimate layer (SD 2.x)
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    hidden_act="gelu",
    max_position_embeddings=77,
    projection_dim=512,
    layer_norm_eps=1e-5,
)


@dataclass(frozen=True)
class Architecture:
    """One Stable Diffusion release: what its checkpoint's configs say."""

    name: str
    hub_id: str
    image_size: int  # the training resolution: the U-Net's sample_size is image_size / 8
    prediction_type: str  # epsilon | v_prediction
    text_encoder: dict
    unet: dict
    pad_token: str  # SD 1.x pads prompts with <|endoftext|>, SD 2.x with "!"
    scheduler: dict = field(default_factory=dict)  # scheduler_config.json beyond SCHEDULE
    vae: dict = field(default_factory=lambda: dict(VAE))

    @property
    def scheduler_config(self) -> dict:
        return {**SCHEDULE, **self.scheduler, "prediction_type": self.prediction_type}


# SD 2.x U-Nets: OpenCLIP ViT-H/14 context, per-level head dims, linear projections in the transformers.
SD2_UNET = dict(UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
# The inference scheduler that SD 1.5 and 2.1-base ship (scheduler_config.json; training uses SCHEDULE).
PNDM = dict(_class_name="PNDMScheduler", skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1, clip_sample=False)

ARCHITECTURES = {
    "sd15": Architecture(
        name="sd15",
        hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        image_size=512,
        prediction_type="epsilon",
        text_encoder=CLIP_VIT_L14,
        unet=dict(UNET, cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False),
        pad_token="<|endoftext|>",
        scheduler=PNDM,
    ),
    "sd21_base": Architecture(
        name="sd21_base",
        hub_id="stabilityai/stable-diffusion-2-1-base",
        image_size=512,
        prediction_type="epsilon",
        text_encoder=OPENCLIP_VIT_H14,
        unet=dict(SD2_UNET, upcast_attention=False),
        pad_token="!",
        scheduler=PNDM,
    ),
    "sd21": Architecture(
        name="sd21",
        hub_id="stabilityai/stable-diffusion-2-1",
        image_size=768,
        prediction_type="v_prediction",
        text_encoder=OPENCLIP_VIT_H14,
        unet=dict(SD2_UNET, upcast_attention=True),  # the 768 model's attention overflows in fp16 without it
        pad_token="!",
        scheduler=dict(_class_name="DDIMScheduler", set_alpha_to_one=False, steps_offset=1, clip_sample=False),
    ),
}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}'; choose one of: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


@contextlib.contextmanager
def _parameters_on_meta():
    """Modules built inside get their parameters on the meta device (no memory, no default init); buffers
    (e.g. CLIP's position ids) stay real."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and not param.is_meta:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _materialize(module: torch.nn.Module, generator: torch.Generator, pool: torch.Tensor) -> torch.nn.Module:
    """Replace every meta parameter by one on ``pool``'s device and dtype, filled as the module docstring says."""
    size = pool.numel()
    made: dict[int, torch.nn.Parameter] = {}
    for submodule in module.modules():
        for name, param in list(submodule._parameters.items()):
            if param is None or not param.is_meta:
                continue
            if id(param) not in made:  # a tied parameter is filled once
                value = torch.empty(param.shape, device=pool.device, dtype=pool.dtype)
                if param.ndim >= 2:
                    bound = 1.0 / math.sqrt(param[0].numel())  # fan_in: a row of a linear layer, in x kh x kw of a conv
                    flat = value.view(-1)
                    start = int(torch.randint(size, (1,), generator=generator))
                    done = 0
                    while done < flat.numel():  # the pool from `start`, wrapping around, a slice at a time
                        n = min(size - start, flat.numel() - done)
                        torch.mul(pool[start : start + n], bound, out=flat[done : done + n])
                        done, start = done + n, (start + n) % size
                else:  # norm scales 1, biases 0
                    value.fill_(1.0 if name == "weight" else 0.0)
                made[id(param)] = torch.nn.Parameter(value, requires_grad=False)
            submodule._parameters[name] = made[id(param)]
    return module


def build_meta_modules(arch: Architecture, tokenizer=None) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(text encoder, VAE, U-Net) of ``arch`` with their parameters on the meta device: no memory, no init."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tokenizer or clip_byte_tokenizer(arch.pad_token, arch.text_encoder["max_position_embeddings"])
    special = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    with _parameters_on_meta():
        text_encoder = CLIPTextModel(CLIPTextConfig(**arch.text_encoder, **special))
        vae = AutoencoderKL(**arch.vae, sample_size=arch.image_size)
        unet = UNet2DConditionModel(**arch.unet, sample_size=arch.image_size // 8)
    return text_encoder, vae, unet


def build_random_model(
    arch: str | Architecture = "sd21_base",
    seed: int = 0,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
) -> DiffusionModel:
    """The full-size architecture ``arch`` (``sd15``, ``sd21_base``, ``sd21``, or an :class:`Architecture`)
    with seeded random weights, on ``device`` in ``dtype`` ('auto': fp16 on CUDA, fp32 elsewhere)."""
    from diffusers import DDPMScheduler

    arch = architecture(arch) if isinstance(arch, str) else arch
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = clip_byte_tokenizer(pad_token=arch.pad_token, max_length=arch.text_encoder["max_position_embeddings"])
    text_encoder, vae, unet = build_meta_modules(arch, tokenizer)
    generator = torch.Generator().manual_seed(seed)
    pool = (2 * torch.rand(POOL_SIZE, generator=generator) - 1).to(device, torch_dtype)  # U(-1, 1)
    for module in (text_encoder, vae, unet):
        _materialize(module, generator, pool)
    text_encoder.to(device)  # its buffers
    scheduler = DDPMScheduler(**SCHEDULE, prediction_type=arch.prediction_type)
    log.warning(
        "model %s: the full-size architecture with RANDOM WEIGHTS (seed %d): its images and scores are noise; "
        "use it to measure time and memory only",
        arch.name,
        seed,
    )
    return DiffusionModel(
        unet,
        vae,
        text_encoder,
        tokenizer,
        alphas_cumprod=scheduler.alphas_cumprod,
        prediction_type=arch.prediction_type,
        scheduler_config=arch.scheduler_config,
        name=f"{arch.name} (random weights)",
        device=device,
        dtype=torch_dtype,
        random_weights=True,
    )

"""A tiny, randomly initialised SD-format pipeline built in code (tests and smoke runs)."""

from __future__ import annotations

import torch

from lods.diffusion.loading import resolve_device
from lods.diffusion.model import DiffusionModel
from lods.diffusion.tokenizer import word_level_tokenizer

# SD 2.1-base noise schedule (scaled_linear 0.00085 -> 0.012, 1000 steps).
SD_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
)

TINY_WORDS = (
    "a an the of on in to left right top front side back overhead view photo dslr image , . and with "
    "red green blue yellow orange purple white black grey pink brown "
    "cube sphere cylinder cone torus ball box floor wall plain striped checkered "
    "cat dog horse astronaut riding hamburger boulevard river winter dried"
).split()


def build_tiny_model(
    seed: int = 0,
    image_size: int = 32,
    prediction_type: str = "epsilon",
    max_length: int = 16,
    device: str = "auto",
) -> DiffusionModel:
    """A few-hundred-thousand-parameter U-Net, VAE (factor 2) and CLIP text encoder, seeded."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = word_level_tokenizer(TINY_WORDS, max_length=max_length)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=image_size,
        )
        unet = UNet2DConditionModel(
            sample_size=image_size // 2,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        )
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type)
    return DiffusionModel(
        unet,
        vae,
        text_encoder,
        tokenizer,
        alphas_cumprod=scheduler.alphas_cumprod,
        prediction_type=prediction_type,
        scheduler_config=dict(SD_SCHEDULE, prediction_type=prediction_type),
        name=f"tiny(seed={seed})",
        device=resolve_device(device),
        dtype=torch.float32,
    )

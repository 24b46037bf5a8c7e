"""A frozen SD-format latent diffusion model, seen through what score-distillation priors need."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from lods.diffusion.ddim import ddim_step, timestep_grid

GuidanceFn = Callable[[Tensor, Tensor, float], Tensor]


def guided(eps_cond: Tensor, eps_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance in the diffusers form ``eps_u + s (eps_c - eps_u)``.

    ``s = inf`` returns the limit of ``guided / s``: the pure classifier direction ``eps_c - eps_u``.
    """
    if scale == float("inf"):
        return eps_cond - eps_uncond
    return eps_uncond + scale * (eps_cond - eps_uncond)


class DiffusionModel:
    """U-Net, VAE, text encoder, tokenizer and noise schedule of one SD-format pipeline.

    Every weight is frozen. Priors that learn (LODS-LoRA, VSD) add their own adapters. The model
    is deliberately not an ``nn.Module`` so that Lightning checkpoints never contain its weights.
    """

    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        tokenizer,
        alphas_cumprod: Tensor,
        prediction_type: str = "epsilon",
        scheduler_config: dict | None = None,
        name: str = "model",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        random_weights: bool = False,
    ):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction_type '{prediction_type}'; choose one of: epsilon, v_prediction")
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.prediction_type = prediction_type
        self.scheduler_config = dict(scheduler_config or {})
        self.name = name
        self.random_weights = random_weights  # an architecture with untrained weights: outputs are noise
        self.dtype = dtype
        for module in (unet, vae, text_encoder):
            module.requires_grad_(False)
            module.eval()
        self.alphas_cumprod = alphas_cumprod.float()
        self.device = torch.device("cpu")
        self._prompt_cache: dict[str, Tensor] = {}
        self._adapter_params: dict[str, list[torch.nn.Parameter]] = {}
        self.to(device, dtype)

    # ------------------------------------------------------------------ basics
    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> DiffusionModel:
        self.device = torch.device(device)
        self.dtype = dtype or self.dtype
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(self.device)
            if next(module.parameters()).dtype != self.dtype:
                module.to(self.dtype)
        self.alphas_cumprod = self.alphas_cumprod.to(self.device)
        self._prompt_cache = {k: v.to(self.device, self.dtype) for k, v in self._prompt_cache.items()}
        return self

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return int(self.unet.config.sample_size)

    @property
    def image_size(self) -> int:
        """The resolution the model was trained at (512 for SD 2.1-base)."""
        return self.latent_size * self.vae_scale_factor

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    def abar(self, t: Tensor) -> Tensor:
        """``alphas_cumprod[t]`` shaped [B, 1, 1, 1]; timestep -1 means the clean image (abar = 1)."""
        t = torch.as_tensor(t, device=self.device).long().reshape(-1)
        a = self.alphas_cumprod[t.clamp(min=0)]
        a = torch.where(t < 0, torch.ones_like(a), a)
        return a.view(-1, 1, 1, 1)

    def sigma(self, t: Tensor) -> Tensor:
        """SDI's sigma(t) = sqrt((1 - abar_t) / abar_t), shaped [B, 1, 1, 1]."""
        a = self.abar(t)
        return ((1 - a) / a).sqrt()

    def add_noise(self, z0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Forward diffusion q(z_t | z_0) = sqrt(abar) z0 + sqrt(1 - abar) eps."""
        a = self.abar(t)
        return a.sqrt() * z0 + (1 - a).sqrt() * noise

    # ----------------------------------------------------------------- prompts
    @torch.no_grad()
    def text_embeddings(self, prompts: str | Sequence[str]) -> Tensor:
        """Text-encoder hidden states [N, L, D] (model dtype), cached per prompt string."""
        if isinstance(prompts, str):
            prompts = [prompts]
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            tokens = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
            for prompt, h in zip(missing, hidden):
                self._prompt_cache[prompt] = h.to(self.dtype)
        return torch.stack([self._prompt_cache[p] for p in prompts])

    # ------------------------------------------------------------------- U-Net
    def eps(
        self,
        z_t: Tensor,
        t: Tensor,
        embeddings: Tensor,
        cross_attention_kwargs: dict | None = None,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        """The U-Net's noise prediction eps(z_t; c) in float32, converted from v if needed.

        z_t: [B, C, h, w]; t: [B] or scalar; embeddings: [B, L, D] (broadcast from [1, L, D]).
        Gradients flow to ``embeddings``, adapters and ``z_t`` when they require them.
        """
        B = z_t.shape[0]
        t = torch.as_tensor(t, device=self.device).long().reshape(-1).expand(B).clamp(min=0)
        if embeddings.shape[0] == 1 and B > 1:
            embeddings = embeddings.expand(B, -1, -1)
        out = self.unet(
            z_t.to(self.dtype),
            t,
            encoder_hidden_states=embeddings.to(self.dtype),
            cross_attention_kwargs=cross_attention_kwargs,
            class_labels=None if class_labels is None else class_labels.to(self.dtype),
        ).sample.float()
        if self.prediction_type == "v_prediction":
            # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  eps = sqrt(1 - abar) z_t + sqrt(abar) v
            a = self.abar(t)
            out = (1 - a).sqrt() * z_t.float() + a.sqrt() * out
        return out

    def eps_pair(self, z_t: Tensor, t: Tensor, cond: Tensor, uncond: Tensor) -> tuple[Tensor, Tensor]:
        """(eps(z_t; cond), eps(z_t; uncond)) from one batched U-Net call."""
        B = z_t.shape[0]
        cond = cond.expand(B, -1, -1) if cond.shape[0] == 1 else cond
        uncond = uncond.expand(B, -1, -1) if uncond.shape[0] == 1 else uncond
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(B)
        eps = self.eps(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([cond, uncond]))
        return eps[:B], eps[B:]

    def eps_guided(self, z_t: Tensor, t: Tensor, cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
        """CFG noise prediction ``guided(eps_c, eps_u, scale)``; one U-Net call when guidance is needed."""
        if scale == 1.0:
            return self.eps(z_t, t, cond)
        return guided(*self.eps_pair(z_t, t, cond, uncond), scale)

    # --------------------------------------------------------------------- VAE
    def encode(self, rgb: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Latents of images in [0, 1] ([B, 3, H, W] -> [B, C, H/f, W/f]); differentiable.

        ``sample=False`` uses the posterior mean (DDS's source latent); ``True`` draws from it.
        """
        posterior = self.vae.encode((2 * rgb - 1).to(self.dtype)).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mean
        return latents.float() * self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:
        """Images in [0, 1] from latents; differentiable."""
        image = self.vae.decode((latents / self.latent_scale).to(self.dtype)).sample.float()
        return (image / 2 + 0.5).clamp(0, 1)

    # -------------------------------------------------------------------- DDIM
    def ddim_walk(
        self,
        z: Tensor,
        timesteps: Sequence[int],
        cond: Tensor,
        uncond: Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> Tensor:
        """Follow DDIM through ``timesteps`` (increasing = inversion, decreasing = sampling).

        Each step evaluates the (guided) noise prediction at its starting point and timestep.
        Timestep -1 is the clean image.
        """
        for t_from, t_to in zip(timesteps[:-1], timesteps[1:]):
            t = torch.full((z.shape[0],), max(t_from, 0), device=self.device, dtype=torch.long)
            eps = self.eps_guided(z, t, cond, uncond if uncond is not None else cond, guidance_scale)
            z = ddim_step(z, eps, self.abar(torch.tensor([t_from])), self.abar(torch.tensor([t_to])))
        return z

    @torch.no_grad()
    def ddim_invert(self, z0: Tensor, t_end: int, num_steps: int, cond: Tensor, uncond=None, guidance_scale=1.0):
        """Deterministic DDIM inversion of the clean latent ``z0`` up to timestep ``t_end``."""
        return self.ddim_walk(z0, timestep_grid(-1, t_end, num_steps), cond, uncond, guidance_scale)

    @torch.no_grad()
    def ddim_sample(self, z_t: Tensor, t_start: int, num_steps: int, cond: Tensor, uncond=None, guidance_scale=1.0):
        """Deterministic DDIM sampling from ``z_t`` at ``t_start`` down to the clean latent."""
        return self.ddim_walk(z_t, timestep_grid(t_start, -1, num_steps), cond, uncond, guidance_scale)

    # ----------------------------------------------------------------- adapters
    @contextlib.contextmanager
    def adapter(self, name: str, scale: float = 1.0) -> Iterator[dict]:
        """U-Net calls inside use LoRA adapter ``name`` at ``scale``; outside, every adapter is off.

        Yields the ``cross_attention_kwargs`` to pass to :meth:`eps`.
        """
        self.unet.enable_adapters()
        self.unet.set_adapter(name)
        try:
            yield {"scale": scale}
        finally:
            self._adapters_off()

    def _adapters_off(self) -> None:
        # peft's disable_adapters() also sets requires_grad=False, which would drop the gradients of
        # a loss computed inside adapter() when it is backpropagated later: keep them trainable.
        self.unet.disable_adapters()
        for params in self._adapter_params.values():
            for p in params:
                p.requires_grad_(True)

    def add_lora(self, name: str, rank: int, target_modules: Sequence[str]) -> list[torch.nn.Parameter]:
        """Add a LoRA adapter (zero-initialised up-weights) to the U-Net; returns its parameters.

        The adapter stays off except inside :meth:`adapter`, so the pretrained model is unchanged.
        """
        from peft import LoraConfig

        if getattr(self.unet, "peft_config", None) and name in self.unet.peft_config:
            self.unet.delete_adapters(name)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(target_modules), init_lora_weights=True)
        self.unet.add_adapter(config, adapter_name=name)
        params = [p for n, p in self.unet.named_parameters() if f".{name}." in n and "lora_" in n]
        for p in params:
            p.data = p.data.float()  # adapters train in fp32 even when the model runs in fp16
        self._adapter_params[name] = params
        self._adapters_off()
        return params

    # -------------------------------------------------------------------- saving
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write an SD-format folder (``model_index.json`` + components) loadable by :func:`load_model`."""
        from diffusers import DDIMScheduler

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / "unet")
        self.vae.save_pretrained(folder / "vae")
        self.text_encoder.save_pretrained(folder / "text_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        config = {**self.scheduler_config, "steps_offset": 1, "set_alpha_to_one": False}
        DDIMScheduler.from_config(config).save_pretrained(folder / "scheduler")
        index = {
            "_class_name": "StableDiffusionPipeline",
            "feature_extractor": [None, None],
            "safety_checker": [None, None],
            "requires_safety_checker": False,
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
        if self.random_weights:  # load_model keeps the label of an untrained architecture
            index["_lods_random_weights"] = True
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return folder

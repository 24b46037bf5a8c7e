"""Train the embedded toyworld prior: an SD-format latent diffusion model of the toyworld.

    python -m lods.toyworld.prior              # one run from scratch (make toyworld-prior: this, then init= as below)
    python -m lods.toyworld.prior resume=outputs/toyworld_prior/<run>   # continue a killed run
    python -m lods.toyworld.prior init=lods/models/toyworld output=<folder> unet.steps=2000 unet.lr=2e-4 \
        'data.categories=[surroundings,surroundings,single,multiple]'      # go on training the shipped prior

Stages, each a Lightning fit that resumes from its own last checkpoint:
1. render the training views (random scenes and cameras, captions with view suffixes);
2. the VAE (64x64x3 <-> 16x16x4): L1 + MSE reconstruction and a small KL term; its latent
   scaling factor is then set to 1 / std of the training latents, as Stable Diffusion does;
3. the text encoder (CLIP architecture, word-level tokenizer over the grammar's vocabulary) and
   the U-Net together, with the epsilon-prediction loss on the SD 2.1-base DDPM schedule and an
   empty caption 10% of the time (for classifier-free guidance); an EMA of the U-Net is kept.
With ``init=<folder of a trained prior>`` stage 3 goes on from that prior's text encoder and U-Net (its
VAE and latent scale are kept, stage 2 is skipped), e.g. on views weighted towards one category
(``data.categories``). The result is written with ``DiffusionModel.save_pretrained`` (diffusers layout) and evaluated
against ground truth (``lods.toyworld.evaluate``).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import lods.config  # noqa: F401  (resolvers)
from lods.diffusion.model import DiffusionModel
from lods.diffusion.tiny import SD_SCHEDULE
from lods.diffusion.tokenizer import word_level_tokenizer
from lods.toyworld import grammar
from lods.toyworld.data import ViewSet, render_views

log = logging.getLogger(__name__)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1


class VAEStage(pl.LightningModule):
    def __init__(self, vae, lr: float, kl_weight: float):
        super().__init__()
        self.vae, self.lr, self.kl_weight = vae, lr, kl_weight

    def training_step(self, batch, batch_idx):
        x = to_unit(batch[0])
        posterior = self.vae.encode(x).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(reconstruction, x)
        mse = F.mse_loss(reconstruction, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = l1 + mse + self.kl_weight * kl
        self.log_dict({"vae/l1": l1, "vae/mse": mse, "vae/kl": kl}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0)


class DiffusionStage(pl.LightningModule):
    """Text encoder + U-Net trained together; ``ema_unet`` is what ships."""

    def __init__(
        self,
        unet,
        text_encoder,
        empty_ids: torch.Tensor,
        lr: float,
        caption_dropout: float,
        ema_decay: float,
        view_dropout: float = 0.0,
        open_share: float = 0.0,
    ):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        self.ema_unet = copy.deepcopy(unet).requires_grad_(False)
        self.register_buffer("empty_ids", empty_ids)
        self.register_buffer("alphas_cumprod", DDPM_ALPHAS.clone())
        self.lr, self.caption_dropout, self.ema_decay = lr, caption_dropout, ema_decay
        self.view_dropout, self.open_share = view_dropout, open_share

    def training_step(self, batch, batch_idx):
        latents, ids, ids_any_view, ids_open, ids_open_any_view = batch
        B = latents.shape[0]
        # Some captions are open variants (attributes left unsaid: the caption then names a set of scenes),
        # some lose their view suffix (then they mean "any view"), some are empty (CFG).
        is_open = (torch.rand(B, device=latents.device) < self.open_share)[:, None]
        ids, ids_any_view = torch.where(is_open, ids_open, ids), torch.where(is_open, ids_open_any_view, ids_any_view)
        no_view = torch.rand(B, device=latents.device) < self.view_dropout
        ids = torch.where(no_view[:, None], ids_any_view, ids)
        drop = torch.rand(B, device=latents.device) < self.caption_dropout
        ids = torch.where(drop[:, None], self.empty_ids.expand_as(ids), ids)
        t = torch.randint(0, len(self.alphas_cumprod), (B,), device=latents.device)
        noise = torch.randn_like(latents)
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        hidden = self.text_encoder(ids)[0]
        loss = F.mse_loss(self.unet(noisy, t, encoder_hidden_states=hidden).sample, noise)
        self.log("diffusion/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # Warm-up (Karras-style): the EMA averages over at most ~1/(1-decay) steps, fewer early on.
        decay = min(self.ema_decay, (1 + self.global_step) / (10 + self.global_step))
        with torch.no_grad():
            for ema, p in zip(self.ema_unet.parameters(), self.unet.parameters()):
                ema.lerp_(p, 1 - decay)

    def configure_optimizers(self):
        params = [*self.unet.parameters(), *self.text_encoder.parameters()]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.01)


def _ddpm_alphas() -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_SCHEDULE).alphas_cumprod.float()


DDPM_ALPHAS = _ddpm_alphas()


def _fit(module: pl.LightningModule, dataset, cfg_stage: DictConfig, stage_dir: Path, seed: int) -> None:
    """One resumable Lightning fit of ``cfg_stage.steps`` steps, checkpointing into ``stage_dir``."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    last = stage_dir / "checkpoints" / "last.ckpt"
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg_stage.batch_size, shuffle=True, drop_last=True, generator=generator
    )
    trainer = pl.Trainer(
        max_steps=cfg_stage.steps,
        max_epochs=-1,
        accelerator="auto",
        devices=1,
        logger=CSVLogger(stage_dir, name="", version=""),
        callbacks=[
            ModelCheckpoint(
                dirpath=stage_dir / "checkpoints", every_n_train_steps=cfg_stage.checkpoint_every, save_last=True
            )
        ],
        log_every_n_steps=10,
        enable_model_summary=False,
        default_root_dir=str(stage_dir),
    )
    trainer.fit(module, loader, ckpt_path=last if last.is_file() else None)


def clip_text_model(**config):
    """A CLIPTextModel from keyword arguments (Hydra builds its config in one step)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**config))


def open_variants(captions: list[str], seed: int, drop_prob: float) -> list[str]:
    """An open variant of each training caption (its scene's caption with attributes dropped at random, see
    ``grammar.sample_open_caption``), with the same view suffix; deterministic in ``seed``."""
    import random

    rng = random.Random(seed)
    variants = []
    for caption in captions:
        base, view = grammar.split_view_suffix(caption)
        variant = grammar.sample_open_caption(grammar.parse_caption(base), rng, drop_prob)
        variants.append(variant if view is None else grammar.with_view_suffix(variant, view))
    return variants


def _load_views(cfg: DictConfig, run_dir: Path) -> ViewSet:
    path = run_dir / "views.pt"
    if path.is_file():
        data = torch.load(path, weights_only=False)
        return ViewSet(data["images"], data["captions"], data["categories"])
    # Runs started before balanced views existed have no data.balanced_views: uniform cameras.
    balanced = cfg.data.get("balanced_views", False)
    # Runs started before data.categories existed drew the three categories in equal shares.
    categories = cfg.data.get("categories") or grammar.CATEGORIES
    views = render_views(
        cfg.data.num_scenes, cfg.data.views_per_scene, cfg.seed, cfg.data.size, balanced=balanced, categories=categories
    )
    torch.save({"images": views.images, "captions": views.captions, "categories": views.categories}, path)
    return views


def _continued_prior(init: str, output: str) -> DiffusionModel:
    """The trained prior in folder ``init``, to train on (its U-Net is the shipped EMA one)."""
    from lods.toyworld.model import load_prior

    if Path(init).resolve() == Path(output).resolve():
        raise ValueError(
            f"init and output are the same folder ('{init}'): the continued prior would overwrite the one it "
            "starts from. Write it elsewhere (output=<folder>) and copy it over once it is measured."
        )
    return load_prior(init, device="cpu", dtype="float32")


def train_prior(cfg: DictConfig) -> Path:
    """Run (or resume) every stage; returns the folder of the saved SD-format model."""
    run_dir = Path(cfg.resume or cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume:
        cfg = OmegaConf.merge(OmegaConf.load(run_dir / "config.yaml"), {"resume": str(run_dir)})
    else:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()
    init = cfg.get("init")  # runs started before init existed trained from scratch
    base = _continued_prior(init, cfg.output) if init else None
    views = _load_views(cfg, run_dir)
    log.info("%d training views of %d scenes", len(views), cfg.data.num_scenes)

    if base is None:
        # Stage 1: VAE.
        vae = instantiate(cfg.vae.model)
        vae_stage = VAEStage(vae, cfg.vae.lr, cfg.vae.kl_weight)
        _fit(vae_stage, torch.utils.data.TensorDataset(views.images), cfg.vae, run_dir / "vae", cfg.seed)
        vae = vae_stage.vae.eval().requires_grad_(False)
    else:
        # Continuing a trained prior: its VAE and latent scale stay, so its U-Net's latents keep their meaning.
        vae = base.vae

    # Latents of every view (posterior mean); SD's scaling factor makes them unit-variance.
    with torch.no_grad():
        latents = torch.cat([vae.encode(to_unit(chunk)).latent_dist.mean for chunk in views.images.split(256)])
    if base is None:
        vae.register_to_config(scaling_factor=float(1 / latents.std()))
    scale = float(vae.config.scaling_factor)
    latents = latents * scale

    # Stage 2: text encoder + U-Net (from scratch, or going on from the trained prior's).
    if base is None:
        tokenizer = word_level_tokenizer(grammar.words(), max_length=cfg.text.max_length)
        text_encoder = instantiate(
            cfg.text.model,
            vocab_size=len(tokenizer),
            max_position_embeddings=cfg.text.max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        unet = instantiate(cfg.unet.model)
    else:
        tokenizer, text_encoder, unet = base.tokenizer, base.text_encoder, base.unet
        text_encoder.train().requires_grad_(True)
        unet.train().requires_grad_(True)
    token_kwargs = dict(padding="max_length", max_length=cfg.text.max_length, truncation=True, return_tensors="pt")
    ids = tokenizer(views.captions, **token_kwargs).input_ids
    ids_any_view = tokenizer([grammar.strip_view_suffix(c) for c in views.captions], **token_kwargs).input_ids
    # Runs started before open captions existed have no open_share/open_drop_prob in their config: none open.
    open_share, open_drop_prob = cfg.unet.get("open_share", 0.0), cfg.data.get("open_drop_prob", 0.0)
    open_captions = open_variants(views.captions, cfg.seed + 2, open_drop_prob)
    ids_open = tokenizer(open_captions, **token_kwargs).input_ids
    ids_open_any_view = tokenizer([grammar.strip_view_suffix(c) for c in open_captions], **token_kwargs).input_ids
    empty_ids = tokenizer([""], **token_kwargs).input_ids
    stage = DiffusionStage(
        unet,
        text_encoder,
        empty_ids,
        cfg.unet.lr,
        cfg.unet.caption_dropout,
        cfg.unet.ema_decay,
        cfg.unet.view_dropout,
        open_share,
    )
    dataset = torch.utils.data.TensorDataset(latents, ids, ids_any_view, ids_open, ids_open_any_view)
    _fit(stage, dataset, cfg.unet, run_dir / "diffusion", cfg.seed + 1)

    model = DiffusionModel(
        stage.ema_unet,
        vae,
        stage.text_encoder,
        tokenizer,
        alphas_cumprod=DDPM_ALPHAS,
        prediction_type="epsilon",
        scheduler_config=dict(SD_SCHEDULE, prediction_type="epsilon"),
        name="toyworld",
        device="cpu",
    )
    output = Path(cfg.output)
    model.save_pretrained(output)
    record = {
        "seed": cfg.seed,
        "init": str(Path(init).resolve()) if init else None,
        "continued_from": _training_record(init) if init else None,  # kept: shipping overwrites the init folder
        "categories": list(cfg.data.get("categories") or grammar.CATEGORIES),
        "views": len(views),
        "scenes": cfg.data.num_scenes,
        "vae_steps": 0 if init else cfg.vae.steps,  # a continued prior keeps its VAE
        "diffusion_steps": cfg.unet.steps,
        "diffusion_lr": cfg.unet.lr,
        "balanced_views": cfg.data.get("balanced_views", False),
        "views_per_scene": cfg.data.views_per_scene,
        "open_share": open_share,
        "open_drop_prob": open_drop_prob,
        "view_dropout": cfg.unet.view_dropout,
        "caption_dropout": cfg.unet.caption_dropout,
        "latent_scaling_factor": scale,
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
        "hardware": _hardware(),
        "run_dir": str(run_dir),
    }
    (output / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("saved the toyworld prior to %s", output)
    return output


def _training_record(folder: str) -> dict | None:
    """The training.json of a trained prior's folder (None where it has none)."""
    path = Path(folder) / "training.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import os

    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


@hydra.main(version_base="1.3", config_path="../../conf", config_name="toyworld_prior")
def main(cfg: DictConfig) -> None:
    train_prior(cfg)


if __name__ == "__main__":
    main()

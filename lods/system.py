"""The LightningModule: sample cameras -> render -> prior -> one optimiser step."""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor

from lods.diffusion.model import DiffusionModel
from lods.priors.base import Prior, sds_loss
from lods.utils.images import save_grid
from lods.utils.profiling import StepProfiler


class NonFiniteGradientError(RuntimeError):
    """A NaN or inf reached the gradients; the step was not applied."""


class ScoreDistillationSystem(pl.LightningModule):
    """Optimises a backbone (and the prior's own parameters) with a score-distillation prior.

    The diffusion model is held outside the module tree, so checkpoints carry only what is
    learned: the backbone, the prior's parameters, the optimiser and the random state.
    """

    def __init__(
        self,
        model: DiffusionModel,
        prior: Prior,
        backbone,
        task,
        cfg_schedule,
        optimizer,
        max_steps: int,
        seed: int = 0,
        image_every: int = 100,
        run_dir: str | Path | None = None,
        profile: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        self._model = [model]  # not a submodule: never in state_dict()
        self.prior, self.backbone = prior, backbone
        self.task, self.cfg_schedule, self.optimizer_factory = task, cfg_schedule, optimizer
        self.max_steps, self.image_every = max_steps, image_every
        self.run_dir = Path(run_dir) if run_dir else None
        self.generator = torch.Generator(device=model.device).manual_seed(seed)

        if getattr(backbone, "dims", 2) != task.dims:
            raise ValueError(
                f"backbone {type(backbone).__name__} is {getattr(backbone, 'dims', 2)}D but task "
                f"{type(task).__name__} is {task.dims}D: use backbone=image with text_to_image/image_editing, "
                "backbone=nerf or backbone=gaussians with text_to_3d/image_to_3d"
            )
        resolution = backbone.resolution or model.image_size
        task.setup(model, resolution)
        backbone.setup(model, source_rgb=task.source_rgb, generator=self.generator)
        prior.setup(
            model,
            task.conditioning(task.sample_cameras(0, self.batch_size, self.generator), self.batch_size),
            max_steps,
        )
        cfg_schedule.setup(max_steps)
        self.step_times: list[float] = []
        self.profiler = StepProfiler(profile, model.device)
        self.profiler.watch_unet(model.unet)

    @property
    def model(self) -> DiffusionModel:
        return self._model[0]

    @property
    def batch_size(self) -> int:
        """Images per step: the particles of a 2D backbone, the views of a 3D task."""
        return getattr(self.task, "batch_size", None) or self.backbone.num_particles

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        groups = self.backbone.param_groups()  # one group per learning rate
        prior_params = [p for p in self.prior.parameters() if p.requires_grad]
        if prior_params:
            groups.append({"params": prior_params, "lr": self.prior.lr, "name": "prior"})
        return self.optimizer_factory(groups)

    # ----------------------------------------------------------------------- step
    def training_step(self, batch, batch_idx):
        start = time.perf_counter()
        step = self.global_step
        optimizer = self.optimizers()
        n, profiler = self.batch_size, self.profiler

        with profiler.section("render"):
            cameras = self.task.sample_cameras(step, n, self.generator)
            out = self.backbone.render(cameras, step)
        with profiler.section("encode"):
            z = out.latent if out.latent is not None else self.model.encode(self._at_model_size(out.rgb))
        with profiler.section("prior"):
            guidance_scale = self.cfg_schedule(step)
            conditioning = self.task.conditioning(cameras, n)
            prior_out = self.prior(z, conditioning, step, guidance_scale, generator=self.generator)
        with profiler.section("losses"):
            scale = self.prior.loss_scale(guidance_scale)
            losses = {"sds": scale * sds_loss(z, prior_out.grad), "prior": prior_out.loss}
            losses.update(self.task.losses(out, step, self.backbone))
            losses.update(self.backbone.regularizers(out, step))
            loss = sum(losses.values())
        with profiler.section("backward"):
            optimizer.zero_grad()
            self.manual_backward(loss)
            self._check_gradients(step)
        with profiler.section("update"):
            backbone_info = self.backbone.after_backward(out, step, optimizer.optimizer)
            optimizer.step()

        profiler.end_step()
        self.step_times.append(time.perf_counter() - start)
        metrics = {f"loss/{k}": float(v.detach()) for k, v in losses.items()}
        metrics.update({f"prior/{k}": v for k, v in prior_out.info.items()})
        metrics.update({f"backbone/{k}": v for k, v in backbone_info.items()})
        self.log_dict(metrics, on_step=True, prog_bar=False)
        self.log("loss", float(loss.detach()), prog_bar=True)
        if self.image_every and (step + 1) % self.image_every == 0:
            self.save_images(f"step_{step + 1:06d}")
        return loss.detach()

    def _at_model_size(self, rgb: Tensor) -> Tensor:
        """Renders resized to the diffusion model's resolution (e.g. 64x64 NeRF renders for SD's 512)."""
        size = self.model.image_size
        if rgb.shape[-2:] == (size, size):
            return rgb
        return torch.nn.functional.interpolate(rgb, (size, size), mode="bilinear", align_corners=False)

    def _check_gradients(self, step: int) -> None:
        bad = [name for name, p in self.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            where = f" (checkpoints in {self.run_dir / 'checkpoints'})" if self.run_dir else ""
            raise NonFiniteGradientError(
                f"non-finite gradient at step {step} in {', '.join(bad[:5])}: the step was not applied and the "
                f"run stopped; its last good checkpoint is kept{where}. Lower the learning rate or the guidance "
                "scale, or resume from the checkpoint."
            )

    # ---------------------------------------------------------------- outputs
    @torch.no_grad()
    def images(self) -> Tensor:
        """The result: the 2D particles, or renders of a 3D backbone from the task's evaluation views."""
        return self.backbone.images(self.model, self.task.eval_cameras())

    def save_images(self, name: str, images: Tensor | None = None) -> Path | None:
        """Write (and log) the current images, decoding them unless ``images`` are given."""
        images = self.images().cpu() if images is None else images
        path = None
        if self.run_dir is not None:
            path = save_grid(images, self.run_dir / "images" / f"{name}.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="images", images=[img for img in images], step=self.global_step)
        return path

    def timing(self) -> dict[str, float]:
        """Median seconds per step (the first step, which pays for warm-up, excluded), and per section when
        profiling."""
        times = sorted(self.step_times[1:] or self.step_times)
        return ({"seconds_per_step": times[len(times) // 2]} if times else {}) | self.profiler.summary()

    # --------------------------------------------------------------- state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lods_generator_state"] = self.generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A densified 3D model has other parameter shapes than a fresh one: match them before loading.
        self.backbone.prepare_state_dict(checkpoint["state_dict"], prefix="backbone.")
        if "lods_generator_state" in checkpoint:
            self.generator.set_state(checkpoint["lods_generator_state"])

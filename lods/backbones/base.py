"""What every backbone returns from ``render``, and the contract of the 3D backbones."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

BACKGROUNDS = ("white", "black", "random", "learned")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``, else a ValueError naming both."""
    if value not in allowed:
        raise ValueError(f"unknown {name} '{value}'; choose one of: {', '.join(allowed)}")
    return value


def step_window(name: str, steps) -> tuple[int, int | None]:
    """A regulariser's ``[start, end)`` step range (end None: until the end)."""
    if steps is None:
        return 0, None
    steps = tuple(steps)
    if len(steps) != 2 or steps[0] is None or (steps[1] is not None and steps[1] < steps[0]):
        raise ValueError(f"{name} must be [start, end] with start <= end (end null: no end), got {list(steps)}")
    return int(steps[0]), None if steps[1] is None else int(steps[1])


def weight_at(weight: float, window: tuple[int, int | None], step: int | None) -> float:
    """``weight`` inside its step window (always when ``step`` is None), else 0."""
    start, end = window
    if step is None or (step >= start and (end is None or step < end)):
        return float(weight)
    return 0.0


@dataclass
class RenderOutput:
    rgb: Tensor | None  # [B, 3, H, W] in [0, 1]; None for a backbone that lives in latent space
    latent: Tensor | None = None  # [B, C, h, w] when the backbone optimises the latent directly
    alpha: Tensor | None = None  # [B, 1, H, W]
    depth: Tensor | None = None  # [B, 1, H, W]
    normal: Tensor | None = None  # [B, 3, H, W] world-space unit normals (zero where empty)
    extras: dict | None = None  # backbone-specific tensors a regulariser or a densifier needs


class Backbone3D(nn.Module):
    """A 3D representation rendered from cameras (``lods.cameras.Cameras``, OpenGL c2w, +z up).

    The system calls, in order: ``setup`` once; then per step ``render(cameras, step)`` ->
    prior on the rgb -> ``regularizers(out, step)`` -> backward -> ``after_backward(out, step,
    optimizer)`` (densification may add or remove parameters there) -> optimiser step. The optimiser
    is built from ``param_groups()`` (one learning rate per group). ``export(directory)`` writes the
    asset files (mesh, .ply) a finished run leaves behind.

    ``background`` composites the render over a colour: ``white`` (toyworld's), ``black``,
    ``random`` (a random colour per image while training, white when not) or ``learned`` (a
    learned colour).
    """

    dims = 3
    num_particles = 1  # one 3D model; the task decides how many views a step renders

    def __init__(self, resolution: int | None = None, background: str = "white", lr: float = 1e-2):
        super().__init__()
        check_choice("background", background, BACKGROUNDS)
        self.resolution, self.background, self.lr = resolution, background, lr
        self.background_logit = nn.Parameter(
            torch.full((3,), 3.0), requires_grad=background == "learned"
        )  # sigmoid 0.95

    # ------------------------------------------------------------------ contract
    def setup(self, model=None, source_rgb: Tensor | None = None, generator: torch.Generator | None = None) -> None:
        """Create the parameters (random initialisation draws from ``generator``)."""

    def render(self, cameras, step: int | None = None) -> RenderOutput:
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """Optimiser groups: ``{"params": [...], "lr": float, "name": str}``."""
        groups = [{"params": [p for p in self.parameters() if p.requires_grad], "lr": self.lr, "name": "backbone"}]
        return [g for g in groups if g["params"]]

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        return {}

    def after_backward(self, out: RenderOutput, step: int, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Hook between backward and the optimiser step (densification); returns numbers to log."""
        return {}

    def export(self, directory: str | Path) -> list[Path]:
        """Write the asset files of the current state into ``directory``; returns their paths."""
        return []

    def prepare_state_dict(self, state_dict: dict[str, Tensor], prefix: str = "") -> None:
        """Resize parameters to a checkpoint's shapes before it is loaded (densified models)."""

    # ----------------------------------------------------------------- helpers
    def background_for(self, batch: int, device, generator: torch.Generator | None = None) -> Tensor:
        """Background colours [B, 3] for a batch of renders."""
        if self.background == "black":
            return torch.zeros(batch, 3, device=device)
        if self.background == "random" and self.training:
            g_device = generator.device if generator is not None else "cpu"
            return torch.rand(batch, 3, generator=generator, device=g_device).to(device)
        if self.background == "learned":
            return torch.sigmoid(self.background_logit)[None].expand(batch, 3).to(device)
        return torch.ones(batch, 3, device=device)

    @torch.no_grad()
    def evaluate(self, cameras) -> RenderOutput:
        """A render of ``cameras`` in evaluation mode (no random background), without gradient.

        One camera at a time, concatenated (``extras`` dropped when there are several): the evaluation views are
        rendered at full size, and at the paper's sizes all of them at once do not fit (eight 512x512 NeRF views
        asked the hash grid for one 5 GB tensor on the CPU).
        """
        was_training = self.training
        self.eval()
        try:
            outs = [self.render(cameras[i : i + 1]) for i in range(len(cameras))]
        finally:
            self.train(was_training)
        if len(outs) == 1:
            return outs[0]
        parts = {}
        for field in fields(RenderOutput):
            values = [getattr(out, field.name) for out in outs]
            keep = field.name != "extras" and values[0] is not None
            parts[field.name] = torch.cat(values) if keep else None
        return RenderOutput(**parts)

    def images(self, model=None, cameras=None) -> Tensor:
        """Renders [B, 3, H, W] in [0, 1] of ``cameras`` (evaluation mode)."""
        if cameras is None:
            raise ValueError("a 3D backbone renders images from cameras: pass the task's evaluation cameras")
        return self.evaluate(cameras).rgb.clamp(0, 1)

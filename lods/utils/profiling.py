"""Where a training step's time goes: render, encode, prior (U-Net calls counted apart), losses,
backward, update. Off by default (``profile=true`` turns it on); on CUDA every boundary synchronises,
so the split is exact but the step a little slower."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

SECTIONS = ("render", "encode", "prior", "losses", "backward", "update")


class StepProfiler:
    def __init__(self, enabled: bool = False, device: torch.device | str = "cpu"):
        self.enabled = enabled
        self._cuda = torch.device(device).type == "cuda"
        self._step: dict[str, float] = defaultdict(float)
        self._unet_calls = 0
        self._unet_started: list[float] = []
        self.steps: list[dict[str, float]] = []

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def section(self, name: str):
        if not self.enabled:
            yield
            return
        start = self._now()
        try:
            yield
        finally:
            self._step[name] += self._now() - start

    def watch_unet(self, unet: torch.nn.Module) -> None:
        """Time the U-Net's forward passes (inside the prior section) with module hooks."""
        if not self.enabled:
            return

        def before(module, args, kwargs):
            self._unet_started.append(self._now())

        def after(module, args, kwargs, output):
            self._step["unet"] += self._now() - self._unet_started.pop()
            self._unet_calls += 1

        unet.register_forward_pre_hook(before, with_kwargs=True)
        unet.register_forward_hook(after, with_kwargs=True)

    def end_step(self) -> None:
        if not self.enabled:
            return
        step = dict(self._step)
        step["prior_other"] = step.get("prior", 0.0) - step.get("unet", 0.0)  # noise, inversion, bookkeeping
        step["unet_calls"] = float(self._unet_calls)
        self.steps.append(step)
        self._step, self._unet_calls = defaultdict(float), 0

    def summary(self) -> dict[str, float]:
        """Median seconds of each section per step (``time/<section>``; the first, warm-up step excluded)
        and the U-Net forward passes per step."""
        steps = self.steps[1:] or self.steps
        if not steps:
            return {}
        keys = [*SECTIONS, "unet", "prior_other", "unet_calls"]
        return {
            ("unet_calls_per_step" if k == "unet_calls" else f"time/{k}"): statistics.median(
                s.get(k, 0.0) for s in steps
            )
            for k in keys
        }

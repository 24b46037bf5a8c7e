"""Adaptive density control of 3D Gaussians (3DGS, Kerbl et al. 2023), on any device.

``Densifier`` is gsplat 1.4.0's ``DefaultStrategy`` rewritten for this project's single optimiser:

* every step before ``refine_stop`` it accumulates the screen-space gradient norm of each visible
  Gaussian's projected centre (``meta["means2d"].grad``, after ``retain_grad``), normalised as gsplat
  does: x by ``width / 2``, y by ``height / 2`` (pixels -> NDC) and both by the number of cameras (the
  loss averages over the batch), and counts the views it was visible in;
* every ``refine_every`` steps in ``(refine_start, refine_stop)`` it refines: a Gaussian whose mean
  gradient exceeds ``grow_grad2d`` is *duplicated* when small (largest scale <= ``grow_scale3d`` x
  scene extent) and *split* when large (replaced by 2 samples drawn from itself, scales / 1.6);
  Gaussians with opacity below ``prune_opacity`` are pruned, and after the first opacity reset (from
  the start when ``reset_every`` is 0) so are those larger than ``prune_scale3d`` x scene extent;
  growth stops at ``max_gaussians`` (the highest-gradient candidates win);
* every ``reset_every`` steps (step > 0, before ``refine_stop``) it clamps the opacities to
  ``2 x prune_opacity``, so that Gaussians the views do not need fade out and get pruned.

Differences from gsplat, all deliberate: refinement is done in one pass (prune, duplicate and split
decided on the same Gaussians, so a Gaussian about to be pruned is neither duplicated nor split); a
duplicate copies its original's optimiser state (gsplat zeros it); split children start from zero
state; there is a ``max_gaussians`` cap; no opacity reset at step 0; split samples come from a
``torch.Generator`` so runs are reproducible; gradients of the current step are carried to the new
parameters (copied or zero) so the optimiser step that follows updates every Gaussian.

The optimiser is one ``torch.optim.Optimizer`` shared with other modules; every Gaussian parameter
sits in a param group of its own. ``replace_parameter`` swaps a parameter in its group and reindexes
the per-Gaussian optimiser state (any state tensor shaped like the parameter: Adam's ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``, SGD's ``momentum_buffer``); scalar state (``step``) is kept.

``GsplatStrategy`` runs gsplat's own ``DefaultStrategy`` on the same parameters through per-parameter
views of the shared optimiser's groups (gsplat expects one optimiser per parameter).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GAUSSIAN_PARAMS = ("means", "quats", "scales", "opacities", "sh0", "shN")
SPLIT_SCALE_DIVISOR = 1.6  # 3DGS: each of the 2 split children gets the parent's scales / (0.8 * 2)


def unwrap_optimizer(optimizer):
    """The torch optimiser inside a Lightning ``LightningOptimizer`` (or the optimiser itself)."""
    return getattr(optimizer, "_optimizer", optimizer)


def replace_parameter(
    optimizer: torch.optim.Optimizer | None, old: Tensor, new: nn.Parameter, rows: Callable[[Tensor], Tensor]
) -> bool:
    """Swap ``old`` for ``new`` in its optimiser group; per-Gaussian state is mapped through ``rows``.

    ``rows`` maps a tensor shaped like ``old`` to one shaped like ``new`` (reindexing along dim 0). The
    current gradient goes through it too. Returns False when ``old`` is in no group of ``optimizer``.
    """
    if old.grad is not None:
        new.grad = rows(old.grad)
    if optimizer is None:
        return False
    optimizer = unwrap_optimizer(optimizer)
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
                state = optimizer.state.pop(old, None)
                if state is not None:
                    optimizer.state[new] = {
                        k: rows(v) if torch.is_tensor(v) and v.shape == old.shape else v for k, v in state.items()
                    }
                return True
    return False


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] from wxyz quaternions (normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


class Densifier:
    """gsplat's DefaultStrategy for one shared optimiser, with a cap (see the module docstring)."""

    def __init__(
        self,
        grow_grad2d: float = 2e-4,
        grow_scale3d: float = 0.01,
        prune_opacity: float = 0.005,
        prune_scale3d: float = 0.1,
        refine_start: int = 500,
        refine_stop: int = 15_000,
        refine_every: int = 100,
        reset_every: int = 3000,
        max_gaussians: int = 1_000_000,
    ):
        if refine_every < 1:
            raise ValueError(f"refine_every must be >= 1, got {refine_every}")
        if max_gaussians < 1:
            raise ValueError(f"max_gaussians must be >= 1, got {max_gaussians}")
        self.grow_grad2d, self.grow_scale3d = grow_grad2d, grow_scale3d
        self.prune_opacity, self.prune_scale3d = prune_opacity, prune_scale3d
        self.refine_start, self.refine_stop, self.refine_every = refine_start, refine_stop, refine_every
        self.reset_every, self.max_gaussians = reset_every, max_gaussians

    # ----------------------------------------------------------------- schedule
    def is_refine_step(self, step: int) -> bool:
        return self.refine_start < step < self.refine_stop and step % self.refine_every == 0

    def is_reset_step(self, step: int) -> bool:
        return self.reset_every > 0 and 0 < step < self.refine_stop and step % self.reset_every == 0

    # -------------------------------------------------------------- statistics
    @staticmethod
    @torch.no_grad()
    def accumulate(grad2d: Tensor, count: Tensor, meta: dict) -> None:
        """Add this step's normalised screen-space gradient norms to ``grad2d`` and visibility to ``count``."""
        means2d = meta["means2d"]
        if means2d.grad is None:
            return
        grads = means2d.grad.clone()
        grads[..., 0] *= meta["width"] / 2.0 * meta["n_cameras"]
        grads[..., 1] *= meta["height"] / 2.0 * meta["n_cameras"]
        if meta.get("gaussian_ids") is not None:  # packed: grads [nnz, 2]
            ids = meta["gaussian_ids"]
        else:  # grads [C, N, 2]
            visible = meta["radii"] > 0
            ids = torch.where(visible)[1]
            grads = grads[visible]
        grad2d.index_add_(0, ids, grads.norm(dim=-1).to(grad2d.dtype))
        count.index_add_(0, ids, torch.ones_like(ids, dtype=count.dtype))

    # ---------------------------------------------------------------- refining
    @torch.no_grad()
    def refine(
        self,
        params: dict[str, nn.Parameter],
        optimizer: torch.optim.Optimizer | None,
        grad2d: Tensor,
        count: Tensor,
        step: int,
        scene_extent: float,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, nn.Parameter], dict[str, int]]:
        """Duplicate, split and prune; returns the new parameters (already swapped in the optimiser) and counts."""
        N = params["means"].shape[0]
        device = params["means"].device
        mean_grad = grad2d / count.clamp_min(1)
        high = mean_grad > self.grow_grad2d
        max_scale = params["scales"].exp().amax(dim=-1)
        small = max_scale <= self.grow_scale3d * scene_extent
        prune = torch.sigmoid(params["opacities"]) < self.prune_opacity
        if step > self.reset_every:  # 3DGS prunes world-space giants only once opacities have been reset
            prune |= max_scale > self.prune_scale3d * scene_extent
        dup, split = high & small & ~prune, high & ~small & ~prune

        kept = N - int(prune.sum())
        budget = max(self.max_gaussians - kept, 0)  # every duplicate or split adds one Gaussian
        candidates = dup | split
        if int(candidates.sum()) > budget:
            score = torch.where(candidates, mean_grad, torch.full_like(mean_grad, -math.inf))
            chosen = torch.zeros_like(candidates)
            chosen[torch.argsort(score, descending=True, stable=True)[:budget]] = True
            dup, split = dup & chosen, split & chosen

        stay = torch.where(~prune & ~split)[0]
        dup_ids, split_ids = torch.where(dup)[0], torch.where(split)[0]
        n_split = len(split_ids)
        # Two samples from each split Gaussian: mean + R diag(s) z, z ~ N(0, I).
        scales = params["scales"][split_ids].exp()
        rotmats = quat_to_rotmat(params["quats"][split_ids])
        gen_device = generator.device if generator is not None else "cpu"
        z = torch.randn(2, n_split, 3, generator=generator, device=gen_device).to(device, scales.dtype)
        offsets = torch.einsum("nij,nj,bnj->bni", rotmats, scales, z)  # [2, S, 3]

        def children(name: str, p: Tensor) -> Tensor:
            if name == "means":
                return (p[split_ids] + offsets).reshape(-1, 3)
            if name == "scales":
                return torch.log(scales / SPLIT_SCALE_DIVISOR).repeat(2, 1)
            return p[split_ids].repeat(2, *([1] * (p.dim() - 1)))

        def rows(t: Tensor) -> Tensor:  # optimiser state and gradients: copy for stay and dup, zero for children
            return torch.cat([t[stay], t[dup_ids], t.new_zeros(2 * n_split, *t.shape[1:])])

        new_params = {}
        for name, p in params.items():
            value = torch.cat([p[stay], p[dup_ids], children(name, p)])
            new_params[name] = nn.Parameter(value, requires_grad=p.requires_grad)
            replace_parameter(optimizer, p, new_params[name], rows)
        stats = {"duplicated": len(dup_ids), "split": n_split, "pruned": N - kept}
        return new_params, stats

    @torch.no_grad()
    def reset_opacities(self, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer | None) -> None:
        """Clamp opacities to 2 x prune_opacity (in place) and zero their optimiser state."""
        opacities = params["opacities"]
        opacities.clamp_(max=math.log(2 * self.prune_opacity / (1 - 2 * self.prune_opacity)))
        state = unwrap_optimizer(optimizer).state.get(opacities) if optimizer is not None else None
        for value in (state or {}).values():
            if torch.is_tensor(value) and value.shape == opacities.shape:
                value.zero_()


class _GroupView:
    """One parameter's group of a shared optimiser, shaped like the one-group optimiser gsplat expects.

    gsplat's ops read ``param_groups[0]["params"][0]`` and ``state[p]`` and write a new list into
    ``param_groups[0]["params"]`` and ``state[p_new]``: both land in the shared optimiser, since the group
    dict and the state dict are the shared ones.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, group: dict):
        self.param_groups = [group]
        self.state = optimizer.state


class GsplatStrategy:
    """gsplat's ``DefaultStrategy`` on our parameters and single optimiser (no ``max_gaussians`` cap).

    gsplat's own schedule applies, including its opacity reset at step 0 and zeroed state for duplicates;
    with ``reset_every`` 0 it never resets opacities and never prunes large Gaussians.
    """

    def __init__(self, densifier: Densifier):
        try:
            from gsplat.strategy import DefaultStrategy
        except ImportError as error:  # pragma: no cover - gsplat is a dependency where this is used
            raise ValueError("strategy 'gsplat' needs gsplat installed; choose one of: lods, gsplat") from error
        d = densifier
        self.strategy = DefaultStrategy(
            prune_opa=d.prune_opacity,
            grow_grad2d=d.grow_grad2d,
            grow_scale3d=d.grow_scale3d,
            prune_scale3d=d.prune_scale3d,
            refine_start_iter=d.refine_start,
            refine_stop_iter=d.refine_stop,
            reset_every=d.reset_every if d.reset_every > 0 else 10**9,
            refine_every=d.refine_every,
        )

    def step(
        self,
        params: dict[str, nn.Parameter],
        optimizer: torch.optim.Optimizer,
        grad2d: Tensor,
        count: Tensor,
        step: int,
        scene_extent: float,
        meta: dict,
    ) -> tuple[dict[str, nn.Parameter], Tensor, Tensor]:
        """One ``step_post_backward``; returns the new parameters and accumulators."""
        optimizer = unwrap_optimizer(optimizer)
        views = {}
        for name, p in params.items():
            group = next((g for g in optimizer.param_groups if any(q is p for q in g["params"])), None)
            if group is None or len(group["params"]) != 1:
                raise ValueError(f"strategy 'gsplat' needs '{name}' alone in one optimiser group (see param_groups)")
            views[name] = _GroupView(optimizer, group)
        params = dict(params)
        state = {"grad2d": grad2d, "count": count, "scene_scale": scene_extent}
        self.strategy.step_post_backward(params, views, state, step, meta, packed=meta.get("gaussian_ids") is not None)
        N = params["means"].shape[0]
        grad2d = state["grad2d"] if state["grad2d"] is not None else grad2d.new_zeros(N)
        count = state["count"] if state["count"] is not None else count.new_zeros(N)
        return params, grad2d, count

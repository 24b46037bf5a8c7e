"""3D Gaussian Splatting (Kerbl et al. 2023) as a score-distillation backbone (GaussianDreamer-style).

Parameters (gsplat's names and raw values): ``means [N, 3]``, ``quats [N, 4]`` (wxyz, normalised by the
rasterizer), ``scales [N, 3]`` (log), ``opacities [N]`` (logits), ``sh0 [N, 1, 3]`` and
``shN [N, (d + 1)^2 - 1, 3]`` (real spherical harmonics up to degree d = ``sh_degree``; the colour is
``SH + 0.5``, clamped at 0). The active degree grows by one every ``sh_degree_interval`` steps (3DGS's
schedule); renders without a step (evaluation) use the full degree, whose not yet trained bands are zero.

Rendering goes through ``lods.backbones.rasterize.rasterize`` (gsplat on CUDA, the pure-PyTorch
``rasterize_cpu`` elsewhere) in mode "RGB+ED" over ``background_for``'s colours; ``camera_matrices`` is
the one place where the project's OpenGL camera-to-world matrices become gsplat's OpenCV world-to-camera
``viewmats``. ``depth`` is the expected camera-space z (0 where nothing was hit); no normals.

Densification (``lods.backbones.densify``) runs in ``after_backward`` on the screen-space gradients of the
step's render; its accumulators are buffers, so a checkpoint holds them, and ``prepare_state_dict``
resizes every per-Gaussian tensor to a checkpoint's before it is loaded. The means' learning rate decays
exponentially (3DGS's schedule) when ``lr_means_final`` is set: ``means_lr(step)``, applied to the
optimiser's means group in ``after_backward``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from lods.backbones.base import Backbone3D, RenderOutput, check_choice, step_window, weight_at
from lods.backbones.densify import GAUSSIAN_PARAMS, Densifier, GsplatStrategy, unwrap_optimizer
from lods.backbones.ply import read_point_cloud, write_gaussians_ply
from lods.backbones.rasterize import MAX_SH_DEGREE, rasterize
from lods.cameras import Cameras, opengl_to_opencv

INITS = ("ball", "point_cloud")
INIT_COLORS = ("grey", "random")
STRATEGIES = ("lods", "gsplat")
SH_C0 = 0.2820947917738781  # colour = SH_C0 * sh0 + 0.5 at degree 0
BUFFERS = ("densify_grad2d", "densify_count")


def camera_matrices(cameras: Cameras) -> tuple[Tensor, Tensor]:
    """gsplat's world-to-camera ``viewmats [B, 4, 4]`` (OpenCV) and pixel ``Ks [B, 3, 3]`` of ``cameras``."""
    return opengl_to_opencv(cameras.c2w), cameras.intrinsics()


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC coefficients [N, 1, 3] whose degree-0 colour is ``rgb`` [N, 3]."""
    return ((rgb - 0.5) / SH_C0)[:, None, :]


def mean_neighbour_distance(points: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """Each point's mean distance to its ``k`` nearest other points [N] (3DGS's initial scale)."""
    N = points.shape[0]
    k = min(k, N - 1)
    if k < 1:
        return torch.ones(N, device=points.device, dtype=points.dtype)
    out = []
    for start in range(0, N, chunk):
        d = torch.cdist(points[start : start + chunk], points)  # [n, N]
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = math.inf  # not itself
        out.append(d.topk(k, dim=-1, largest=False).values.mean(-1))
    return torch.cat(out)


class GaussianBackbone(Backbone3D):
    """3D Gaussians rendered by splatting; see the module docstring and ``conf/backbone/gaussians.yaml``."""

    def __init__(
        self,
        resolution: int | None = None,
        background: str = "white",
        init: str = "ball",
        init_path: str | None = None,
        num_points: int = 2000,
        init_radius: float = 0.6,
        halo_points: int = 0,
        halo_radius: float = 0.9,
        halo_opacity: float = 0.02,
        init_color: str = "grey",
        init_opacity: float = 0.1,
        init_scale: float = 1.0,
        sh_degree: int = 0,
        sh_degree_interval: int = 1000,
        scene_extent: float = 3.0,
        lr_means: float = 3e-4,
        lr_means_final: float | None = None,
        lr_means_decay_steps: int = 30_000,
        lr_scales: float = 5e-3,
        lr_quats: float = 1e-3,
        lr_opacities: float = 5e-2,
        lr_sh0: float = 1e-2,
        lr_shN: float | None = None,
        lr: float = 1e-2,
        densify: bool = True,
        strategy: str = "lods",
        grow_grad2d: float = 10.0,
        grow_scale3d: float = 0.01,
        prune_opacity: float = 0.005,
        prune_scale3d: float = 0.1,
        refine_start: int = 100,
        refine_stop: int = 500,
        refine_every: int = 100,
        reset_every: int = 0,
        max_gaussians: int = 10_000,
        opacity_reg: float = 0.0,
        opacity_reg_steps: tuple[int, int | None] = (0, None),
        scale_reg: float = 0.0,
        scale_reg_steps: tuple[int, int | None] = (0, None),
        max_anisotropy: float = 10.0,
        near_plane: float = 0.01,
        far_plane: float = 1e10,
        eps2d: float = 0.3,
    ):
        super().__init__(resolution=resolution, background=background, lr=lr)
        check_choice("init", init, INITS)
        check_choice("init_color", init_color, INIT_COLORS)
        check_choice("strategy", strategy, STRATEGIES)
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree {sh_degree} is not supported; choose one of: 0, 1, 2, 3")
        if halo_points < 0:
            raise ValueError(f"halo_points must be >= 0, got {halo_points}")
        if halo_points and init != "ball":
            raise ValueError(f"halo_points ({halo_points}) needs init 'ball', got init '{init}'")
        if init == "point_cloud" and not init_path:
            raise ValueError("init 'point_cloud' needs init_path: the .ply point cloud to start from")
        if init == "point_cloud" and not Path(init_path).is_file():
            raise ValueError(f"init_path '{init_path}' is not a file: init 'point_cloud' needs a .ply point cloud")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        if not 0 < init_opacity < 1:
            raise ValueError(f"init_opacity must be in (0, 1), got {init_opacity}")
        if max_gaussians < num_points + halo_points:
            raise ValueError(
                f"max_gaussians ({max_gaussians}) must be >= num_points ({num_points})"
                + (f" + halo_points ({halo_points})" if halo_points else "")
            )
        if halo_points and not halo_radius > init_radius:
            raise ValueError(f"halo_radius ({halo_radius}) must be > init_radius ({init_radius})")
        if not 0 < halo_opacity < 1:
            raise ValueError(f"halo_opacity must be in (0, 1), got {halo_opacity}")
        for name, value in (("init_radius", init_radius), ("scene_extent", scene_extent), ("init_scale", init_scale)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if sh_degree_interval < 1:
            raise ValueError(f"sh_degree_interval must be >= 1, got {sh_degree_interval}")
        if max_anisotropy < 1:
            raise ValueError(f"max_anisotropy must be >= 1, got {max_anisotropy}")
        self.init, self.init_path, self.num_points = init, init_path, num_points
        self.init_radius, self.init_color = init_radius, init_color
        self.halo_points, self.halo_radius, self.halo_opacity = halo_points, halo_radius, halo_opacity
        self.init_opacity, self.init_scale = init_opacity, init_scale
        self.sh_degree, self.sh_degree_interval, self.scene_extent = sh_degree, sh_degree_interval, scene_extent
        self.lr_means, self.lr_means_final, self.lr_means_decay_steps = lr_means, lr_means_final, lr_means_decay_steps
        self.lr_scales, self.lr_quats, self.lr_opacities = lr_scales, lr_quats, lr_opacities
        self.lr_sh0 = lr_sh0
        self.lr_shN = lr_sh0 / 20 if lr_shN is None else lr_shN
        self.densify, self.strategy = densify, strategy
        self.densifier = Densifier(
            grow_grad2d=grow_grad2d,
            grow_scale3d=grow_scale3d,
            prune_opacity=prune_opacity,
            prune_scale3d=prune_scale3d,
            refine_start=refine_start,
            refine_stop=refine_stop,
            refine_every=refine_every,
            reset_every=reset_every,
            max_gaussians=max_gaussians,
        )
        self._gsplat = GsplatStrategy(self.densifier) if strategy == "gsplat" else None
        self.opacity_reg, self.opacity_reg_steps = opacity_reg, step_window("opacity_reg_steps", opacity_reg_steps)
        self.scale_reg, self.scale_reg_steps = scale_reg, step_window("scale_reg_steps", scale_reg_steps)
        self.max_anisotropy = max_anisotropy
        self.near_plane, self.far_plane, self.eps2d = near_plane, far_plane, eps2d
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, model=None, source_rgb: Tensor | None = None, generator: torch.Generator | None = None) -> None:
        """Create the Gaussians: ``num_points`` in a ball of ``init_radius`` (and ``halo_points`` fainter ones in
        the shell out to ``halo_radius``) or from ``init_path``'s point cloud."""
        device = getattr(model, "device", None) or torch.device("cpu")
        self._generator = generator
        g_device = generator.device if generator is not None else "cpu"

        def uniform(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, device=g_device).cpu()

        def in_shell(n: int, r0: float, r1: float) -> Tensor:  # uniform in volume between radii r0 < r1
            direction = torch.randn(n, 3, generator=generator, device=g_device).cpu()
            inner = (r0 / r1) ** 3
            return nn.functional.normalize(direction, dim=-1) * r1 * (inner + (1 - inner) * uniform(n, 1)) ** (1 / 3)

        colours = None
        if self.init == "ball":
            means = in_shell(self.num_points, 0.0, self.init_radius)
            if self.halo_points:
                means = torch.cat([means, in_shell(self.halo_points, self.init_radius, self.halo_radius)])
        else:
            means, colours = read_point_cloud(self.init_path)
            if len(means) == 0:
                raise ValueError(f"the point cloud {self.init_path} has no points")
            if len(means) > self.num_points:  # a seeded subset keeps the CPU budget
                keep = torch.randperm(len(means), generator=generator, device=g_device).cpu()[: self.num_points]
                means, colours = means[keep], None if colours is None else colours[keep]
        N = len(means)
        if colours is None:
            colours = uniform(N, 3) if self.init_color == "random" else 0.5 + 0.1 * (uniform(N, 3) - 0.5)
        scales = (mean_neighbour_distance(means) * self.init_scale).clamp_min(1e-4).log()[:, None].repeat(1, 3)
        quats = torch.zeros(N, 4)
        quats[:, 0] = 1.0
        opacities = torch.full((N,), self.init_opacity)
        if self.init == "ball" and self.halo_points:
            opacities[self.num_points :] = self.halo_opacity
        values = {
            "means": means,
            "quats": quats,
            "scales": scales,
            "opacities": torch.logit(opacities),
            "sh0": rgb_to_sh0(colours),
            "shN": torch.zeros(N, (self.sh_degree + 1) ** 2 - 1, 3),
        }
        for name, value in values.items():
            setattr(self, name, nn.Parameter(value.float().to(device).contiguous()))
        self.register_buffer("densify_grad2d", torch.zeros(N, device=device))
        self.register_buffer("densify_count", torch.zeros(N, device=device))
        self.background_logit.data = self.background_logit.data.to(device)

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0] if hasattr(self, "means") else 0

    def gaussian_params(self) -> dict[str, nn.Parameter]:
        if not hasattr(self, "means"):
            raise RuntimeError("GaussianBackbone.setup() must run before the Gaussians are used")
        return {name: getattr(self, name) for name in GAUSSIAN_PARAMS}

    # ----------------------------------------------------------------- render
    def active_sh_degree(self, step: int | None) -> int:
        """3DGS's schedule: one more SH band every ``sh_degree_interval`` steps; the full degree without a step."""
        if step is None:
            return self.sh_degree
        return min(self.sh_degree, step // self.sh_degree_interval)

    def render(self, cameras: Cameras, step: int | None = None) -> RenderOutput:
        p = self.gaussian_params()
        viewmats, Ks = camera_matrices(cameras)
        B, device = len(cameras), p["means"].device
        degree = self.active_sh_degree(step)
        colors = torch.cat([p["sh0"], p["shN"][:, : (degree + 1) ** 2 - 1]], dim=1)
        render_colors, render_alphas, meta = rasterize(
            p["means"],
            p["quats"],
            torch.exp(p["scales"]),
            torch.sigmoid(p["opacities"]),
            colors,
            viewmats.to(device),
            Ks.to(device),
            cameras.width,
            cameras.height,
            near_plane=self.near_plane,
            far_plane=self.far_plane,
            sh_degree=degree,
            backgrounds=self.background_for(B, device, self._generator),
            render_mode="RGB+ED",
            eps2d=self.eps2d,
        )
        if meta["means2d"].requires_grad:
            meta["means2d"].retain_grad()  # the densification signal
        image = render_colors.permute(0, 3, 1, 2)  # [B, 4, H, W]
        return RenderOutput(
            rgb=image[:, :3],
            alpha=render_alphas.permute(0, 3, 1, 2),
            depth=image[:, 3:],
            extras={"meta": meta, "sh_degree": degree},
        )

    # -------------------------------------------------------------- optimiser
    def means_lr(self, step: int) -> float:
        """The means' learning rate at ``step``: 3DGS's log-linear decay to ``lr_means_final`` (x scene extent)."""
        lr = self.lr_means
        if self.lr_means_final is not None:
            t = min(max(step / max(self.lr_means_decay_steps, 1), 0.0), 1.0)
            lr = math.exp((1 - t) * math.log(self.lr_means) + t * math.log(self.lr_means_final))
        return lr * self.scene_extent

    def param_groups(self) -> list[dict]:
        """One named group per Gaussian parameter (gsplat's strategy needs them apart), and the background's."""
        p = self.gaussian_params()
        lrs = {
            "means": self.means_lr(0),
            "quats": self.lr_quats,
            "scales": self.lr_scales,
            "opacities": self.lr_opacities,
            "sh0": self.lr_sh0,
            "shN": self.lr_shN,
        }
        groups = [{"params": [p[name]], "lr": lr, "name": name} for name, lr in lrs.items()]
        if self.background_logit.requires_grad:
            groups.append({"params": [self.background_logit], "lr": self.lr, "name": "background"})
        return groups

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """``opacity``: mean rendered alpha (sparsity); ``scale``: log-anisotropy above ``max_anisotropy`` (needles)."""
        losses = {}
        weight = weight_at(self.opacity_reg, self.opacity_reg_steps, step)
        if weight:
            losses["opacity"] = weight * out.alpha.mean()
        weight = weight_at(self.scale_reg, self.scale_reg_steps, step)
        if weight:
            log_scales = self.scales
            excess = log_scales.amax(-1) - log_scales.amin(-1) - math.log(self.max_anisotropy)
            losses["scale"] = weight * torch.relu(excess).mean()
        return losses

    def after_backward(self, out: RenderOutput, step: int, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Decay the means' learning rate, then densify and prune (changes N); returns counts to log."""
        torch_optimizer = unwrap_optimizer(optimizer)
        if self.lr_means_final is not None:
            for group in torch_optimizer.param_groups:
                if any(q is self.means for q in group["params"]):
                    group["lr"] = self.means_lr(step)
        stats: dict[str, float] = {}
        if self.densify and step is not None and out.extras is not None and "meta" in out.extras:
            meta = out.extras["meta"]
            if self._gsplat is not None:
                params, self.densify_grad2d, self.densify_count = self._gsplat.step(
                    self.gaussian_params(),
                    torch_optimizer,
                    self.densify_grad2d,
                    self.densify_count,
                    step,
                    self.scene_extent,
                    meta,
                )
                self._set_params(params)
            else:
                stats.update(self._densify(meta, step, torch_optimizer))
        stats["gaussians"] = float(self.num_gaussians)
        return stats

    def _densify(self, meta: dict, step: int, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        d, stats = self.densifier, {}
        if step >= d.refine_stop:
            return stats
        d.accumulate(self.densify_grad2d, self.densify_count, meta)
        if d.is_refine_step(step):
            params, counts = d.refine(
                self.gaussian_params(),
                optimizer,
                self.densify_grad2d,
                self.densify_count,
                step,
                self.scene_extent,
                self._generator,
            )
            self._set_params(params)
            self.densify_grad2d = self.densify_grad2d.new_zeros(self.num_gaussians)
            self.densify_count = self.densify_count.new_zeros(self.num_gaussians)
            stats.update({f"densify/{k}": float(v) for k, v in counts.items()})
        if d.is_reset_step(step):
            d.reset_opacities(self.gaussian_params(), optimizer)
            stats["densify/opacity_reset"] = 1.0
        return stats

    def _set_params(self, params: dict[str, nn.Parameter]) -> None:
        for name, value in params.items():
            setattr(self, name, value)

    # --------------------------------------------------------- export, resume
    def export(self, directory: str | Path) -> list[Path]:
        """``gaussians.ply`` in the standard 3DGS layout (viewers and 3DGS tools read it)."""
        p = self.gaussian_params()
        path = write_gaussians_ply(
            Path(directory) / "gaussians.ply", p["means"], p["sh0"], p["shN"], p["opacities"], p["scales"], p["quats"]
        )
        return [path]

    def prepare_state_dict(self, state_dict: dict[str, Tensor], prefix: str = "") -> None:
        """Resize the per-Gaussian parameters and buffers to ``state_dict``'s shapes (call before building the optimiser)."""
        device = self.background_logit.device
        for name in (*GAUSSIAN_PARAMS, *BUFFERS):
            value = state_dict.get(prefix + name)
            if value is None:
                continue
            current = getattr(self, name, None)
            if current is not None and current.shape == value.shape:
                continue
            empty = torch.zeros(value.shape, dtype=value.dtype, device=device)
            if name in BUFFERS:
                self.register_buffer(name, empty)
            else:
                setattr(self, name, nn.Parameter(empty))


def benchmark_render(counts=(1000, 2000, 4000, 8000), size: int = 64, repeats: int = 21, ply=None) -> dict:
    """Median seconds of one render forward + backward (batch 1, ``size`` x ``size``) per Gaussian count.

    Default configuration, toyworld's camera (distance 3, fovy 45) at elevation 15 and a different azimuth
    each repeat; ``ply``: time a trained model (a run's ``export/gaussians.ply``) instead of fresh balls.
    """
    import time

    from lods.backbones.ply import read_gaussians_ply
    from lods.cameras import orbit_cameras

    results = {}
    for count in [None] if ply else counts:
        backbone = GaussianBackbone(num_points=count or 1, max_gaussians=max(count or 1, 10_000))
        backbone.setup(None, None, torch.Generator().manual_seed(0))
        if ply:
            loaded = read_gaussians_ply(ply)
            backbone.sh_degree = round(math.sqrt(loaded["shN"].shape[1] + 1)) - 1
            backbone._set_params({k: nn.Parameter(v) for k, v in loaded.items()})
        times = []
        for i in range(repeats):
            cameras = orbit_cameras(float(i * 137 % 360), 15.0, 3.0, 45.0, size, size)
            start = time.perf_counter()
            out = backbone.render(cameras, step=10_000)
            (out.rgb.square().mean() + out.alpha.mean()).backward()
            times.append(time.perf_counter() - start)
        results[backbone.num_gaussians] = sorted(times[1:])[len(times[1:]) // 2]  # the first is warm-up
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Render forward + backward time of the Gaussian backbone.")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 2000, 4000, 8000, 10000])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--ply", default=None, help="a trained model's gaussians.ply instead of fresh balls")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    for count, seconds in benchmark_render(args.counts, args.size, ply=args.ply).items():
        print(f"{count:6d} Gaussians, {args.size}x{args.size}, {threads} thread(s): {1000 * seconds:.1f} ms")

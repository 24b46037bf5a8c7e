"""A NeRF built from nerfstudio field components, fast enough to distil on two CPU cores.

Field. Positions in the box ``[-radius, radius]^3`` are mapped to ``[0, 1]^3`` and encoded by nerfstudio's
``HashEncoding`` (tiny-cuda-nn when CUDA and ``tinycudann`` are there, else PyTorch). Two nerfstudio ``MLP``
heads read the encoding: density (``trunc_exp`` or ``softplus`` of the head's output plus ``density_bias``
plus the Magic3D blob ``blob_density * (1 - |x| / blob_radius)``, raised to the density ``halo_density``
where it falls below it within ``halo_radius``: a faint shell the backdrop can grow from; over
``halo_fade_steps`` its density falls geometrically to ``halo_final_density``, so that once the backdrop has grown,
the empty shell leaves the occupancy grid and stops costing samples) and colour (sigmoid; view-independent
albedo as in DreamFusion unless ``view_dependent``, which adds nerfstudio's SH direction encoding). The
PyTorch path of the encoding is replaced by ``HashGrid.pytorch_fwd``: the same table, hash and trilinear
interpolation as nerfstudio's (checked in the tests), 2-3x faster on CPU (forward + backward), and with the
analytic Jacobian of the features. The density gradient -- and so the normals -- then costs a 3 x D
Jacobian per point and one vector-Jacobian product back through the density head, instead of six more field
queries (finite differences) or a double backward (autograd).

Sampling (per ray, through the pixel centres of ``lods.cameras.camera_rays``):

1. near/far from the ray's intersection with the box; rays that miss it are empty;
2. nerfstudio ``UniformSampler``: ``num_coarse_samples`` bins between near and far, shifted by one random
   fraction of a bin per ray while training (drawn from the run's generator, so renders are reproducible);
3. an occupancy grid (a ``occupancy_resolution^3`` buffer of decayed maximum densities, refreshed every
   ``occupancy_update_every`` training steps as in Instant-NGP, dilated by one cell) marks the empty bins;
   rays without an occupied bin are empty, and the coarse densities are queried (without gradient) only
   at occupied bins;
4. nerfstudio ``PDFSampler``: ``num_fine_samples`` importance samples from the coarse weights (plus
   ``pdf_padding`` on every occupied bin, so a ray whose geometry is still faint keeps exploring it);
5. the field (density, colour, normals) with gradient at the fine samples only, composited with
   nerfstudio's ``RGBRenderer``/``AccumulationRenderer``/``DepthRenderer`` from ``RaySamples.get_weights``.

A proposal network would also work but needs its own loss and another field; the occupancy grid costs one
no-gradient query of ``occupancy_resolution^3`` points every ``occupancy_update_every`` steps.

Outputs: ``rgb = rgb + (1 - alpha) * background`` (``background_for``), ``alpha`` (accumulated weight),
``depth`` (expected ray distance, 0 where empty), ``normal`` (world-space, weight-averaged and normalised,
0 where empty). ``resolution_schedule`` renders smaller early on and upsamples bilinearly: the outputs
always have the cameras' size.

Regularisers (each a weight and a ``[start, end)`` step range; weight 0 is off and costs nothing):
``sparsity`` (mean alpha), ``entropy`` (binary entropy of alpha: opaque or empty), ``orientation``
(Ref-NeRF/DreamFusion: sum of stop-grad(w) relu(n . d)^2 per ray), ``z_variance`` (variance of the ray
distance under the weights, on rays with alpha > 0.5), ``convexity`` (SDI, seed 004 Sec. 5.2: the signed
sine between neighbouring camera-space normals of the normal map, left to right and top to bottom,
signed so that a convex surface makes it negative; minimising it favours convex shapes).

Everything a run needs to continue is in ``state_dict()``: parameters and buffers (the occupancy grid and
the step of its last update).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.field_components.encodings import HashEncoding, SHEncoding
from nerfstudio.field_components.mlp import MLP
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.utils.external import TCNN_EXISTS
from torch import Tensor, nn

from lods.backbones.base import Backbone3D, RenderOutput, check_choice, step_window, weight_at
from lods.backbones.mesh import extract_mesh, write_mesh
from lods.cameras import Cameras, camera_rays

DENSITY_ACTIVATIONS = ("softplus", "trunc_exp")
IMPLEMENTATIONS = ("auto", "torch", "tcnn")
NORMALS = ("analytic", "finite_difference", "none")
SHADINGS = ("none", "lambertian")
REGULARIZERS = ("sparsity", "entropy", "orientation", "z_variance", "convexity")
NEEDS_NORMALS = ("orientation", "convexity")
EVAL_RAY_CHUNK = 1 << 16  # rays marched at once without gradient (evaluation at full size)
PRIMES = (1, 2654435761, 805459861)  # nerfstudio's (and Instant-NGP's) spatial hash
_PRIMES_INT32 = tuple(p - 2**32 if p >= 2**31 else p for p in PRIMES)  # the same primes modulo 2^32


# ------------------------------------------------------------------------------------------------ field
class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(min(x, 15)) (torch-ngp's trunc_exp): no overflow in backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


class _HashInterpolation(torch.autograd.Function):
    """Trilinear interpolation of hashed corner features, and its Jacobian with respect to the position.

    ``table [rows, F]``, ``index [2, 2, 2, L, N]`` (table rows of the corners (cx, cy, cz) of each point's
    cell on each level), ``frac [3, L, N]`` (position in the cell), ``scale [L]`` (level resolutions).
    Returns features ``[N, L, F]`` and, when ``jacobian``, their derivatives with respect to the unit-cube
    position ``[N, 3, L, F]``. Points are the innermost dimension everywhere, so every operation runs on
    long contiguous vectors. Only ``table`` gets a gradient (sample positions are constants here); the
    Jacobian is linear in the table, so a loss on normals reaches the table through this same backward.
    """

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, frac: Tensor, scale: Tensor, jacobian: bool):
        flat = index.reshape(-1)
        columns = table.t().contiguous()  # 1D gathers per feature are several times faster than row gathers
        G = torch.stack([column.index_select(0, flat) for column in columns]).view(-1, *index.shape)
        fx, fy, fz = frac[0], frac[1], frac[2]  # [L, N]
        Dx = G[:, 1] - G[:, 0]  # [F, 2(y), 2(z), L, N]
        A = torch.addcmul(G[:, 0], fx, Dx)
        Dy = A[:, 1] - A[:, 0]  # [F, 2(z), L, N]
        B = torch.addcmul(A[:, 0], fy, Dy)
        Dz = B[:, 1] - B[:, 0]  # [F, L, N]
        value = torch.addcmul(B[:, 0], fz, Dz)
        ctx.save_for_backward(index, frac, scale)
        ctx.rows, ctx.jacobian = table.shape[0], jacobian
        value = value.permute(2, 1, 0)  # [N, L, F]
        if not jacobian:
            return value, None
        dy = torch.addcmul(Dy[:, 0], fz, Dy[:, 1] - Dy[:, 0])
        Cx = torch.addcmul(Dx[:, 0], fy, Dx[:, 1] - Dx[:, 0])  # [F, 2(z), L, N]
        dx = torch.addcmul(Cx[:, 0], fz, Cx[:, 1] - Cx[:, 0])
        jac = torch.stack([dx, dy, Dz], dim=1) * scale[:, None]  # [F, 3, L, N]
        return value, jac.permute(3, 1, 2, 0)  # [N, 3, L, F]

    @staticmethod
    def backward(ctx, g_value: Tensor | None, g_jac: Tensor | None):
        index, frac, scale = ctx.saved_tensors
        wx, wy, wz = (torch.stack([1 - frac[a], frac[a]]) for a in range(3))  # [2, L, N]
        sign = torch.tensor([-1.0, 1.0], dtype=frac.dtype, device=frac.device)[:, None, None]  # [2, 1, 1]
        wxy = wx[:, None] * wy[None]  # [2, 2, L, N]
        flat = index.reshape(-1).long()
        num_features = (g_value if g_value is not None else g_jac).shape[-1]
        gv_all = g_value.permute(2, 1, 0).contiguous() if g_value is not None else None  # [F, L, N]
        gj_all = None
        if g_jac is not None and ctx.jacobian:
            gj_all = g_jac.permute(3, 1, 2, 0).contiguous() * scale[:, None]  # [F, 3, L, N]
        grads = []
        for f in range(num_features):
            gv = gv_all[f] if gv_all is not None else frac.new_zeros(frac.shape[1:])
            if gj_all is None:
                dG = wxy[:, :, None] * wz[None, None] * gv
            else:
                gx, gy, gz = gj_all[f]  # [L, N] each
                # dG[cx,cy,cz] = wz[cz] (wy[cy] (wx[cx] gv + s[cx] gx) + wx[cx] s[cy] gy) + wx[cx] wy[cy] s[cz] gz
                a = wx * gv + sign * gx  # [2, L, N]
                b = a[:, None] * wy[None] + (wx * gy)[:, None] * sign[None]  # [2, 2, L, N]
                dG = b[:, :, None] * wz[None, None] + (wxy * gz)[:, :, None] * sign[None, None]
            grads.append(frac.new_zeros(ctx.rows).scatter_add_(0, flat, dG.reshape(-1)))
        return torch.stack(grads, dim=-1), None, None, None, None


class HashGrid(HashEncoding):
    """nerfstudio's ``HashEncoding`` with a faster PyTorch path and the analytic Jacobian of its features.

    Same parameters, hash and interpolation as nerfstudio's torch implementation (so a checkpoint is the
    same either way); tiny-cuda-nn's path is untouched (``uses_tcnn``; no Jacobian there).
    """

    @property
    def uses_tcnn(self) -> bool:
        return self.tcnn_encoding is not None

    def _lookup(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        shape = x.shape[:-1]
        x = x.reshape(-1, 3)
        scale = self.scalings.to(x)
        # Points innermost and contiguous (elementwise results inherit their inputs' memory layout).
        scaled = x.t().contiguous()[:, None, :] * scale[None, :, None]  # [3, L, N]
        base = scaled.floor()
        frac = scaled - base
        # The hash in int32: products wrap modulo 2^32, which keeps the low bits the table index uses.
        step = torch.arange(2, device=x.device, dtype=torch.int32)[:, None, None]
        corner = base.int()[:, None] + step  # [3, 2, L, N]
        hx, hy, hz = (corner[a] * _PRIMES_INT32[a] for a in range(3))  # [2, L, N]
        index = (hx[:, None] ^ hy[None])[:, :, None] ^ hz[None, None]  # [2, 2, 2, L, N]
        offset = self.hash_offset.to(device=x.device, dtype=torch.int32)[:, None]  # [L, 1]
        index = (index & (self.hash_table_size - 1)) + offset
        value, jac = _HashInterpolation.apply(self.hash_table, index, frac, scale, jacobian)
        value = value.reshape(*shape, -1)
        if jac is not None:
            jac = jac.reshape(*shape, 3, value.shape[-1])
        return value, jac

    def pytorch_fwd(self, in_tensor: Tensor) -> Tensor:
        return self._lookup(in_tensor, jacobian=False)[0]

    def forward_with_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Features [N, D] and their derivatives with respect to ``x`` [N, 3, D] (PyTorch path only)."""
        if self.uses_tcnn:
            raise RuntimeError("the tiny-cuda-nn hash encoding has no analytic Jacobian here; use finite differences")
        return self._lookup(x, jacobian=True)


def _mlp_with_input_gradient(mlp: MLP, x: Tensor) -> tuple[Tensor, Tensor]:
    """A scalar-output head's value [N] and its gradient with respect to its input [N, D].

    For nerfstudio's PyTorch ``MLP`` with ReLU hidden activations, no skip connections, no output
    activation and one output (the density head). The gradient is built from differentiable tensor
    operations (not ``autograd.grad``), so a loss on it trains the head's weights with one ordinary backward.
    """
    masks = []
    last = len(mlp.layers) - 1
    for i, layer in enumerate(mlp.layers):
        x = layer(x)
        if i < last:
            masks.append((x > 0).to(x.dtype))
            x = x * masks[-1]
    v = mlp.layers[-1].weight[0].expand(x.shape[0], -1)  # d out / d last hidden [N, W]
    for i in reversed(range(last)):
        v = (v * masks[i]) @ mlp.layers[i].weight  # back through ReLU and layer i
    return x[:, 0], v


# ----------------------------------------------------------------------------------------- validation


def _positive(name: str, value: float, strict: bool = True) -> None:
    ok = value > 0 if strict else value >= 0
    if not ok:
        raise ValueError(f"{name} must be {'>' if strict else '>='} 0, got {value}")


def _fade_window(value) -> tuple[int, int] | None:
    """``halo_fade_steps``: None (no fade) or ``[start, end]`` with 0 <= start < end."""
    if value is None:
        return None
    try:
        start, end = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"halo_fade_steps must be null or [start, end], e.g. [300, 600]; got {value}") from None
    if not 0 <= start < end:
        raise ValueError(f"halo_fade_steps must be [start, end] with 0 <= start < end; got {list(value)}")
    return start, end


def _schedule(value) -> list[tuple[int, int]] | None:
    """``[[step, resolution], ...]``: steps start at 0 and increase, resolutions are positive integers."""
    if value is None:
        return None
    try:
        pairs = [(int(step), int(res)) for step, res in value]
    except (TypeError, ValueError):
        raise ValueError(
            f"resolution_schedule must be a list of [step, resolution] pairs, e.g. [[0, 32], [500, 64]]; got {value}"
        ) from None
    if not pairs or pairs[0][0] != 0:
        raise ValueError(f"resolution_schedule must start at step 0, e.g. [[0, 32], [500, 64]]; got {value}")
    if any(b[0] <= a[0] for a, b in zip(pairs, pairs[1:])):
        raise ValueError(f"resolution_schedule steps must increase strictly; got {value}")
    if any(res < 1 for _, res in pairs):
        raise ValueError(f"resolution_schedule resolutions must be >= 1; got {value}")
    return pairs


# ------------------------------------------------------------------------------------------- backbone
class NeRFBackbone(Backbone3D):
    """A hash-grid NeRF; see the module docstring and ``conf/backbone/nerf.yaml``."""

    def __init__(
        self,
        resolution: int | None = None,
        background: str = "white",
        # --- bound and initialisation
        radius: float = 1.0,
        density_activation: str = "trunc_exp",
        density_bias: float = 0.0,
        blob_density: float = 10.0,
        blob_radius: float = 0.5,
        halo_density: float = 0.0,
        halo_radius: float = 0.9,
        halo_fade_steps: Sequence[int] | None = None,
        halo_final_density: float = 0.02,
        # --- field
        implementation: str = "auto",
        num_levels: int = 8,
        features_per_level: int = 2,
        log2_hashmap_size: int = 16,
        min_grid_resolution: int = 16,
        max_grid_resolution: int = 128,
        hash_init_scale: float = 1e-3,
        hidden_dim: int = 64,
        num_layers: int = 2,
        view_dependent: bool = False,
        normals: str = "analytic",
        finite_difference_eps: float = 1e-2,
        shading: str = "none",
        shading_prob: float = 1.0,
        ambient: float = 0.3,
        light_jitter: float = 0.5,
        # --- sampling
        num_coarse_samples: int = 64,
        num_fine_samples: int = 32,
        pdf_padding: float = 0.01,
        occupancy_resolution: int = 32,
        occupancy_threshold: float = 0.1,
        occupancy_decay: float = 0.95,
        occupancy_update_every: int = 16,
        resolution_schedule: Sequence[Sequence[int]] | None = None,
        # --- learning rates
        lr_encoding: float = 1e-2,
        lr_heads: float = 1e-3,
        lr: float = 1e-3,
        # --- regularisers
        sparsity_reg: float = 1000.0,
        sparsity_reg_steps: Sequence[int | None] | None = (0, None),
        entropy_reg: float = 0.0,
        entropy_reg_steps: Sequence[int | None] | None = (0, None),
        orientation_reg: float = 100.0,
        orientation_reg_steps: Sequence[int | None] | None = (0, None),
        z_variance_reg: float = 0.0,
        z_variance_reg_steps: Sequence[int | None] | None = (0, None),
        convexity_reg: float = 0.0,
        convexity_reg_steps: Sequence[int | None] | None = (0, 400),
        # --- export
        mesh_resolution: int = 128,
        mesh_threshold: float = 10.0,
        chunk: int = 65536,
    ):
        super().__init__(resolution=resolution, background=background, lr=lr)
        check_choice("density_activation", density_activation, DENSITY_ACTIVATIONS)
        check_choice("implementation", implementation, IMPLEMENTATIONS)
        check_choice("normals", normals, NORMALS)
        check_choice("shading", shading, SHADINGS)
        for name, value in (
            ("radius", radius),
            ("blob_radius", blob_radius),
            ("halo_radius", halo_radius),
            ("halo_final_density", halo_final_density),
            ("finite_difference_eps", finite_difference_eps),
            ("occupancy_threshold", occupancy_threshold),
            ("lr_encoding", lr_encoding),
            ("lr_heads", lr_heads),
            ("hash_init_scale", hash_init_scale),
        ):
            _positive(name, value)
        reg_weights = {
            "sparsity": (sparsity_reg, sparsity_reg_steps),
            "entropy": (entropy_reg, entropy_reg_steps),
            "orientation": (orientation_reg, orientation_reg_steps),
            "z_variance": (z_variance_reg, z_variance_reg_steps),
            "convexity": (convexity_reg, convexity_reg_steps),
        }
        non_negative = {
            "blob_density": blob_density,
            "halo_density": halo_density,
            "pdf_padding": pdf_padding,
            "lr": lr,
            "light_jitter": light_jitter,
        }
        non_negative.update({f"{name}_reg": weight for name, (weight, _) in reg_weights.items()})
        for name, value in non_negative.items():
            _positive(name, value, strict=False)
        for name, value, low in (
            ("num_levels", num_levels, 1),
            ("features_per_level", features_per_level, 1),
            ("log2_hashmap_size", log2_hashmap_size, 4),
            ("min_grid_resolution", min_grid_resolution, 1),
            ("hidden_dim", hidden_dim, 1),
            ("num_layers", num_layers, 1),
            ("num_coarse_samples", num_coarse_samples, 2),
            ("num_fine_samples", num_fine_samples, 1),
            ("occupancy_resolution", occupancy_resolution, 2),
            ("occupancy_update_every", occupancy_update_every, 1),
            ("mesh_resolution", mesh_resolution, 2),
            ("chunk", chunk, 1),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if log2_hashmap_size > 24:  # the int32 hash arithmetic needs levels x 2^size < 2^31
            raise ValueError(f"log2_hashmap_size must be <= 24, got {log2_hashmap_size}")
        if max_grid_resolution < min_grid_resolution:
            raise ValueError(
                f"max_grid_resolution ({max_grid_resolution}) must be >= min_grid_resolution ({min_grid_resolution})"
            )
        if not 0 <= occupancy_decay <= 1:
            raise ValueError(f"occupancy_decay must be in [0, 1], got {occupancy_decay}")
        if not 0 <= shading_prob <= 1:
            raise ValueError(f"shading_prob must be in [0, 1], got {shading_prob}")
        if not 0 <= ambient <= 1:
            raise ValueError(f"ambient must be in [0, 1], got {ambient}")
        self.reg_weights = {name: float(weight) for name, (weight, _) in reg_weights.items()}
        self.reg_steps = {name: step_window(f"{name}_reg_steps", steps) for name, (_, steps) in reg_weights.items()}
        if normals == "none":
            needing = [k for k in NEEDS_NORMALS if self.reg_weights[k] > 0] + (["shading"] if shading != "none" else [])
            if needing:
                raise ValueError(
                    f"normals 'none' but {', '.join(needing)} needs them; choose one of: analytic, finite_difference"
                )
        self.schedule = _schedule(resolution_schedule)

        self.radius, self.density_activation, self.density_bias = float(radius), density_activation, float(density_bias)
        self.blob_density, self.blob_radius = float(blob_density), float(blob_radius)
        self.halo_density, self.halo_radius = float(halo_density), float(halo_radius)
        self.halo_fade = _fade_window(halo_fade_steps)
        self.halo_final_density = float(halo_final_density)
        self.view_dependent, self.normals, self.fd_eps = bool(view_dependent), normals, float(finite_difference_eps)
        self.shading, self.shading_prob, self.ambient, self.light_jitter = shading, shading_prob, ambient, light_jitter
        self.num_coarse_samples, self.num_fine_samples = num_coarse_samples, num_fine_samples
        self.pdf_padding = pdf_padding
        self.occupancy_resolution, self.occupancy_threshold = occupancy_resolution, float(occupancy_threshold)
        self.occupancy_decay, self.occupancy_update_every = float(occupancy_decay), occupancy_update_every
        self.lr_encoding, self.lr_heads = lr_encoding, lr_heads
        self.mesh_resolution, self.mesh_threshold, self.chunk = mesh_resolution, float(mesh_threshold), chunk
        self.hash_init_scale = hash_init_scale
        self._generator: torch.Generator | None = None

        use_tcnn = implementation == "tcnn" or (implementation == "auto" and TCNN_EXISTS and torch.cuda.is_available())
        impl = "tcnn" if use_tcnn else "torch"
        if impl == "tcnn" and normals == "analytic":
            warnings.warn(
                "normals 'analytic' needs the PyTorch hash encoding; tcnn uses finite_difference", stacklevel=2
            )
            self.normals = "finite_difference"
        with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG: keep it untouched
            torch.random.default_generator.manual_seed(0)
            self.encoding = HashGrid(
                num_levels=num_levels,
                min_res=min_grid_resolution,
                max_res=max_grid_resolution,
                log2_hashmap_size=log2_hashmap_size,
                features_per_level=features_per_level,
                hash_init_scale=hash_init_scale,
                implementation=impl,
            )
            width = self.encoding.get_out_dim()
            self.density_head = MLP(width, num_layers, hidden_dim, 1, activation=nn.ReLU(), implementation="torch")
            self.direction_encoding = SHEncoding(levels=4, implementation="torch") if view_dependent else None
            color_in = width + (self.direction_encoding.get_out_dim() if view_dependent else 0)
            self.color_head = MLP(color_in, num_layers, hidden_dim, 3, activation=nn.ReLU(), implementation="torch")
        G = occupancy_resolution
        self.register_buffer("occupancy_density", torch.zeros(G, G, G))
        self.register_buffer("occupancy_mask", torch.ones(G, G, G, dtype=torch.bool))
        self.register_buffer("occupancy_step", torch.zeros((), dtype=torch.long))

        self.uniform_sampler = UniformSampler(num_samples=num_coarse_samples, train_stratified=False)
        self.pdf_sampler = PDFSampler(
            num_samples=num_fine_samples, train_stratified=False, include_original=False, histogram_padding=0.0
        )
        self.rgb_renderer = RGBRenderer(background_color="black")  # composited over background_for's colours
        self.accumulation_renderer = AccumulationRenderer()
        self.depth_renderer = DepthRenderer(method="expected")

    # --------------------------------------------------------------------------------------- setup
    @property
    def device(self) -> torch.device:
        return self.occupancy_density.device

    def setup(self, model=None, source_rgb: Tensor | None = None, generator: torch.Generator | None = None) -> None:
        """Draw every parameter from ``generator`` (hash table uniform in +-hash_init_scale, PyTorch's default
        initialisation for the heads) and fill the occupancy grid from the initial field."""
        self._generator = generator
        if generator is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            if not self.encoding.uses_tcnn:
                table = self.encoding.hash_table
                table.copy_((torch.rand(table.shape, generator=g) * 2 - 1) * self.hash_init_scale)
            for head in (self.density_head, self.color_head):
                for layer in head.layers:
                    bound = 1 / math.sqrt(layer.in_features)  # nn.Linear's default (kaiming_uniform a=sqrt(5))
                    layer.weight.copy_((torch.rand(layer.weight.shape, generator=g) * 2 - 1) * bound)
                    layer.bias.copy_((torch.rand(layer.bias.shape, generator=g) * 2 - 1) * bound)
            self.background_logit.fill_(3.0)
        self.update_occupancy(step=0, decay=0.0)

    # ----------------------------------------------------------------------------------------- field
    def _unit(self, positions: Tensor) -> Tensor:
        return ((positions / self.radius + 1) / 2).clamp(0, 1)

    def halo_at(self, step: int) -> float:
        """The halo's density at ``step``: ``halo_density`` until ``halo_fade_steps`` starts, then falling
        geometrically (linearly in the trunc_exp pre-activation) to ``halo_final_density`` at its end."""
        if self.halo_fade is None or step <= self.halo_fade[0]:
            return self.halo_density
        start, end = self.halo_fade
        progress = min(1.0, (step - start) / (end - start))
        return self.halo_density * (self.halo_final_density / self.halo_density) ** progress

    def _blob(self, positions: Tensor) -> tuple[Tensor, Tensor | None]:
        """density_bias + blob_density (1 - |x| / blob_radius), added before the activation, and where the halo
        replaces it (None without one): within halo_radius, where the blob is fainter than the halo's density at
        the occupancy grid's step (``halo_at``), that density's pre-activation instead (a flat floor, no slope)."""
        r = positions.norm(dim=-1)
        if self.blob_density == 0:
            blob = positions.new_full(positions.shape[:-1], self.density_bias)
        else:
            blob = self.density_bias + self.blob_density * (1 - r / self.blob_radius)
        if self.halo_density == 0:
            return blob, None
        density = self.halo_at(int(self.occupancy_step))
        if self.density_activation == "trunc_exp":  # the activation's inverse at the halo's density
            floor = math.log(density)
        else:
            floor = math.log(math.expm1(density))
        halo = (r <= self.halo_radius) & (blob < floor)
        return torch.where(halo, blob.new_tensor(floor), blob), halo

    def _activate(self, raw: Tensor) -> Tensor:
        return trunc_exp(raw) if self.density_activation == "trunc_exp" else F.softplus(raw)

    def _raw_density(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-activation density [N] and the encoding [N, D]."""
        h = self.encoding(self._unit(positions)).float()
        return self.density_head(h)[..., 0] + self._blob(positions)[0], h

    @torch.no_grad()
    def density(self, positions: Tensor) -> Tensor:
        """Densities [N] at world positions [N, 3] (no gradient; export and the occupancy grid)."""
        return self._activate(self._raw_density(positions)[0])

    def _albedo(self, h: Tensor, directions: Tensor | None) -> Tensor:
        if self.direction_encoding is not None:
            h = torch.cat([h, self.direction_encoding(directions)], dim=-1)  # PyTorch SH: unit directions
        return torch.sigmoid(self.color_head(h))

    def field(self, positions: Tensor, directions: Tensor | None = None, normals: bool = True):
        """Density [N], albedo [N, 3] and (when ``normals`` and enabled) world normals [N, 3] at [N, 3] points."""
        want_normals = normals and self.normals != "none"
        if want_normals and self.normals == "analytic":
            h, dh = self.encoding.forward_with_jacobian(self._unit(positions))  # [N, D], [N, 3, D]
            raw, draw_dh = _mlp_with_input_gradient(self.density_head, h)
            blob, halo = self._blob(positions)
            raw = raw + blob
            inside = (positions.abs() < self.radius).to(positions.dtype)  # the clamp to the box has no slope outside
            grad = torch.bmm(dh, draw_dh[:, :, None])[..., 0] * inside / (2 * self.radius)
            if self.blob_density:
                r = positions.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                sloped = 1.0 if halo is None else (~halo).to(positions.dtype)[:, None]
                grad = grad - sloped * self.blob_density / self.blob_radius * positions / r
            normal = -F.normalize(grad, dim=-1)
        else:
            raw, h = self._raw_density(positions)
            normal = None
            if want_normals:  # central differences of the pre-activation density (tcnn path)
                eps = self.fd_eps
                offsets = torch.eye(3, device=positions.device, dtype=positions.dtype) * eps
                shifted = torch.cat([positions[:, None] + offsets, positions[:, None] - offsets], dim=1)  # [N, 6, 3]
                raw6 = self._raw_density(shifted.reshape(-1, 3))[0].view(-1, 6)
                normal = -F.normalize(raw6[:, :3] - raw6[:, 3:], dim=-1)
        return self._activate(raw), self._albedo(h, directions), normal

    # ------------------------------------------------------------------------------------ occupancy
    def update_occupancy(self, step: int, decay: float | None = None) -> None:
        """Instant-NGP's grid update: density at a jittered point in every cell, max with the decayed grid."""
        G, device = self.occupancy_resolution, self.device
        g = torch.Generator().manual_seed(int(step) + 1)
        cells = torch.stack(torch.meshgrid(*(torch.arange(G),) * 3, indexing="ij"), dim=-1).reshape(-1, 3)
        points = (((cells + torch.rand(cells.shape, generator=g)) / G * 2 - 1) * self.radius).to(device)
        self.occupancy_step.fill_(int(step))  # first: the halo's density (halo_at) follows this step
        with torch.no_grad():
            new = torch.cat([self.density(points[i : i + self.chunk]) for i in range(0, len(points), self.chunk)])
            decay = self.occupancy_decay if decay is None else decay
            grid = torch.maximum(self.occupancy_density * decay, new.view(G, G, G))
            mask = grid > self.occupancy_threshold
            mask = F.max_pool3d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0  # dilate by one cell
        if not mask.any():
            warnings.warn(
                f"the occupancy grid is empty at step {step} (no density above {self.occupancy_threshold}); "
                "sampling the whole box until it fills again",
                stacklevel=2,
            )
            mask = torch.ones_like(mask)
        self.occupancy_density.copy_(grid)
        self.occupancy_mask.copy_(mask)

    def _occupied(self, positions: Tensor) -> Tensor:
        G = self.occupancy_resolution
        u = (positions / self.radius + 1) / 2
        inside = ((u >= 0) & (u < 1)).all(-1)
        cell = (u * G).long().clamp(0, G - 1)
        flat = (cell[..., 0] * G + cell[..., 1]) * G + cell[..., 2]
        return self.occupancy_mask.view(-1)[flat] & inside

    # ----------------------------------------------------------------------------------------- render
    def render_size(self, step: int | None, height: int, width: int) -> tuple[int, int]:
        """The size a render is computed at: ``resolution_schedule``'s height at ``step`` (the cameras' when
        there is no schedule or no step), the width in the cameras' aspect ratio."""
        if self.schedule is None or step is None:
            return height, width
        h = [res for start, res in self.schedule if start <= step][-1]
        return h, max(1, round(h * width / height))

    def render(self, cameras: Cameras, step: int | None = None) -> RenderOutput:
        H, W = cameras.height, cameras.width
        h, w = self.render_size(step, H, W)
        device = self.device
        cams = replace(cameras.to(device), height=h, width=w)
        B = len(cams)
        if self.training and step is not None:
            last = int(self.occupancy_step)
            if step >= last + self.occupancy_update_every or step < last:
                self.update_occupancy(step)
        origins, directions = camera_rays(cams)
        rays = self._march_in_chunks(origins.reshape(-1, 3), directions.reshape(-1, 3), B, h * w, cams)

        background = self.background_for(B, device, self._generator)  # [B, 3]
        rgb = rays["rgb"].view(B, h, w, 3).permute(0, 3, 1, 2)
        alpha = rays["alpha"].view(B, h, w, 1).permute(0, 3, 1, 2)
        depth = rays["depth"].view(B, h, w, 1).permute(0, 3, 1, 2)
        normal = rays["normal"].view(B, h, w, 3).permute(0, 3, 1, 2) if rays["normal"] is not None else None
        rgb = rgb + (1 - alpha) * background[:, :, None, None]
        extras = {
            "orientation": rays["orientation"],
            "z_variance": rays["z_variance"],
            "ray_alpha": rays["ray_alpha"],
            "alpha_render": alpha,
            "normal_render": normal,
            "c2w": cams.c2w,
            "render_size": (h, w),
            "rays": float(rays["count"]),
            "samples": float(rays["count"] * self.num_fine_samples),
            "occupancy": float(self.occupancy_mask.float().mean()),
        }
        if (h, w) != (H, W):
            rgb, alpha, depth = (self._resize(x, H, W) for x in (rgb, alpha, depth))
            if normal is not None:
                normal = self._resize(normal, H, W)
                length = normal.norm(dim=1, keepdim=True)
                normal = torch.where(length > 1e-6, normal / length.clamp_min(1e-6), 0.0)
        return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, normal=normal, extras=extras)

    @staticmethod
    def _resize(x: Tensor, H: int, W: int) -> Tensor:
        antialias = H < x.shape[-2] or W < x.shape[-1]
        return F.interpolate(x, (H, W), mode="bilinear", align_corners=False, antialias=antialias)

    def _intersect(self, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Ray/box slab test: near [R], far [R], hit [R]."""
        safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
        t0 = (-self.radius - origins) / safe
        t1 = (self.radius - origins) / safe
        near = torch.minimum(t0, t1).amax(-1).clamp_min(1e-3)
        far = torch.maximum(t0, t1).amin(-1)
        return near, far, far > near

    def _light(self, cams: Cameras, B: int) -> tuple[Tensor, Tensor]:
        """Light directions [B, 3] (towards the light) and whether each image is shaded [B]."""
        device = self.device
        to_camera = F.normalize(cams.c2w[:, :3, 3], dim=-1)
        shaded = torch.ones(B, dtype=torch.bool, device=device)
        if not self.training:
            return to_camera, shaded
        g = self._generator
        g_device = g.device if g is not None else "cpu"
        jitter = torch.randn(B, 3, generator=g, device=g_device).to(device) * self.light_jitter
        draw = torch.rand(B, generator=g, device=g_device).to(device)
        return F.normalize(to_camera + jitter, dim=-1), draw < self.shading_prob

    def _march_in_chunks(self, origins: Tensor, directions: Tensor, B: int, per_image: int, cams: Cameras) -> dict:
        """:meth:`_march`, EVAL_RAY_CHUNK rays at a time when no gradient is taken (evaluation renders at full
        size: one 512x512 view at once asks the hash grid for GB-sized tensors); in one go when training."""
        R = origins.shape[0]
        if torch.is_grad_enabled() or R <= EVAL_RAY_CHUNK:
            return self._march(origins, directions, B, per_image, cams)
        parts = [
            self._march(origins[s : s + EVAL_RAY_CHUNK], directions[s : s + EVAL_RAY_CHUNK], B, per_image, cams, s)
            for s in range(0, R, EVAL_RAY_CHUNK)
        ]
        merged = {"count": sum(part["count"] for part in parts)}
        for key in parts[0].keys() - {"count"}:
            merged[key] = None if parts[0][key] is None else torch.cat([part[key] for part in parts])
        return merged

    def _march(
        self, origins: Tensor, directions: Tensor, B: int, per_image: int, cams: Cameras, offset: int = 0
    ) -> dict:
        """Volume rendering of R rays: per-ray rgb (over black), alpha, depth, normal and regulariser terms.
        ``offset``: the index of the first of these rays among all the rays of the B images (for chunks)."""
        R, device = origins.shape[0], origins.device
        out = {
            "rgb": origins.new_zeros(R, 3),
            "alpha": origins.new_zeros(R, 1),
            "depth": origins.new_zeros(R, 1),
            "normal": origins.new_zeros(R, 3) if self.normals != "none" else None,
            "orientation": origins.new_zeros(0),
            "z_variance": origins.new_zeros(0),
            "ray_alpha": origins.new_zeros(0),
            "count": 0,
        }
        near, far, hit = self._intersect(origins, directions)
        ids = hit.nonzero()[:, 0]
        if ids.numel() == 0:
            return out
        near, far = near[ids, None], far[ids, None]
        if self.training:  # one random shift of the whole coarse grid per ray (stratified sampling)
            g = self._generator
            u = torch.rand(ids.numel(), 1, generator=g, device=g.device if g is not None else "cpu").to(device)
            shift = (u - 0.5) * (far - near) / self.num_coarse_samples
            near, far = near + shift, far + shift

        def bundle(index: Tensor, nears: Tensor, fars: Tensor) -> RayBundle:
            return RayBundle(
                origins=origins[index],
                directions=directions[index],
                pixel_area=torch.ones_like(nears),
                nears=nears,
                fars=fars,
            )

        # Coarse: which bins are occupied; keep the rays that cross at least one.
        with torch.no_grad():
            coarse = self.uniform_sampler(bundle(ids, near, far))
            occupied = self._occupied(coarse.frustums.get_positions())
            keep = occupied.any(-1)
        ids, near, far, occupied = ids[keep], near[keep], far[keep], occupied[keep]
        if ids.numel() == 0:
            return out
        rays = bundle(ids, near, far)
        with torch.no_grad():
            coarse = self.uniform_sampler(rays)
            positions = coarse.frustums.get_positions()
            sigma = positions.new_zeros(occupied.shape)
            sigma[occupied] = self.density(positions[occupied])
            weights = coarse.get_weights(sigma[..., None])
            pdf = weights + self.pdf_padding * occupied[..., None]
            fine: RaySamples = self.pdf_sampler(rays, coarse, pdf)

        # Fine: the field with gradient.
        n, S = ids.numel(), self.num_fine_samples
        positions = fine.frustums.get_positions().reshape(-1, 3)
        ray_dirs = directions[ids]
        sample_dirs = ray_dirs[:, None].expand(n, S, 3).reshape(-1, 3)
        density, albedo, normal = self.field(positions, sample_dirs if self.view_dependent else None)
        density, albedo = density.view(n, S, 1), albedo.view(n, S, 3)
        if normal is not None:
            normal = normal.view(n, S, 3)
        if self.shading == "lambertian":
            light, shaded = self._light(cams, B)
            image = (ids + offset) // per_image
            lambert = (normal * light[image][:, None]).sum(-1, keepdim=True).clamp_min(0)
            shade = self.ambient + (1 - self.ambient) * lambert
            albedo = torch.where(shaded[image][:, None, None], albedo * shade, albedo)
        weights = fine.get_weights(density)  # [n, S, 1]
        rgb = self.rgb_renderer(albedo, weights)
        acc = self.accumulation_renderer(weights)
        depth = torch.where(acc > 0, self.depth_renderer(weights, fine), 0.0)  # 0 where nothing was hit
        out["rgb"] = out["rgb"].index_put((ids,), rgb)
        out["alpha"] = out["alpha"].index_put((ids,), acc)
        out["depth"] = out["depth"].index_put((ids,), depth)
        out["ray_alpha"] = acc[:, 0]
        out["count"] = n
        if normal is not None:
            normal_map = (weights * normal).sum(1)
            normal_map = normal_map / normal_map.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            out["normal"] = out["normal"].index_put((ids,), normal_map)
            if self.reg_weights["orientation"] > 0:
                facing = (normal * ray_dirs[:, None]).sum(-1).clamp_min(0) ** 2  # [n, S]
                out["orientation"] = (weights[..., 0].detach() * facing).sum(-1)
        if self.reg_weights["z_variance"] > 0:
            t = (fine.frustums.starts + fine.frustums.ends)[..., 0] / 2  # [n, S]
            mean = (weights[..., 0] * t).sum(-1, keepdim=True) / (acc + 1e-10)
            out["z_variance"] = (weights[..., 0] * (t - mean) ** 2).sum(-1) / (acc[:, 0] + 1e-10)
        return out

    # --------------------------------------------------------------------------------------- optimiser
    def param_groups(self) -> list[dict]:
        """``encoding`` (the hash table), ``heads`` (density and colour MLPs), ``background`` (learned colour)."""
        groups = [
            ("encoding", self.lr_encoding, self.encoding.parameters()),
            ("heads", self.lr_heads, [*self.density_head.parameters(), *self.color_head.parameters()]),
            ("background", self.lr, [self.background_logit]),
        ]
        groups = [(name, lr, [p for p in params if p.requires_grad]) for name, lr, params in groups]
        return [{"params": params, "lr": lr, "name": name} for name, lr, params in groups if params]

    # ------------------------------------------------------------------------------------- regularisers
    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """The weighted regularisers inside their step ranges (a configured one outside its range is 0)."""
        losses: dict[str, Tensor] = {}
        extras = out.extras or {}
        for name in REGULARIZERS:
            if self.reg_weights[name] <= 0:
                continue
            weight = weight_at(self.reg_weights[name], self.reg_steps[name], step)
            if not weight:
                losses[name] = out.alpha.new_zeros(())
                continue
            losses[name] = weight * getattr(self, f"_{name}_loss")(out, extras)
        return losses

    @staticmethod
    def _sparsity_loss(out: RenderOutput, extras: dict) -> Tensor:
        return out.alpha.mean()

    @staticmethod
    def _entropy_loss(out: RenderOutput, extras: dict) -> Tensor:
        a = out.alpha.clamp(1e-5, 1 - 1e-5)
        return -(a * torch.log(a) + (1 - a) * torch.log(1 - a)).mean()

    @staticmethod
    def _orientation_loss(out: RenderOutput, extras: dict) -> Tensor:
        per_ray = extras["orientation"]  # one value per ray that reached the field
        return per_ray.sum() / max(per_ray.numel(), 1)

    @staticmethod
    def _z_variance_loss(out: RenderOutput, extras: dict) -> Tensor:
        var, alpha = extras["z_variance"], extras["ray_alpha"]
        solid = alpha > 0.5
        return var[solid].mean() if solid.any() else var.sum() * 0

    @staticmethod
    def _convexity_loss(out: RenderOutput, extras: dict) -> Tensor:
        """SDI's convexity loss: mean signed sine between neighbouring camera-space normals (convex < 0)."""
        normal, alpha = extras["normal_render"], extras["alpha_render"].detach()  # [B, 3, h, w], [B, 1, h, w]
        rotation = extras["c2w"][:, :3, :3]  # camera axes (right, up, backwards) in world coordinates
        n = torch.einsum("bji,bjhw->bihw", rotation, normal)  # world -> camera: R^T n
        # Left to right: a convex surface turns its normal from -x through +z to +x, i.e. about +y.
        cross_h = torch.linalg.cross(n[..., :, :-1], n[..., :, 1:], dim=1)[:, 1]  # [B, h, w-1]
        # Top to bottom: from +y through +z to -y, i.e. about +x.
        cross_v = torch.linalg.cross(n[..., :-1, :], n[..., 1:, :], dim=1)[:, 0]  # [B, h-1, w]
        w_h = alpha[:, 0, :, :-1] * alpha[:, 0, :, 1:]
        w_v = alpha[:, 0, :-1, :] * alpha[:, 0, 1:, :]
        total = w_h.sum() + w_v.sum()
        if total <= 0:
            return normal.sum() * 0
        return -((cross_h * w_h).sum() + (cross_v * w_v).sum()) / total

    def after_backward(self, out: RenderOutput, step: int, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Numbers to log: rays and fine samples through the field, occupied fraction of the grid."""
        extras = out.extras or {}
        return {k: extras[k] for k in ("rays", "samples", "occupancy") if k in extras}

    # ------------------------------------------------------------------------------------------- export
    def export(self, directory: str | Path) -> list[Path]:
        """``mesh.obj`` and ``mesh.glb``: marching cubes at ``mesh_threshold`` on a ``mesh_resolution``^3 grid."""

        def color_fn(points: Tensor, normals: Tensor) -> Tensor:
            h = self.encoding(self._unit(points)).float()
            return self._albedo(h, -normals if self.view_dependent else None)

        was_training = self.training
        self.eval()
        try:
            mesh = extract_mesh(
                self.density,
                color_fn,
                self.radius,
                resolution=self.mesh_resolution,
                threshold=self.mesh_threshold,
                chunk=self.chunk,
                device=self.device,
            )
        finally:
            self.train(was_training)
        if mesh is None:
            return []
        return write_mesh(*mesh, directory, name="mesh")

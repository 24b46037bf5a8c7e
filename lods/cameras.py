"""Camera convention shared by every task, backbone and the toyworld renderer.

World frame: right-handed, +z up. The object sits at the origin; its *front* faces +x.
Spherical camera placement (as in DreamFusion/threestudio):

    position = distance * (cos(elev) cos(azim), cos(elev) sin(azim), sin(elev))

so azimuth 0 deg is the front view, azimuth 90 deg looks at the object's left side from +y,
and elevation 90 deg looks straight down.

Camera-to-world matrices (``c2w``, [B, 4, 4]) use the OpenGL convention: the camera looks
along its own -z axis, +x is right and +y is up in the image. Backbones that need another
convention (gsplat wants OpenCV world-to-camera ``viewmats``) convert once, with
``opengl_to_opencv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# DreamFusion-style view-dependent prompting thresholds (degrees), shared with toyworld captions.
FRONT_HALF_ANGLE = 45.0  # |azimuth| <= 45 -> front
BACK_HALF_ANGLE = 45.0  # |azimuth - 180| <= 45 -> back
OVERHEAD_ELEVATION = 60.0  # elevation > 60 -> overhead
VIEWS = ("front", "side", "back", "overhead")


@dataclass
class Cameras:
    """A batch of pinhole cameras looking at the origin."""

    c2w: Tensor  # [B, 4, 4] OpenGL camera-to-world
    fovy_deg: Tensor  # [B] vertical field of view
    azimuth_deg: Tensor  # [B]
    elevation_deg: Tensor  # [B]
    distance: Tensor  # [B]
    width: int
    height: int

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(
            self.c2w.to(device),
            self.fovy_deg.to(device),
            self.azimuth_deg.to(device),
            self.elevation_deg.to(device),
            self.distance.to(device),
            self.width,
            self.height,
        )

    def __getitem__(self, index) -> Cameras:
        def pick(x: Tensor) -> Tensor:
            out = x[index]
            return out.unsqueeze(0) if isinstance(index, int) else out

        return Cameras(
            pick(self.c2w),
            pick(self.fovy_deg),
            pick(self.azimuth_deg),
            pick(self.elevation_deg),
            pick(self.distance),
            self.width,
            self.height,
        )

    def intrinsics(self) -> Tensor:
        """Pixel-space K matrices [B, 3, 3] (principal point at the image centre)."""
        focal = 0.5 * self.height / torch.tan(torch.deg2rad(self.fovy_deg) / 2)
        K = torch.zeros(len(self), 3, 3, device=self.device, dtype=self.c2w.dtype)
        K[:, 0, 0] = focal
        K[:, 1, 1] = focal
        K[:, 0, 2] = self.width / 2
        K[:, 1, 2] = self.height / 2
        K[:, 2, 2] = 1
        return K

    def flat_c2w(self) -> Tensor:
        """The first three rows of c2w, flattened and padded to 16 values (VSD's camera input)."""
        return self.c2w.reshape(len(self), 16)


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenGL camera-to-world matrices [B, 4, 4] for cameras at ``eye`` [B, 3] looking at ``target``."""
    if target is None:
        target = torch.zeros_like(eye)
    if up is None:
        up = torch.tensor([0.0, 0.0, 1.0], device=eye.device, dtype=eye.dtype).expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.cross(forward, up, dim=-1)
    # Looking straight up or down: any horizontal right vector will do; pick +y-ish.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    fallback = torch.tensor([0.0, 1.0, 0.0], device=eye.device, dtype=eye.dtype).expand_as(eye)
    right = torch.where(degenerate, torch.cross(forward, fallback, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, device=eye.device, dtype=eye.dtype)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    c2w[:, 3, 3] = 1
    return c2w


def orbit_cameras(
    azimuth_deg: Tensor | float,
    elevation_deg: Tensor | float,
    distance: Tensor | float,
    fovy_deg: Tensor | float,
    width: int,
    height: int,
) -> Cameras:
    """Cameras on a sphere around the origin, looking at it (see the module docstring)."""
    azimuth, elevation, dist, fovy = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (azimuth_deg, elevation_deg, distance, fovy_deg))
    )
    az, el = torch.deg2rad(azimuth), torch.deg2rad(elevation)
    eye = torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], dim=-1) * dist[:, None]
    return Cameras(look_at(eye), fovy.clone(), azimuth.clone(), elevation.clone(), dist.clone(), width, height)


def view_direction(azimuth_deg: float, elevation_deg: float) -> str:
    """DreamFusion's view label for one camera: 'front', 'side', 'back' or 'overhead'."""
    if elevation_deg > OVERHEAD_ELEVATION:
        return "overhead"
    azimuth = (azimuth_deg + 180.0) % 360.0 - 180.0  # wrap to [-180, 180)
    if abs(azimuth) <= FRONT_HALF_ANGLE:
        return "front"
    if abs(azimuth) >= 180.0 - BACK_HALF_ANGLE:
        return "back"
    return "side"


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """World-to-camera matrices in the OpenCV convention (x right, y down, looks along +z)."""
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], device=c2w.device, dtype=c2w.dtype))
    return torch.linalg.inv(c2w @ flip)


def camera_rays(cameras: Cameras) -> tuple[Tensor, Tensor]:
    """Ray origins and unit directions [B, H, W, 3] through pixel centres (row 0 = image top)."""
    H, W = cameras.height, cameras.width
    device, dtype = cameras.device, cameras.c2w.dtype
    tan_half = torch.tan(torch.deg2rad(cameras.fovy_deg) / 2)  # [B]
    ys = (torch.arange(H, device=device, dtype=dtype) + 0.5) / H  # top -> bottom
    xs = (torch.arange(W, device=device, dtype=dtype) + 0.5) / W
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    aspect = W / H
    x_cam = (2 * xx - 1)[None] * tan_half[:, None, None] * aspect
    y_cam = (1 - 2 * yy)[None] * tan_half[:, None, None]
    dirs_cam = torch.stack([x_cam, y_cam, -torch.ones_like(x_cam)], dim=-1)  # [B, H, W, 3]
    # R @ d and its normalisation written out element by element: no reduction whose grouping could depend on
    # the batch size or the processor's vector width, so a ray is the same bits in any batch and on any CPU
    # (an einsum here could flip a sub-sample at an object's edge between a batched and a single render).
    rotation = cameras.c2w[:, None, None, :3, :3]  # [B, 1, 1, 3, 3]
    dirs = (
        rotation[..., 0] * dirs_cam[..., :1]
        + rotation[..., 1] * dirs_cam[..., 1:2]
        + rotation[..., 2] * dirs_cam[..., 2:]
    )
    length = (dirs[..., :1].square() + dirs[..., 1:2].square() + dirs[..., 2:].square()).sqrt()
    dirs = dirs / length.clamp_min(1e-12)
    origins = cameras.c2w[:, None, None, :3, 3].expand_as(dirs)
    return origins, dirs

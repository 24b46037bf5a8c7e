"""Text-to-3D and image-to-3D tasks: camera sampling, evaluation views, reference losses; video export."""

import numpy as np
import pytest
import torch
from PIL import Image

from lods.backbones.base import RenderOutput
from lods.cameras import view_direction
from lods.export import write_video
from lods.tasks import ImageTo3D, TextTo3D
from lods.toyworld.render import EVAL_VIEWS


def make_task(model, **kwargs) -> TextTo3D:
    task = TextTo3D("a red cube", **kwargs)
    task.setup(model, 32)
    return task


def test_cameras_stay_in_their_ranges_and_are_seeded(model):
    task = make_task(model, batch_size=4, elevation_range=[0, 30], distance_range=[2.5, 3.5], fovy_range=[40, 50])
    cams = task.sample_cameras(0, 4, torch.Generator().manual_seed(0))
    assert len(cams) == 4 and (cams.width, cams.height) == (32, 32)
    assert cams.elevation_deg.min() >= 0 and cams.elevation_deg.max() <= 30
    assert cams.distance.min() >= 2.5 and cams.distance.max() <= 3.5
    assert cams.fovy_deg.min() >= 40 and cams.fovy_deg.max() <= 50
    assert torch.allclose(cams.c2w[:, :3, 3].norm(dim=-1), cams.distance, atol=1e-5)
    again = task.sample_cameras(0, 4, torch.Generator().manual_seed(0))
    other = task.sample_cameras(0, 4, torch.Generator().manual_seed(1))
    assert torch.equal(cams.c2w, again.c2w) and not torch.equal(cams.c2w, other.c2w)


def test_batch_uniform_azimuth_puts_one_camera_in_each_sector(model):
    task = make_task(model, batch_size=4)
    for seed in range(5):
        az = task.sample_cameras(0, 4, torch.Generator().manual_seed(seed)).azimuth_deg
        gaps = torch.diff(torch.sort((az + 360) % 360).values)
        assert torch.allclose(gaps, torch.full_like(gaps, 90.0), atol=1e-3)


def test_view_dependent_conditioning_follows_the_cameras(model):
    task = make_task(model, batch_size=2)
    cams = task.sample_cameras(0, 2, torch.Generator().manual_seed(0))
    c = task.conditioning(cams, 2)
    for i, (a, e) in enumerate(zip(cams.azimuth_deg, cams.elevation_deg)):
        expected = model.text_embeddings(f"a red cube, {view_direction(float(a), float(e))} view")
        assert torch.allclose(c.cond[i], expected[0])
    assert c.cameras.shape == (2, 16)


def test_evaluation_orbit_is_toyworlds(model):
    task = make_task(model)
    assert task.eval_views() == [(float(a), float(e)) for a, e in EVAL_VIEWS]
    cams = task.eval_cameras()
    assert len(cams) == len(EVAL_VIEWS)
    turn = task.turntable_cameras(12, size=48)
    assert len(turn) == 12 and turn.width == 48 and float(turn.azimuth_deg[0]) == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"elevation_range": [30, 0]}, "min <= max"),
        ({"elevation_range": [-100, 0]}, "outside the allowed range"),
        ({"fovy_range": [0, 45]}, "fovy_range"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_camera_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TextTo3D("a red cube", **kwargs)


class _Renders:
    """A stand-in backbone that renders fixed images."""

    def __init__(self, rgb, alpha):
        self.rgb, self.alpha = rgb, alpha

    def render(self, cameras, step=None):
        return RenderOutput(rgb=self.rgb, alpha=self.alpha)


def test_image_to_3d_reference_losses_vanish_at_the_reference(model):
    task = ImageTo3D("a red cube")
    task.setup(model, 32)
    assert task.reference_mask.sum() > 20 and task.reference_mask.max() == 1  # the cube's silhouette
    exact = task.losses(None, 0, _Renders(task.reference_rgb, task.reference_mask))
    assert all(float(v) < 1e-10 for v in exact.values())
    off = task.losses(None, 0, _Renders(torch.zeros_like(task.reference_rgb), torch.zeros_like(task.reference_mask)))
    assert float(off["reference_rgb"]) > 1 and float(off["reference_mask"]) > 0.1
    assert (0.0, 15.0) not in task.eval_views() and len(task.eval_views()) == len(EVAL_VIEWS) - 1


def test_image_to_3d_reads_an_rgba_reference(model, tmp_path):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[4:12, 4:12] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ref.png")
    task = ImageTo3D("anything at all", reference_image=str(tmp_path / "ref.png"))
    task.setup(model, 16)
    assert float(task.reference_mask.sum()) == 64
    assert torch.allclose(task.reference_rgb[0, :, 0, 0], torch.ones(3))  # background composited to white
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="no alpha channel"):
        ImageTo3D("x", reference_image=str(tmp_path / "rgb.png")).setup(model, 16)


def test_image_to_3d_without_reference_needs_a_toyworld_caption(model):
    with pytest.raises(ValueError, match="reference_image"):
        ImageTo3D("a photo of a hamburger").setup(model, 16)
    # An open caption names a set of scenes: no one reference view; the message says so and offers a member.
    with pytest.raises(ValueError, match=r"'a cube, back view' is an open caption \(it names 147 scenes\).*e\.g\. 'a "):
        ImageTo3D("a cube, back view").setup(model, 16)


def test_turntable_video_is_written(tmp_path):
    frames = torch.rand(6, 3, 32, 32)
    path = write_video(frames, tmp_path / "turntable", fps=6)
    assert path.exists() and path.stat().st_size > 0
    import imageio_ffmpeg  # a dependency: the mp4 path is the one taken here

    assert path.suffix == ".mp4" and imageio_ffmpeg.count_frames_and_secs(str(path))[0] == 6


def test_turntable_falls_back_to_a_gif_without_ffmpeg(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    path = write_video(torch.rand(3, 3, 16, 16), tmp_path / "turntable", fps=6)
    assert path.suffix == ".gif" and path.exists() and not (tmp_path / "turntable.mp4").exists()

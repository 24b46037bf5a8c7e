"""End-to-end 3D runs of train(): every prior on both backbones, exports, image-to-3D, resume."""

import json

import pytest
import torch
import trimesh

from lods.export import main as export_main
from lods.system import ScoreDistillationSystem
from lods.training import RunInterruptedError, train

from .helpers import make_config

pytestmark = pytest.mark.slow

PRIORS_3D = ["sds", "sds_ref", "vsd", "lods_embedding", "lods_lora", "sdi"]
SMALL = {
    "gaussians": [
        "backbone=gaussians",
        "backbone.num_points=300",
        "backbone.refine_every=2",
        "backbone.refine_start=1",
    ],
    "nerf": ["backbone=nerf", "backbone.mesh_resolution=32"],
}


def run(tmp_path, backbone, *overrides, name="run", steps=3):
    cfg = make_config(
        [
            "model=tiny",
            "logger=csv",
            f"trainer.max_steps={steps}",
            "checkpoint_every=2",
            "image_every=0",
            "export.frames=4",
            *SMALL[backbone],
            *overrides,
        ],
        run_dir=tmp_path / name,
    )
    return train(cfg), tmp_path / name


@pytest.mark.parametrize("backbone", ["gaussians", "nerf"])
@pytest.mark.parametrize("prior", PRIORS_3D)
def test_every_prior_runs_on_every_3d_backbone(tmp_path, backbone, prior):
    metrics, run_dir = run(tmp_path, backbone, f"prior={prior}")
    assert metrics["steps"] == 3 and metrics["batch_size"] == 1
    assert (run_dir / "images" / "final.png").is_file()
    exports = {p.rsplit("/", 1)[-1] for p in metrics["exports"]}
    assert "turntable.mp4" in exports or "turntable.gif" in exports
    if backbone == "gaussians":
        assert any(name.endswith(".ply") for name in exports)


def test_gaussians_export_is_a_standard_3dgs_ply(tmp_path):
    metrics, run_dir = run(tmp_path, "gaussians")
    ply = next(run_dir / p for p in metrics["exports"] if p.endswith(".ply"))
    header = ply.read_bytes()[:2000].split(b"end_header")[0].decode()
    for field in ("property float x", "f_dc_0", "opacity", "scale_0", "rot_0"):
        assert field in header


def test_nerf_export_is_a_loadable_mesh(tmp_path):
    metrics, run_dir = run(tmp_path, "nerf", "backbone.blob_density=10")
    meshes = [run_dir / p for p in metrics["exports"] if p.endswith((".obj", ".glb"))]
    assert {p.suffix for p in meshes} == {".obj", ".glb"}
    mesh = trimesh.load(meshes[0], force="mesh")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0


def test_export_on_demand_from_a_run_directory(tmp_path):
    _, run_dir = run(tmp_path, "gaussians")
    paths = export_main([str(run_dir), "--frames", "3", "--size", "24"])
    assert {p.suffix for p in paths} >= {".ply"} and all(p.parent.name == "export-step000003" for p in paths)
    with pytest.raises(SystemExit, match="refusing to overwrite"):
        export_main([str(run_dir), "--frames", "3"])


def test_image_to_3d_is_scored_on_the_other_views(tmp_path):
    metrics, run_dir = run(tmp_path, "gaussians", "model=toyworld", "task=image_to_3d", "prior=sds")
    assert metrics["gt/views"] == 7 and 0 <= metrics["gt/iou"] <= 1 and metrics["gt/category"] == "single"
    assert metrics["loss/reference_rgb"] >= 0 and (run_dir / "images" / "ground_truth.png").is_file()


def test_a_3d_backbone_with_a_2d_task_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="backbone=nerf or backbone=gaussians"):
        run(tmp_path, "gaussians", "task=text_to_image")


def test_a_densified_gaussian_run_resumes(tmp_path, monkeypatch):
    overrides = ["prior=sds", "checkpoint_every=2", "backbone.grow_grad2d=0.0"]  # every Gaussian grows
    _, straight = run(tmp_path, "gaussians", *overrides, name="straight", steps=6)
    original_step = ScoreDistillationSystem.training_step

    def crash_at_step_5(self, batch, batch_idx):
        if self.global_step == 5:
            raise KeyboardInterrupt
        return original_step(self, batch, batch_idx)

    monkeypatch.setattr(ScoreDistillationSystem, "training_step", crash_at_step_5)
    with pytest.raises(RunInterruptedError):
        run(tmp_path, "gaussians", *overrides, name="crashed", steps=6)
    monkeypatch.setattr(ScoreDistillationSystem, "training_step", original_step)
    saved = torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert saved["backbone.means"].shape[0] != 300  # densification changed the count before the crash
    metrics = train(make_config([f"resume={tmp_path / 'crashed'}"]))
    assert metrics["steps"] == 6
    final = torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    reference = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert final["backbone.means"].shape == reference["backbone.means"].shape
    assert torch.allclose(final["backbone.means"], reference["backbone.means"])
    assert json.loads((tmp_path / "crashed" / "metrics.json").read_text())["steps"] == 6

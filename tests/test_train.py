"""End-to-end runs of train() on the tiny pipeline: every prior, outputs, determinism, resume, failures."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from lods.system import NonFiniteGradientError, ScoreDistillationSystem
from lods.training import RunDirectoryError, RunInterruptedError, train

from .helpers import ROOT, make_config

pytestmark = pytest.mark.slow

GENERATION_PRIORS = ["sds", "sds_ref", "vsd", "lods_embedding", "lods_lora", "sdi"]
EDITING_PRIORS = ["dds", "lods_embedding", "lods_lora"]


def run(tmp_path, *overrides, name="run"):
    cfg = make_config(
        ["model=tiny", "logger=csv", "trainer.max_steps=4", "checkpoint_every=2", "image_every=2", *overrides],
        run_dir=tmp_path / name,
    )
    return train(cfg), tmp_path / name


def final_image(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["state_dict"]["backbone.image"]


@pytest.mark.parametrize("prior", GENERATION_PRIORS)
def test_text_to_image_run_leaves_image_config_and_metrics(tmp_path, prior):
    metrics, run_dir = run(tmp_path, f"prior={prior}", "backbone.num_particles=2")
    assert metrics["steps"] == 4
    for path in (
        "images/final.png",
        "images/final_0.png",
        "images/final_1.png",
        "images/step_000002.png",
        "config.yaml",
        "metrics.json",
        "metrics.csv",
        "checkpoints/last.ckpt",
    ):
        assert (run_dir / path).is_file(), path
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["prompt"] == "a red cube" and saved["seconds_per_step"] > 0
    assert "wall_seconds" in (run_dir / "metrics.csv").read_text().splitlines()[0]  # logged after fit, and saved
    assert torch.isfinite(final_image(run_dir)).all()


@pytest.mark.parametrize("prior", EDITING_PRIORS)
def test_image_editing_run(tmp_path, prior):
    metrics, run_dir = run(tmp_path, "task=image_editing", f"prior={prior}", "backbone.init=source")
    assert metrics["source_prompt"] == "a red sphere" and metrics["prompt"] == "a blue sphere"
    assert (run_dir / "images" / "final.png").is_file()


def test_editing_alpha_starts_at_the_source_caption(tmp_path):
    cfg = make_config(["model=tiny", "task=image_editing", "prior=lods_embedding"], run_dir=tmp_path)
    from hydra.utils import instantiate

    model = instantiate(cfg.model)
    system = ScoreDistillationSystem(
        model,
        instantiate(cfg.prior),
        instantiate(cfg.backbone),
        instantiate(cfg.task),
        instantiate(cfg.cfg_schedule),
        instantiate(cfg.optimizer),
        max_steps=2,
    )
    torch.testing.assert_close(system.prior.alpha.detach(), model.text_embeddings("a red sphere"))


def test_prior_parameters_are_trained_and_checkpointed(tmp_path):
    _, run_dir = run(tmp_path, "prior=lods_embedding", "prior.lr=0.01")
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert "prior.alpha" in state and not any(k.startswith("model") or "unet" in k for k in state)


def test_same_seed_same_result(tmp_path):
    run(tmp_path, "prior=vsd", name="a")
    run(tmp_path, "prior=vsd", name="b")
    assert torch.equal(final_image(tmp_path / "a"), final_image(tmp_path / "b"))
    run(tmp_path, "prior=vsd", "seed=1", name="c")
    assert not torch.equal(final_image(tmp_path / "a"), final_image(tmp_path / "c"))


@pytest.mark.parametrize("prior", ["lods_lora", "vsd"])
def test_a_crashed_run_resumes_to_the_same_result(tmp_path, prior, monkeypatch):
    overrides = [f"prior={prior}", "trainer.max_steps=6", "checkpoint_every=2", "prior.lr=0.001"]
    run(tmp_path, *overrides, name="straight")

    original_step = ScoreDistillationSystem.training_step

    def crash_at_step_5(self, batch, batch_idx):
        if self.global_step == 5:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run
        return original_step(self, batch, batch_idx)

    monkeypatch.setattr(ScoreDistillationSystem, "training_step", crash_at_step_5)
    with pytest.raises(RunInterruptedError, match="resume="):
        run(tmp_path, *overrides, name="crashed")
    assert not (tmp_path / "crashed" / "metrics.json").exists()
    monkeypatch.setattr(ScoreDistillationSystem, "training_step", original_step)

    metrics = train(make_config([f"resume={tmp_path / 'crashed'}"]))
    assert metrics["steps"] == 6
    with (tmp_path / "crashed" / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    logged = [int(float(r["step"])) for r in rows if not r.get("wall_seconds")]
    assert logged == list(range(6))  # the history before the crash is kept, each step logged once
    assert [int(float(r["step"])) for r in rows if r.get("wall_seconds")] == [6]  # and the final row once
    assert torch.equal(final_image(tmp_path / "crashed"), final_image(tmp_path / "straight"))
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    resumed = torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    _, run_dir = run(tmp_path)
    before = (run_dir / "metrics.json").read_text()
    train(make_config([f"resume={run_dir}"]))
    assert (run_dir / "metrics.json").read_text() == before


def test_a_finished_run_is_never_overwritten(tmp_path):
    run(tmp_path)
    with pytest.raises(RunDirectoryError, match="refusing to overwrite"):
        run(tmp_path)


def test_resume_of_something_else_is_refused(tmp_path):
    with pytest.raises(RunDirectoryError, match="no config.yaml"):
        train(make_config([f"resume={tmp_path}"]))


def test_nan_gradient_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from lods.priors import SDS

    original = SDS.forward

    def nan_at_step_3(self, z, c, step=0, *args, **kwargs):
        out = original(self, z, c, step, *args, **kwargs)
        if step == 3:
            out.grad = out.grad * float("nan")
        return out

    monkeypatch.setattr(SDS, "forward", nan_at_step_3)
    with pytest.raises(NonFiniteGradientError, match="non-finite gradient at step 3") as err:
        run(tmp_path, "prior=sds", "trainer.max_steps=6")
    assert "last good checkpoint" in str(err.value)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and torch.isfinite(ckpt["state_dict"]["backbone.image"]).all()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_missing_prompt_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match='prompt is empty: give one on the command line, e.g. prompt="a red cube"'):
        run(tmp_path, "prompt=''")


def test_dds_without_a_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="task=image_editing"):
        run(tmp_path, "prior=dds")


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_cli_run_and_cfg_multirun(tmp_path):
    result = cli(
        "model=tiny",
        "task=text_to_image",
        "prior=lods_lora",
        "trainer.max_steps=3",
        "logger=csv",
        f"hydra.run.dir={tmp_path / 'single'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "single" / "images" / "final.png").is_file()

    result = cli(
        "-m",
        "model=tiny",
        "prior=lods_embedding",
        "prior.guidance_scale=30,100,1000,inf",
        "trainer.max_steps=2",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    scales = sorted(
        json.loads(p.read_text())["prior/guidance_scale"] for p in (tmp_path / "sweep").glob("*/metrics.json")
    )
    assert scales == [30.0, 100.0, 1000.0, float("inf")]


def test_cli_bad_model_path(tmp_path):
    result = cli(
        "model=sd21_base",
        "model.path=/no/such/model",
        "trainer.max_steps=1",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "could not load the diffusion model '/no/such/model'" in result.stderr


def test_default_run_uses_the_toyworld_prior_and_scores_against_ground_truth(tmp_path):
    """The README's main job with every default (model=toyworld, W&B offline): image + ground-truth metrics."""
    result = cli("task=text_to_image", "prompt=a red cube", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 500 and metrics["gt/category"] == "single"
    assert metrics["gt/iou"] > 0.5 and metrics["gt/psnr"] > 15  # a red cube, not noise
    for path in ("images/final.png", "images/ground_truth.png", "metrics.csv", "config.yaml"):
        assert (tmp_path / "run" / path).is_file(), path
    assert "gt/iou" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))

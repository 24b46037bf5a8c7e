"""Every option of every config group composes and instantiates; bad options fail clearly."""

import math
import subprocess
import sys

import pytest
from hydra.utils import instantiate

from lods.diffusion import ModelNotFoundError

from .helpers import CONF, ROOT, make_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_exist():
    assert options("prior") == ["dds", "lods_embedding", "lods_lora", "sdi", "sds", "sds_ref", "vsd"]
    for group in ("model", "backbone", "task", "cfg_schedule", "logger", "trainer", "debug", "hydra"):
        assert options(group), group


@pytest.mark.parametrize("prior", options("prior"))
@pytest.mark.parametrize("task", options("task"))
def test_prior_and_task_instantiate(prior, task):
    cfg = make_config([f"prior={prior}", f"task={task}"])
    instantiate(cfg.prior)
    instantiate(cfg.task)


@pytest.mark.parametrize("group", ["backbone", "cfg_schedule", "trainer"])
def test_group_options_instantiate(group):
    for option in options(group):
        cfg = make_config([f"{group}={option}"])
        assert instantiate(cfg[group]) is not None, option


@pytest.mark.parametrize("option", options("logger"))
def test_loggers_instantiate(option, tmp_path):
    cfg = make_config([f"logger={option}"], run_dir=tmp_path)
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    assert len(loggers) == {"none": 0, "csv": 1, "wandb": 2}[option]


@pytest.mark.parametrize("option", options("model"))
def test_models_instantiate_or_say_where_to_get_weights(option):
    cfg = make_config([f"model={option}"])
    if option in ("tiny", "toyworld"):  # built in code / shipped in the repository
        assert instantiate(cfg.model).image_size == {"tiny": 32, "toyworld": 64}[option]
        return
    with pytest.raises(Exception) as err:  # Hydra wraps the loader's error
        instantiate(cfg.model)
    chain = [err.value, err.value.__cause__]
    assert any(isinstance(e, ModelNotFoundError) for e in chain) or "could not load" in str(err.value)


@pytest.mark.parametrize(
    "option", ["debug=fast", "experiment=2d_generation", "sweep=cfg_ablation", "cfg_schedule=linear"]
)
def test_presets_compose(option):
    cfg = make_config([option])
    assert cfg.prior and cfg.trainer.max_steps > 0


def test_guidance_defaults_follow_the_task_dimension():
    assert make_config(["prior=sds"]).prior.guidance_scale == 7.5
    assert make_config(["prior=lods_embedding"]).prior.guidance_scale == 100
    assert make_config(["prior=sds", "prior.guidance_scale=inf"]).prior.guidance_scale == float("inf")


def test_gaussians_on_the_toyworld_prior_have_their_own_measured_sds_guidance_and_the_rest_keep_the_papers():
    assert make_config(["prior=sds", "backbone=gaussians"]).prior.guidance_scale == 5  # model=toyworld
    assert make_config(["prior=sds", "backbone=gaussians", "model.path=/elsewhere"]).prior.guidance_scale == 5
    assert make_config(["prior=sds", "backbone=nerf"]).prior.guidance_scale == 30
    assert make_config(["prior=lods_embedding", "backbone=gaussians"]).prior.guidance_scale == 1000
    for model in ("sd21_base", "sd15", "tiny"):
        assert make_config(["prior=sds", "backbone=gaussians", f"model={model}"]).prior.guidance_scale == 100
        assert make_config(["prior=sds", f"model={model}"]).prior.guidance_scale == 7.5
    assert make_config(["prior=sds", "backbone=gaussians", "prior.guidance_scale=100"]).prior.guidance_scale == 100


def test_nerf_regularisers_follow_sds_guidance_on_the_toyworld_prior_and_keep_their_weights_elsewhere():
    def weights(*overrides):
        cfg = make_config(["backbone=nerf", *overrides])
        return cfg.prior.guidance_scale, cfg.backbone.sparsity_reg, cfg.backbone.orientation_reg

    assert weights("prior=sds") == (30, 300.0, 30.0)  # model=toyworld
    assert weights("prior=lods_lora") == (1000, 1000.0, 100.0)
    assert weights("prior=sds", "model=sd21_base") == (100, 1000.0, 100.0)
    assert weights("prior=sds", "backbone.sparsity_reg=50") == (30, 50.0, 30.0)
    # the SD preset pins guidance 100 and the weights set against it, on any model
    assert weights("experiment=sds_nerf") == (100, 1000.0, 100.0)


def test_toyworld_starts_3d_from_a_smaller_ball_and_blob_and_other_models_keep_the_reference_sizes():
    assert make_config(["backbone=gaussians"]).backbone.init_radius == 0.3  # model=toyworld
    assert make_config(["backbone=gaussians"]).backbone.halo_points == 1000  # ... with a halo for the backdrop (SDS)
    assert make_config(["backbone=gaussians", "prior=lods_embedding"]).backbone.halo_points == 500  # less haze
    assert make_config(["backbone=nerf"]).backbone.blob_radius == 0.3
    assert make_config(["backbone=nerf"]).backbone.halo_density == 0.2
    for model in ("sd21_base", "sd15", "tiny"):
        assert make_config(["backbone=gaussians", f"model={model}"]).backbone.init_radius == 0.6
        assert make_config(["backbone=gaussians", f"model={model}"]).backbone.halo_points == 0
        assert make_config(["backbone=nerf", f"model={model}"]).backbone.blob_radius == 0.5
        assert make_config(["backbone=nerf", f"model={model}"]).backbone.halo_density == 0.0
    assert make_config(["backbone=gaussians", "backbone.init_radius=0.6"]).backbone.init_radius == 0.6


def test_the_gaussian_halo_under_sds_on_the_toyworld_prior_reaches_every_point_of_its_floors_and_walls():
    from lods.toyworld import grammar as g

    floor_rim = math.hypot(g.FLOOR_RADIUS, g.FLOOR_Z)
    wall_corner = max(math.hypot(g.WALL_X, g.WALL_HALF_WIDTH, z) for z in g.WALL_Z_RANGE)
    backbone = make_config(["backbone=gaussians", "prior=sds"]).backbone
    assert backbone.init_radius < min(abs(g.FLOOR_Z), abs(g.WALL_X))  # the backdrops lie in the halo's shell ...
    assert backbone.halo_radius >= max(floor_rim, wall_corner)  # ... out to their farthest points


def test_unknown_prior_lists_the_choices():
    result = subprocess.run(
        [sys.executable, "train.py", "prior=lods_lorra"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    message = result.stderr
    assert "prior/lods_lorra" in message
    for name in ("dds", "lods_embedding", "lods_lora", "sdi", "sds", "sds_ref", "vsd"):
        assert name in message

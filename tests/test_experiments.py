"""Every preset in experiments/ composes, sets only keys the configs have, and runs 2 steps on the tiny model."""

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lods.config import CONF_DIR
from lods.training import train

from .helpers import ROOT, make_config

PRESETS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
QUIET = ["model=tiny", "logger=none", "trainer.max_steps=2", "image_every=0", "checkpoint_every=2"]
# CPU-sized 3D runs (as tests/test_train_3d.py): one view, small renders and hash grid, no turntable or assets.
SMALL_3D = ["task.batch_size=1", "backbone.resolution=null", "export.frames=0", "export.assets=false"]
SMALL = {
    "NeRFBackbone": [
        "backbone.resolution_schedule=null",
        "backbone.num_levels=4",
        "backbone.log2_hashmap_size=12",
        "backbone.max_grid_resolution=32",
        "backbone.mesh_resolution=32",
    ],
    "GaussianBackbone": ["backbone.num_points=300", "backbone.refine_start=1", "backbone.refine_every=2"],
}
_MISSING = object()


def _leaves(node, prefix=""):
    """Dotted paths of the leaves of a YAML mapping (lists are leaves)."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path


def _choices(overrides):
    """The group options a composition ends up with (hydra.runtime.choices)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    return {group: option for group, option in cfg.hydra.runtime.choices.items() if "/" not in group}


def small_overrides(name):
    """Overrides that make a preset's run take seconds on the tiny model."""
    cfg = make_config([f"experiment={name}"])
    overrides = [f"experiment={name}", *QUIET]
    if cfg.task.dims == 3:
        overrides += [*SMALL_3D, *SMALL[cfg.backbone._target_.rsplit(".", 1)[-1]]]
    if str(cfg.get("prompt_list") or "").startswith("t3bench"):  # T3Bench's prompts are not shipped
        overrides.append("prompt_list=toyworld_single")
    return overrides


def test_there_are_presets_for_the_paper():
    paper = {"2d_generation", "2d_editing", "lods_nerf", "lods_gaussians", "cfg_ablation", "image_to_3d", "t3bench"}
    assert paper <= set(PRESETS), paper - set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_its_parts_instantiate(name):
    cfg = make_config([f"experiment={name}"])
    assert cfg.trainer.max_steps > 0
    instantiate(cfg.prior)
    instantiate(cfg.task)
    instantiate(cfg.cfg_schedule)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_header_and_keys(name):
    """A global package, a header with the command that runs it, and only keys that exist without the preset."""
    text = (ROOT / "experiments" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n"), name
    header = text.split("\ndefaults:")[0]
    assert "python train.py" in header and f"experiment={name}" in header, "the header shows the command"
    preset = yaml.safe_load(text) or {}
    choices = _choices([f"experiment={name}"])
    base = make_config(
        [f"{group}={option}" for group, option in choices.items() if option and group not in ("experiment", "hydra")]
    )
    keys = list(_leaves({k: v for k, v in preset.items() if k not in ("defaults", "hydra")}))
    unknown = [k for k in keys if OmegaConf.select(base, k, default=_MISSING) is _MISSING]
    assert not unknown, f"experiments/{name}.yaml sets keys no config has: {unknown}"


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_two_steps(tmp_path, name):
    composed = make_config([f"experiment={name}"])
    cfg = make_config(small_overrides(name), run_dir=tmp_path / "run")
    metrics = train(cfg)
    assert metrics["steps"] == 2
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.prior._target_ == composed.prior._target_ and saved.task._target_ == composed.task._target_
    assert saved.backbone._target_ == composed.backbone._target_

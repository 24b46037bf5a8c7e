"""lods.runs: a run directory read back (config, metrics, images, checkpoint)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from lods import runs, training


def test_missing_files_are_named(tmp_path):
    for read, name in ((runs.read_config, "config.yaml"), (runs.read_metrics, "metrics.json")):
        with pytest.raises(runs.RunDirectoryError, match=rf"'{tmp_path}' has no {name}: is it a lods run directory\?"):
            read(tmp_path)
    with pytest.raises(runs.RunDirectoryError, match="has no config.yaml"):
        runs.load_system(tmp_path)
    assert runs.last_checkpoint(tmp_path) is None
    assert training.RunDirectoryError is runs.RunDirectoryError  # one error, raised by training and by readers


def test_reads_what_training_writes(tmp_path):
    (tmp_path / "config.yaml").write_text("prompt: a red cube\nseed: 3\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 2, "model/random_weights": True}))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert runs.read_config(tmp_path).seed == 3 and runs.read_metrics(tmp_path)["model/random_weights"] is True
    assert runs.last_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"


def test_final_images_in_index_order(tmp_path):
    (tmp_path / "images").mkdir()
    for i in (0, 2, 10):
        Image.fromarray(np.full((4, 6, 3), i * 20, dtype=np.uint8)).save(tmp_path / "images" / f"final_{i}.png")
    images = runs.final_images(tmp_path)
    assert images.shape == (3, 3, 4, 6)
    assert [round(float(x) * 255) for x in images[:, 0, 0, 0]] == [0, 40, 200]
    with pytest.raises(FileNotFoundError, match="no images/final_"):
        runs.final_images(tmp_path / "images")


def test_a_run_made_with_other_settings_is_named_key_by_key(tmp_path):
    from omegaconf import OmegaConf

    saved = OmegaConf.create({"seed": 0, "backbone": {"init_radius": 0.6}, "trainer": {"max_steps": 9}, "run_dir": "a"})
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    wanted = OmegaConf.create({"seed": 0, "backbone": {"init_radius": "${half:0.6}", "halo_points": 0}})
    wanted.trainer = {"max_steps": 9, "accelerator": "gpu"}  # only trainer.max_steps is part of what a run is
    wanted.run_dir = "b"
    OmegaConf.register_new_resolver("half", lambda x: x / 2, replace=True)
    assert runs.recipe(wanted) == {
        "backbone.init_radius": 0.3,
        "backbone.halo_points": 0,
        "trainer.max_steps": 9,
        "seed": 0,
    }
    with pytest.raises(runs.RunDirectoryError, match=r"backbone.init_radius: 0.6 -> 0.3\)"):
        runs.require_recipe(tmp_path, wanted)  # the saved side from config.yaml; an option added since is left out
    saved.backbone.init_radius = 0.3
    runs.require_recipe(tmp_path, wanted, saved=runs.recipe(saved))
    wanted.backbone.new_option = 1  # an option added after the run whose default does what runs did before it
    assert runs.recipe_changes(runs.recipe(saved), wanted) == []
    assert runs.recipe_changes(runs.recipe(saved), wanted, ["backbone.new_option=1"]) == [
        "backbone.new_option: (not an option then) -> 1"
    ]
    runs.require_recipe(tmp_path / "elsewhere", wanted)  # neither a record's recipe nor a config.yaml: unchecked
    # An option whose default changed what runs do: a recipe from before it had the value it replaced.
    assert runs.recipe_changes({"backbone.init_radius": 0.3}, OmegaConf.create({"backbone": {"halo_points": 500}})) == [
        "backbone.halo_points: 0 (before the option) -> 500"
    ]
    assert runs.recipe_changes({}, OmegaConf.create({"backbone": {"halo_density": 0.0}})) == []


def test_config_changes_name_each_differing_key_and_cap_the_list():
    saved = {"seed": 0, "prior": {"name": "sds", "guidance_scale": 100}, "task": {"views": [0, 90]}}
    wanted = {"seed": 1, "prior": {"name": "sds", "guidance_scale": 100, "t_max": 0.98}, "task": {"views": [0, 45]}}
    assert runs.config_changes(saved, wanted) == [
        "prior.t_max: (absent) -> 0.98",
        "seed: 0 -> 1",
        "task.views: [0, 90] -> [0, 45]",
    ]
    assert runs.config_changes(saved, saved) == []
    many = {f"k{i}": i for i in range(9)}
    assert runs.config_changes(many, {k: -1 for k in many}, limit=3)[-1] == "and 6 more"


def test_retrained_weights_in_the_same_folder_make_another_recipe(tmp_path):
    from omegaconf import OmegaConf

    folder = tmp_path / "prior"
    (folder / "unet").mkdir(parents=True)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"first training")
    cfg = OmegaConf.create({"model": {"_target_": "lods.toyworld.model.load_prior", "path": str(folder)}, "seed": 0})
    first = runs.recipe(cfg)
    assert first["model.path"] == str(folder) and len(first["model.weights"]) == 16
    weights.write_bytes(b"retrained, same folder")
    with pytest.raises(runs.RunDirectoryError, match=rf"model.weights: '{first['model.weights']}' -> '[0-9a-f]{{16}}'"):
        runs.require_recipe(tmp_path, cfg, saved=first)
    # Models named by their config alone (built in code, hub ids) carry no digest; the shipped prior does.
    assert runs.weights_folder({"_target_": "lods.diffusion.build_tiny_model", "seed": 0}) is None
    assert runs.weights_folder({"_target_": "lods.diffusion.load_model", "path": "org/some-hub-model"}) is None
    assert runs.weights_folder({"_target_": "lods.toyworld.model.load_prior", "path": None}).name == "toyworld"


def test_a_run_keeps_its_weights_digest_and_refuses_other_weights(tmp_path, monkeypatch):
    """config.yaml cannot say which weights a run loaded: a prior retrained in the same folder leaves it as it was.
    recipe.json keeps the digest, so a relaunched sweep does not read the old run back and a resume does not mix
    two priors in one run."""
    from omegaconf import OmegaConf

    folder = tmp_path / "prior"
    (folder / "unet").mkdir(parents=True)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"first training")
    run_dir = tmp_path / "sweep" / "0"
    model = {"_target_": "lods.toyworld.model.load_prior", "path": str(folder)}
    cfg = OmegaConf.create({"model": model, "seed": 0, "run_dir": str(run_dir), "resume": None})
    monkeypatch.setattr(training, "_sweep", lambda: ("multirun", tmp_path / "sweep"))

    _, made, checkpoint = training._prepare_run_dir(cfg.copy())
    assert made == run_dir.resolve() and checkpoint is None
    first = runs.run_recipe(run_dir)["model.weights"]
    assert first == runs.recipe(cfg)["model.weights"]
    (run_dir / runs.RESULT_FILE).write_text("{}")  # finished
    assert training._prepare_run_dir(cfg.copy())[1] == made  # same config, same weights: the sweep goes on

    weights.write_bytes(b"retrained, same folder")
    with pytest.raises(runs.RunDirectoryError, match=rf"other weights.*model.weights: '{first}' -> '[0-9a-f]{{16}}'"):
        training._prepare_run_dir(cfg.copy())
    with pytest.raises(runs.RunDirectoryError, match=r"cannot resume .*mix two priors"):
        training._prepare_run_dir(OmegaConf.merge(cfg, {"resume": str(run_dir)}))
    with pytest.raises(runs.RunDirectoryError, match="model.weights"):  # a record without its own recipe: the folder's
        runs.require_recipe(run_dir, cfg)
    (run_dir / runs.RECIPE_FILE).unlink()  # a run from before recipe.json: weights written after it started
    with pytest.raises(runs.RunDirectoryError, match=r"other weights.*written after the run started: .*safetensors"):
        training._prepare_run_dir(cfg.copy())
    os.utime(weights, (1e9, 1e9))  # ... weights older than the run: the ones it loaded, as far as anyone can tell
    assert training._prepare_run_dir(cfg.copy())[1] == made

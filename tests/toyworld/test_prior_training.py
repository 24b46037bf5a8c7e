"""The toyworld prior's training pipeline at toy sizes: it produces a loadable SD-format model and resumes."""

import json

import pytest
import torch

from lods.config import compose_config
from lods.diffusion import load_model
from lods.toyworld import prior

pytestmark = pytest.mark.slow

TOY = [
    "data.num_scenes=6",
    "data.views_per_scene=2",
    "vae.steps=2",
    "vae.batch_size=4",
    "vae.checkpoint_every=1",
    "unet.steps=4",
    "unet.batch_size=4",
    "unet.checkpoint_every=2",
]


def config(tmp_path):
    cfg = compose_config([*TOY, f"output={tmp_path / 'model'}"], run_dir=tmp_path / "run", config_name="toyworld_prior")
    return cfg


def test_training_crashes_then_resumes_to_a_loadable_model(tmp_path, monkeypatch):
    original = prior.DiffusionStage.training_step

    def crash_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("simulated crash")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(prior.DiffusionStage, "training_step", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prior.train_prior(config(tmp_path))
    assert not (tmp_path / "model").exists()
    monkeypatch.setattr(prior.DiffusionStage, "training_step", original)

    resumed = compose_config([f"resume={tmp_path / 'run'}"], config_name="toyworld_prior")
    output = prior.train_prior(resumed)
    last = torch.load(tmp_path / "run" / "diffusion" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4
    model = load_model(str(output), device="cpu")
    assert model.image_size == 64 and model.latent_size == 16 and model.latent_channels == 4
    emb = model.text_embeddings(["a red cube, front view", "a red cube"])
    assert not torch.allclose(emb[0], emb[1])
    for caption in ("a checkered red cube, side view", "an object to the left of a cube, back view"):
        assert model.tokenizer.unk_token_id not in model.tokenizer(caption).input_ids


def test_a_trained_prior_goes_on_training_on_views_of_chosen_categories(tmp_path):
    first = prior.train_prior(config(tmp_path / "first"))
    base = load_model(str(first), device="cpu")
    overrides = [*TOY, f"init={first}", "data.categories=[surroundings]", f"output={tmp_path / 'continued'}"]
    continued = prior.train_prior(compose_config(overrides, run_dir=tmp_path / "run2", config_name="toyworld_prior"))
    views = torch.load(tmp_path / "run2" / "views.pt", weights_only=False)
    assert set(views["categories"]) == {"surroundings"}
    model = load_model(str(continued), device="cpu")
    # The VAE and its latent scale are the first prior's; the U-Net went on from its weights and moved.
    assert model.vae.config.scaling_factor == base.vae.config.scaling_factor
    for name, p in model.vae.state_dict().items():
        assert torch.equal(p, base.vae.state_dict()[name]), name
    assert not all(torch.equal(p, base.unet.state_dict()[n]) for n, p in model.unet.state_dict().items())
    assert model.tokenizer.get_vocab() == base.tokenizer.get_vocab()
    record = json.loads((continued / "training.json").read_text())
    assert record["init"] == str(first.resolve()) and record["categories"] == ["surroundings"]
    assert record["vae_steps"] == 0 and record["diffusion_steps"] == 4
    assert record["continued_from"] == json.loads((first / "training.json").read_text())  # the start's own record

    same = [*TOY, f"init={first}", f"output={first}"]
    with pytest.raises(ValueError, match="same folder"):
        prior.train_prior(compose_config(same, run_dir=tmp_path / "run3", config_name="toyworld_prior"))
    with pytest.raises(ValueError, match=r"unknown scene categories \['walls'\].*single, surroundings, multiple"):
        prior.train_prior(
            compose_config(
                [*TOY, "data.categories=[walls]", f"output={tmp_path / 'x'}"],
                run_dir=tmp_path / "run4",
                config_name="toyworld_prior",
            )
        )

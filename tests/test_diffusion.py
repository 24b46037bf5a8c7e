"""The diffusion layer: loading, v-prediction, VAE, prompts, DDIM."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lods.diffusion import DiffusionModel, ModelNotFoundError, build_tiny_model, load_model
from lods.diffusion.prompts import PromptSet

T = torch.tensor([10, 480, 990])


class VPredictionUNet(nn.Module):
    """Wraps an epsilon U-Net so that it predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 instead."""

    def __init__(self, unet, alphas_cumprod):
        super().__init__()
        self.inner, self.alphas_cumprod, self.config = unet, alphas_cumprod, unet.config

    def forward(self, sample, t, encoder_hidden_states, **kwargs):
        eps = self.inner(sample, t, encoder_hidden_states=encoder_hidden_states).sample
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
        return SimpleNamespace(sample=a.sqrt() * eps - (1 - a).sqrt() * x0)


def test_v_prediction_converts_to_the_same_epsilon(model):
    v_model = DiffusionModel(
        VPredictionUNet(model.unet, model.alphas_cumprod),
        model.vae,
        model.text_encoder,
        model.tokenizer,
        model.alphas_cumprod,
        prediction_type="v_prediction",
    )
    z_t = torch.randn(3, 4, 16, 16)
    emb = model.text_embeddings(["a red cube"] * 3)
    torch.testing.assert_close(v_model.eps(z_t, T, emb), model.eps(z_t, T, emb), rtol=1e-4, atol=1e-4)


def test_unknown_prediction_type_is_named(model):
    with pytest.raises(ValueError, match="unsupported prediction_type 'sample'; choose one of: epsilon, v_prediction"):
        DiffusionModel(model.unet, model.vae, model.text_encoder, model.tokenizer, model.alphas_cumprod, "sample")


def test_ddim_inversion_then_sampling_returns_the_start(model):
    """Inversion followed by sampling (guidance 1) round-trips, with the first-order error of DDIM inversion."""
    torch.manual_seed(0)
    z0 = torch.randn(2, 4, 16, 16)
    cond = model.text_embeddings(["a red cube"] * 2)
    errors = {}
    for steps in (50, 400):
        z_t = model.ddim_invert(z0, 600, steps, cond)
        assert (z_t - z0).abs().mean() > 0.3  # it did move to a noisy latent
        errors[steps] = (model.ddim_sample(z_t, 600, steps, cond) - z0).abs().mean()
    assert errors[400] < 3e-3
    assert errors[400] < errors[50] / 3  # the error shrinks with the step size


def test_add_noise_and_sigma(model):
    z0, eps = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16)
    a = model.alphas_cumprod[T].view(-1, 1, 1, 1)
    torch.testing.assert_close(model.add_noise(z0, eps, T), a.sqrt() * z0 + (1 - a).sqrt() * eps)
    torch.testing.assert_close(model.sigma(T), ((1 - a) / a).sqrt())
    assert float(model.abar(torch.tensor([-1]))) == 1.0


def test_sd21_schedule(model):
    assert model.num_train_timesteps == 1000
    assert math.isclose(float(model.alphas_cumprod[0]), 1 - 0.00085, rel_tol=1e-6)


def test_vae_encode_is_differentiable_and_decode_is_an_image(model):
    rgb = torch.rand(2, 3, 32, 32, requires_grad=True)
    z = model.encode(rgb)
    assert z.shape == (2, 4, 16, 16)
    z.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    image = model.decode(z.detach())
    assert image.shape == (2, 3, 32, 32) and image.min() >= 0 and image.max() <= 1


def test_prompt_embeddings_are_cached(model, monkeypatch):
    first = model.text_embeddings(["a red cube", ""])
    calls = []
    monkeypatch.setattr(model.text_encoder, "forward", lambda *a, **k: calls.append(1))
    again = model.text_embeddings(["", "a red cube"])
    assert not calls
    torch.testing.assert_close(again[1], first[0])
    assert not torch.allclose(first[0], first[1])


def test_view_dependent_prompts(model):
    from lods.cameras import orbit_cameras

    prompts = PromptSet(model, "a red cube", view_dependent=True)
    cams = orbit_cameras([0.0, 90.0, 180.0, 10.0], [0.0, 0.0, 0.0, 75.0], 3.0, 40.0, 8, 8)
    assert prompts.prompts_for(cams, 4) == [
        "a red cube, front view",
        "a red cube, side view",
        "a red cube, back view",
        "a red cube, overhead view",
    ]
    c = prompts(cams, 4)
    torch.testing.assert_close(c.cond[2], model.text_embeddings("a red cube, back view")[0])
    assert c.cameras.shape == (4, 16)


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "tiny")
    loaded = load_model(str(tmp_path / "tiny"), device="cpu")
    z_t = torch.randn(3, 4, 16, 16)
    emb = model.text_embeddings(["a red cube"] * 3)
    torch.testing.assert_close(loaded.eps(z_t, T, loaded.text_embeddings(["a red cube"] * 3)), model.eps(z_t, T, emb))
    assert loaded.image_size == 32 and loaded.prediction_type == "epsilon"


def test_saved_folder_is_a_diffusers_pipeline(model, tmp_path):
    from diffusers import StableDiffusionPipeline

    model.save_pretrained(tmp_path / "tiny")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "tiny", safety_checker=None)
    assert pipe.unet.config.sample_size == 16


def test_missing_local_model_says_where_it_looked(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        load_model(str(tmp_path / "nowhere"))
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "model.path=" in message and "huggingface-cli download" in message


def test_incomplete_folder_names_missing_parts(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotFoundError, match="lacks the subfolders vae, text_encoder, tokenizer, scheduler"):
        load_model(str(tmp_path))


def test_hub_id_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="stabilityai/stable-diffusion-2-1-base") as err:
        load_model("stabilityai/stable-diffusion-2-1-base")
    assert "Hugging Face cache" in str(err.value)


def test_tiny_model_is_seeded():
    a, b = build_tiny_model(seed=3, device="cpu"), build_tiny_model(seed=3, device="cpu")
    for p, q in zip(a.unet.parameters(), b.unet.parameters()):
        assert torch.equal(p, q)

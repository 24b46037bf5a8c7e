"""Full-size SD architectures with random weights (lods.diffusion.architectures) and the CLIP-layout tokenizer.

The full-size modules are built on the meta device here (no memory, a fraction of a second); the weights are
filled for scaled-down copies of the same architectures, through the same code. One full-size run is in
tests/test_fullscale.py (slow)."""

import dataclasses

import pytest
import torch
from hydra.utils import instantiate

from lods.diffusion import architectures as arch
from lods.diffusion import build_tiny_model, load_model
from lods.diffusion.tokenizer import clip_byte_tokenizer

from .helpers import make_config

# Parameter counts of the public checkpoints (diffusers folders of stable-diffusion-v1-5, stable-diffusion-2-1[-base]).
PUBLIC = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd21_base": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sd21": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
}


def small(name: str) -> arch.Architecture:
    """``name`` with every width cut down (same block types, heads layout, prediction type, tokenizer)."""
    full = arch.architecture(name)
    text = dict(full.text_encoder, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    heads = full.unet["attention_head_dim"]
    unet = dict(
        full.unet,
        block_out_channels=(32, 64, 64, 64),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=heads if isinstance(heads, int) else (2, 4, 4, 4),
    )
    vae = dict(full.vae, block_out_channels=(8, 16, 16, 16), norm_num_groups=8)
    return dataclasses.replace(full, image_size=64, text_encoder=text, unet=unet, vae=vae)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_full_size_modules_have_the_public_parameter_counts(name):
    text_encoder, vae, unet = arch.build_meta_modules(arch.architecture(name))
    counts = {
        n: sum(p.numel() for p in m.parameters())
        for n, m in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))
    }
    assert counts == PUBLIC[name]
    assert all(p.is_meta for p in unet.parameters())
    assert unet.config.sample_size * 8 == arch.architecture(name).image_size
    assert text_encoder.embeddings.position_ids[0, :3].tolist() == [0, 1, 2]  # buffers stay real


def test_architecture_values():
    sd15, base, sd21 = (arch.architecture(n) for n in ("sd15", "sd21_base", "sd21"))
    assert (sd15.image_size, base.image_size, sd21.image_size) == (512, 512, 768)
    assert (sd15.prediction_type, base.prediction_type, sd21.prediction_type) == ("epsilon", "epsilon", "v_prediction")
    assert base.unet["attention_head_dim"] == (5, 10, 20, 20) and base.unet["use_linear_projection"]
    assert sd15.unet["cross_attention_dim"] == 768 and base.unet["cross_attention_dim"] == 1024
    assert base.text_encoder["num_hidden_layers"] == 23 and base.text_encoder["hidden_act"] == "gelu"
    assert sd21.scheduler_config["steps_offset"] == 1 and sd21.scheduler_config["prediction_type"] == "v_prediction"
    assert base.vae["scaling_factor"] == 0.18215 and base.vae["block_out_channels"] == (128, 256, 512, 512)
    with pytest.raises(ValueError, match=r"unknown architecture 'sdxl'; choose one of: sd15, sd21_base, sd21"):
        arch.architecture("sdxl")


@pytest.mark.parametrize("pad, pad_id", [("<|endoftext|>", 49407), ("!", 0)])
def test_clip_byte_tokenizer(pad, pad_id, tmp_path):
    tokenizer = clip_byte_tokenizer(pad)
    ids = tokenizer(["a red cube", "Ünïcode, 🙂!"], padding="max_length", max_length=77, truncation=True).input_ids
    assert all(len(row) == 77 for row in ids)
    assert ids[0][:6] == [49406, 320, 81, 68, 323, 66]  # <|startoftext|> a</w> r e d</w> c: CLIP's own ids
    assert ids[0][9] == 49407 and ids[0][10:] == [pad_id] * 67  # <|endoftext|>, then the padding
    assert max(max(row) for row in ids) < arch.OPENCLIP_VIT_H14["vocab_size"] == len(tokenizer) == 49408
    long = tokenizer("x" * 500, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(long) == 77 and long[-1] == 49407
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path)("a red cube").input_ids == ids[0][:10]
    with pytest.raises(ValueError, match="pad_token '<pad>'"):
        clip_byte_tokenizer("<pad>")


def test_random_weights_are_seeded_and_labelled():
    a = arch.build_random_model(small("sd21_base"), seed=0, device="cpu")
    b = arch.build_random_model(small("sd21_base"), seed=0, device="cpu")
    c = arch.build_random_model(small("sd21_base"), seed=1, device="cpu")
    for first, second in zip(a.unet.state_dict().values(), b.unet.state_dict().values()):
        assert torch.equal(first, second)
    assert not torch.equal(a.unet.conv_in.weight, c.unet.conv_in.weight)
    assert a.name == "sd21_base (random weights)" and a.random_weights and not build_tiny_model().random_weights
    weight = a.unet.down_blocks[0].resnets[0].conv1.weight  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1 / (weight[0].numel() ** 0.5)
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert len(torch.unique(weight)) > 0.9 * weight.numel()  # no short repeats
    assert torch.all(a.unet.conv_norm_out.weight == 1) and torch.all(a.unet.conv_in.bias == 0)
    assert not any(p.is_meta for m in (a.unet, a.vae, a.text_encoder) for p in m.parameters())


def test_a_saved_random_model_stays_labelled(tmp_path):
    folder = arch.build_random_model(small("sd15"), seed=0, device="cpu").save_pretrained(tmp_path / "random")
    loaded = load_model(str(folder), device="cpu")
    assert loaded.random_weights and loaded.name == f"{folder} (random weights)"
    assert loaded.tokenizer("a red cube").input_ids[:2] == [49406, 320]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_a_random_model_runs_in_half_precision_with_v_prediction(dtype):
    """What fp16 on CUDA exercises, on the CPU: casts at the U-Net and VAE, fp32 outputs and LoRA, gradients."""
    model = arch.build_random_model(small("sd21"), seed=0, device="cpu", dtype=dtype)
    assert model.prediction_type == "v_prediction" and model.unet.dtype == model.vae.dtype == model.dtype
    assert (model.dtype == torch.float32) == (dtype == "fp32")
    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    text = model.text_embeddings(["a red cube", ""])
    eps = model.eps_guided(z, torch.tensor([500, 300]), text[:1], text[1:], 7.5)
    assert eps.dtype == torch.float32 and eps.isfinite().all()
    eps.square().mean().backward()
    assert z.grad.isfinite().all() and z.grad.abs().sum() > 0
    params = model.add_lora("psi", 2, ["to_q", "to_k", "to_v", "to_out.0"])
    with model.adapter("psi") as kwargs:
        model.eps(z.detach(), torch.tensor([500]), text[:1], cross_attention_kwargs=kwargs).square().mean().backward()
    assert params[0].dtype == torch.float32 and params[-1].grad is not None
    rgb = model.decode(z.detach())
    assert rgb.shape == (2, 3, 64, 64) and model.encode(rgb).dtype == torch.float32


def test_load_model_weights_option(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown model.weights 'fake'; choose one of: pretrained, random"):
        load_model("stabilityai/stable-diffusion-2-1-base", weights="fake")
    with pytest.raises(ValueError, match=r"needs model.architecture .*choose one of: sd15, sd21_base, sd21"):
        load_model("/some/folder", weights="random")
    built = {}
    monkeypatch.setattr(arch, "build_random_model", lambda *a, **k: built.update(args=a, kwargs=k) or "model")
    cfg = make_config(["model=sd21_base", "model.weights=random", "model.seed=3"])
    assert cfg.model.weights == "random" and cfg.model.architecture == "sd21_base"
    assert instantiate(cfg.model) == "model"
    assert built["args"] == ("sd21_base",) and built["kwargs"]["seed"] == 3
    for name in ("sd15", "sd21"):
        assert make_config([f"model={name}", "model.weights=random"]).model.architecture == name


@pytest.mark.parametrize("prior", ["sds", "sds_ref", "lods_embedding", "lods_lora", "vsd", "sdi"])
def test_every_prior_steps_in_fp16_with_v_prediction(prior):
    """One prior step of text-to-3D conditioning (2 views) on a half-precision v-prediction model: what CUDA fp16
    runs, on the CPU (VSD's fp32 camera embedding meets the fp16 U-Net, LoRA trains in fp32)."""
    from lods.config import compose_config

    model = arch.build_random_model(small("sd21"), seed=0, device="cpu", dtype="fp16")
    cfg = compose_config([f"prior={prior}", "backbone=gaussians"])
    task, step_prior = instantiate(cfg.task), instantiate(cfg.prior)
    task.setup(model, 64)
    generator = torch.Generator().manual_seed(0)
    conditioning = task.conditioning(task.sample_cameras(0, 2, generator), 2)
    step_prior.setup(model, conditioning, 10)
    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = step_prior(z, conditioning, 0, 100.0, generator=generator)
    ((out.grad * z).sum() + (0 if out.loss is None else out.loss)).backward()
    assert out.grad.dtype == torch.float32 and out.grad.isfinite().all() and z.grad.isfinite().all()

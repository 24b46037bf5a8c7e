"""The paper identities every prior must satisfy (LODS seed 002, SDI seed 004), with tolerances."""

import math

import pytest
import torch

from lods.diffusion.model import guided
from lods.priors import DDS, SDI, SDS, VSD, LODSEmbedding, LODSLoRA, SDSRef
from lods.schedules import LinearDecayTimesteps, RandomTimesteps
from tests.tolerances import assert_network_close

T = torch.tensor([150, 700])


def noise_like(z, seed=2):
    return torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))


def setup(prior, model, conditioning):
    prior.setup(model, conditioning, max_steps=10)
    return prior


def predictions(model, latents, eps, conditioning, t=T):
    """eps(z_t; y) and eps(z_t; null): the terms a gradient is formed from (their size sets its tolerance)."""
    z_t = model.add_noise(latents, eps, t)
    return model.eps(z_t, t, conditioning.cond), model.eps(z_t, t, conditioning.uncond)


@pytest.mark.parametrize("scale", [7.5, 100.0, 1000.0])
def test_lods_embedding_with_frozen_null_alpha_is_sds_over_w(model, conditioning, latents, scale):
    """Eq. 7 with alpha = null embedding is SDS scaled by 1/w: same result up to the learning rate."""
    sds = setup(SDS(guidance_scale=scale), model, conditioning)
    lods = setup(LODSEmbedding(guidance_scale=scale), model, conditioning)
    eps = noise_like(latents)
    g_sds = sds(latents, conditioning, t=T, noise=eps).grad
    g_lods = lods(latents, conditioning, t=T, noise=eps).grad
    torch.testing.assert_close(g_lods * scale, g_sds, rtol=1e-4, atol=1e-4 * scale)
    assert g_sds.abs().max() > 0


def test_guidance_inf_is_the_pure_classifier_direction(model, conditioning, latents):
    """w = inf: the target is eps_c - eps_u and the noise drops out, for SDS and LODS alike."""
    eps = noise_like(latents)
    eps_c = model.eps(model.add_noise(latents, eps, T), T, conditioning.cond)
    eps_u = model.eps(model.add_noise(latents, eps, T), T, conditioning.uncond)
    expected = (1 - model.abar(T)) * (eps_c - eps_u)
    for prior in (SDS(guidance_scale=math.inf), LODSEmbedding(guidance_scale=math.inf)):
        g = setup(prior, model, conditioning)(latents, conditioning, t=T, noise=eps).grad
        assert_network_close(g, expected, eps_c, eps_u)
    assert guided(eps_c, eps_u, math.inf).equal(eps_c - eps_u)


def test_sds_ref_has_no_guidance(model, conditioning, latents):
    eps = noise_like(latents)
    g = setup(SDSRef(), model, conditioning)(latents, conditioning, t=T, noise=eps).grad
    eps_c = model.eps(model.add_noise(latents, eps, T), T, conditioning.cond)
    assert_network_close(g, (1 - model.abar(T)) * (eps_c - eps), eps_c, eps)


def test_alpha_loss_does_not_depend_on_w(model, conditioning, latents):
    """Eq. 8: the Fisher-divergence loss of alpha is independent of the guidance weight."""
    t_own, noise_own = torch.tensor([30, 600]), noise_like(latents, 5)
    losses, grads = [], []
    for scale in (30.0, 1000.0, math.inf):
        prior = setup(LODSEmbedding(guidance_scale=scale), model, conditioning)
        out = prior(latents, conditioning, t=T, noise=noise_like(latents), t_own=t_own, noise_own=noise_own)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(prior.alpha.grad.clone())
    assert losses[0] > 0 and grads[0].abs().max() > 0
    for loss, grad in zip(losses[1:], grads[1:]):
        torch.testing.assert_close(loss, losses[0])
        torch.testing.assert_close(grad, grads[0])


def test_only_the_own_loss_trains_alpha_and_it_never_reaches_the_render(model, conditioning, latents):
    prior = setup(LODSEmbedding(guidance_scale=100.0), model, conditioning)
    z = latents.clone().requires_grad_(True)
    out = prior(z, conditioning, t=T, noise=noise_like(latents))
    assert not out.grad.requires_grad  # target/control are computed without the U-Net Jacobian
    out.loss.backward()
    assert z.grad is None and prior.alpha.grad is not None


def test_alpha_starts_at_the_null_embedding_and_learns(model, conditioning, latents):
    prior = setup(LODSEmbedding(guidance_scale=100.0), model, conditioning)
    torch.testing.assert_close(prior.alpha.detach(), conditioning.uncond.float())
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    t_own, noise_own = torch.tensor([200, 400]), noise_like(latents, 7)
    first = None
    for _ in range(15):
        loss = prior(latents, conditioning, t=T, noise=noise_like(latents), t_own=t_own, noise_own=noise_own).loss
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first  # Eq. 8 is being minimised


def randomize_lora(prior):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in prior.lora:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_lods_lora_with_lora_disabled_equals_frozen_lods_embedding(model, conditioning, latents):
    eps = noise_like(latents)
    g_emb = setup(LODSEmbedding(guidance_scale=100.0), model, conditioning)(latents, conditioning, t=T, noise=eps).grad
    lora = setup(LODSLoRA(guidance_scale=100.0), model, conditioning)
    randomize_lora(lora)
    lora.lora_scale = 0.0  # LoRA disabled
    terms = predictions(model, latents, eps, conditioning)
    assert_network_close(lora(latents, conditioning, t=T, noise=eps).grad, g_emb, *terms)
    lora.lora_scale = 0.5  # enabled: the unconditional branch moves
    assert not torch.allclose(lora(latents, conditioning, t=T, noise=eps).grad, g_emb, atol=1e-4)


def test_lora_starts_as_the_pretrained_model_and_leaves_the_conditional_branch_alone(model, conditioning, latents):
    eps = noise_like(latents)
    g_emb = setup(LODSEmbedding(guidance_scale=100.0), model, conditioning)(latents, conditioning, t=T, noise=eps).grad
    lora = setup(LODSLoRA(guidance_scale=100.0), model, conditioning)
    terms = predictions(model, latents, eps, conditioning)
    assert_network_close(lora(latents, conditioning, t=T, noise=eps).grad, g_emb, *terms)
    randomize_lora(lora)
    z_t = model.add_noise(latents, eps, T)
    eps_cond_before = model.eps(z_t, T, conditioning.cond)
    lora(latents, conditioning, t=T, noise=eps)
    torch.testing.assert_close(model.eps(z_t, T, conditioning.cond), eps_cond_before)  # adapters off outside


def test_lods_lora_loss_trains_only_lora(model, conditioning, latents):
    prior = setup(LODSLoRA(guidance_scale=100.0), model, conditioning)
    out = prior(latents, conditioning, t=T, noise=noise_like(latents))
    out.loss.backward()
    assert all(p.grad is not None for p in prior.lora)
    assert all(p.grad is None for n, p in model.unet.named_parameters() if "lora" not in n)


def test_vsd_starts_as_lods_with_infinite_guidance(model, conditioning, latents):
    """LODS Sec. 3.6: VSD's initial control is eps(z_t; y), so its gradient is (s-1) times LODS at s = inf."""
    eps = noise_like(latents)
    cams = conditioning.replace(cameras=torch.randn(2, 16))
    g_vsd = setup(VSD(guidance_scale=7.5), model, cams)(latents, cams, t=T, noise=eps).grad
    g_inf = setup(LODSEmbedding(guidance_scale=math.inf), model, cams)(latents, cams, t=T, noise=eps).grad
    eps_c, eps_u = predictions(model, latents, eps, cams)
    assert_network_close(g_vsd, 6.5 * g_inf, 7.5 * eps_c, 7.5 * eps_u)  # CFG at 7.5 forms the target


def test_vsd_camera_embedding_conditions_psi(model, conditioning, latents):
    prior = setup(VSD(guidance_scale=7.5), model, conditioning)
    with torch.no_grad():
        prior.camera_embedding.mlp[-1].weight.normal_()
    z_t = model.add_noise(latents, noise_like(latents), T)
    a = prior.eps_psi(z_t, T, conditioning.cond, torch.zeros(2, 16))
    b = prior.eps_psi(z_t, T, conditioning.cond, torch.ones(2, 16))
    assert not torch.allclose(a, b)
    assert model.unet.class_embedding is None  # plugged in only while psi runs
    out = prior(latents, conditioning.replace(cameras=torch.ones(2, 16)), t=T, noise=noise_like(latents))
    out.loss.backward()
    assert prior.camera_embedding.mlp[0].weight.grad is not None and all(p.grad is not None for p in prior.lora)


def test_dds_is_zero_when_source_and_target_agree(model, conditioning, latents):
    c = conditioning.replace(source_latents=latents, source_cond=conditioning.cond[:1])
    prior = setup(DDS(guidance_scale=7.5, weighting="uniform"), model, c)
    g = prior(latents, c, t=T, noise=noise_like(latents)).grad
    assert g.abs().max() < 1e-5
    moved = prior(latents + 0.5, c, t=T, noise=noise_like(latents)).grad
    assert moved.abs().max() > 1e-3


def test_dds_needs_a_source(model, conditioning, latents):
    prior = setup(DDS(), model, conditioning)
    with pytest.raises(ValueError, match="task=image_editing"):
        prior(latents, conditioning, t=T)


def test_sdi_noisy_latent_is_the_ddim_inversion(model, conditioning, latents):
    """With tau = 0 and no entropy noise, z_t is exactly the DDIM-inverted render and kappa its noise."""
    prior = setup(SDI(tau_max=0.0, entropy="none", timesteps=LinearDecayTimesteps(1.0, 0.2)), model, conditioning)
    t = torch.tensor([500, 500])
    z_t, kappa = prior.noisy(latents, t, noise_like(latents), conditioning, 7.5, None)
    z_inv = model.ddim_invert(latents, 500, 5, conditioning.cond, conditioning.uncond, -7.5)
    assert_network_close(z_t, z_inv)
    g = prior(latents, conditioning, t=t).grad
    eps_hat = guided(*model.eps_pair(z_t, t, conditioning.cond, conditioning.uncond), 7.5)
    torch.testing.assert_close(g, model.sigma(t) * (eps_hat - kappa), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("timestep", [999, 200])
def test_sdi_entropy_is_a_fixed_share_of_kappa_at_every_t(model, conditioning, latents, timestep):
    """The thesis' N(0, (0.3 sigma(t))^2) lives on x_bar = z0 + sigma(t) kappa: kappa gains 0.3 eps, whatever t."""
    t = torch.tensor([timestep, timestep])
    eps = noise_like(latents)
    kappas = {}
    for entropy in ("none", "paper"):
        prior = setup(SDI(tau_max=0.0, entropy=entropy), model, conditioning)
        z_t, kappas[entropy] = prior.noisy(latents, t, eps, conditioning, 7.5, None)
        assert torch.equal(z_t, model.add_noise(latents, kappas[entropy], t))
    # the same deterministic inversion twice: one float32 add (kappa + 0.3 eps) and the subtraction back stand
    # between them, each rounding by at most half an ulp of its result
    bound = 2 * torch.finfo(torch.float32).eps * (kappas["none"].abs() + 0.3 * eps.abs()).max()
    torch.testing.assert_close(kappas["paper"] - kappas["none"], 0.3 * eps, rtol=0, atol=float(bound))


def test_sdi_time_decays_linearly():
    schedule = LinearDecayTimesteps(t_max=1.0, t_min=0.2)
    schedule.setup(100)
    ts = [int(schedule(step, 1, 1000)[0]) for step in (0, 50, 100)]
    assert ts == [999, 600, 200]


def test_random_timesteps_stay_in_range():
    schedule = RandomTimesteps(0.02, 0.98)
    t = schedule(0, 10000, 1000, torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 980


def test_bad_prior_options_are_named():
    with pytest.raises(ValueError, match="unknown weighting 'nope'; choose one of: sds, sigma, uniform"):
        SDS(weighting="nope")
    with pytest.raises(ValueError, match="unknown entropy"):
        SDI(entropy="eta")


def _unet_rows(model):
    """A list that collects the batch size of every U-Net forward pass."""
    rows = []
    model.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return rows


@pytest.mark.parametrize("prior_class", [LODSEmbedding, LODSLoRA])
def test_merged_update_reuses_the_target_pass(prior_class, model, conditioning, latents):
    """Sec. 3.6: with merged_update the gradient is unchanged, the own loss is Eq. 8/10 at t' = t and
    eps' = eps, and the U-Net sees 2B rows instead of 3B (one forward fewer)."""
    eps = noise_like(latents)
    separate = setup(prior_class(guidance_scale=100.0), model, conditioning)
    if prior_class is LODSLoRA:
        randomize_lora(separate)
    g_separate = separate(latents, conditioning, t=T, noise=eps).grad
    separate.merged_update = True
    terms = predictions(model, latents, eps, conditioning)
    rows = _unet_rows(model)
    out = separate(latents, conditioning, t=T, noise=eps)
    assert_network_close(out.grad, g_separate, *terms)
    assert sum(rows) == 2 * len(latents)
    z_t = model.add_noise(latents, eps, T)
    with torch.no_grad():
        if prior_class is LODSEmbedding:
            expected = torch.nn.functional.mse_loss(model.eps(z_t, T, separate.alpha), eps)
        else:
            expected = torch.nn.functional.mse_loss(separate.eps_psi(z_t, T), eps)
    assert_network_close(out.loss, expected)
    out.loss.backward()
    learned = [p for p in separate.parameters() if p.requires_grad]
    assert learned and all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned)
    rows.clear()
    separate.merged_update = False
    separate(latents, conditioning, t=T, noise=eps)
    assert sum(rows) == 3 * len(latents)

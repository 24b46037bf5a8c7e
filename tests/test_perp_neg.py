"""Perp-Neg: perpendicular negative view prompts (SDI's 3D default)."""

import pytest
import torch

from lods.cameras import orbit_cameras
from lods.diffusion.model import guided
from lods.diffusion.prompts import PromptSet, perp_neg_weights
from lods.priors import SDS
from lods.priors.base import perp_neg_guided


def test_weights_grow_with_the_angle_to_the_camera():
    assert perp_neg_weights(0.0, 10.0, 2.0) == [0.0, 1.0, 2.0]  # front camera: back pushed hardest
    assert perp_neg_weights(180.0, 10.0, 2.0) == [2.0, 1.0, 0.0]
    assert perp_neg_weights(-90.0, 10.0, 2.0) == [1.0, 0.0, 1.0]
    assert perp_neg_weights(0.0, 75.0, 2.0) == [0.0, 0.0, 0.0]  # overhead: no horizontal view


@pytest.mark.parametrize("scale", [7.5, 100.0, float("inf")])
def test_negatives_only_remove_what_is_perpendicular_to_the_prompt(scale):
    g = torch.Generator().manual_seed(0)
    eps_c, eps_u = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    negatives = torch.randn(2, 3, 4, 8, 8, generator=g)
    cfg = guided(eps_c, eps_u, scale)
    assert torch.allclose(perp_neg_guided(eps_c, eps_u, negatives, torch.zeros(2, 3), scale), cfg)
    out = perp_neg_guided(eps_c, eps_u, negatives, torch.ones(2, 3), scale)
    d = (eps_c - eps_u).flatten(1)
    change = (out - cfg).flatten(1)
    assert change.norm() > 1e-3
    assert torch.allclose((change * d).sum(1), torch.zeros(2), atol=1e-3 * change.norm() * d.norm())
    # a negative parallel to the prompt's direction changes nothing
    parallel = (eps_u + 0.3 * (eps_c - eps_u))[:, None].expand(-1, 3, -1, -1, -1)
    assert torch.allclose(perp_neg_guided(eps_c, eps_u, parallel, torch.ones(2, 3), scale), cfg, atol=1e-4)


def test_sds_with_perp_neg_calls_the_unet_for_each_negative(model, latents):
    cameras = orbit_cameras(torch.tensor([0.0, 180.0]), 10.0, 3.0, 45.0, 32, 32)
    plain = PromptSet(model, "a red cube", view_dependent=True)(cameras, 2)
    perp = PromptSet(model, "a red cube", view_dependent=True, perp_neg_weight=1.0)(cameras, 2)
    assert perp.negatives.shape[:2] == (2, 3) and torch.allclose(perp.negative_weights[0], torch.tensor([0, 0.5, 1]))
    prior = SDS(guidance_scale=100)
    prior.setup(model, plain)
    t, noise = torch.tensor([500, 500]), torch.randn_like(latents)
    calls = []
    forward = model.unet.forward
    model.unet.forward = lambda *a, **k: calls.append(a[0].shape[0]) or forward(*a, **k)
    g_plain = prior(latents, plain, t=t, noise=noise).grad
    n_plain = len(calls)
    g_perp = prior(latents, perp, t=t, noise=noise).grad
    assert sum(calls[n_plain:]) == sum(calls[:n_plain]) + 3 * 2  # three negatives, two samples each
    assert not torch.allclose(g_plain, g_perp)


def test_perp_neg_needs_view_dependent_prompts(model):
    with pytest.raises(ValueError, match="view_dependent"):
        PromptSet(model, "a red cube", perp_neg_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        PromptSet(model, "a red cube", view_dependent=True, perp_neg_weight=-1.0)

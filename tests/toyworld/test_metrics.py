"""Ground-truth metrics: perfect on identical images, and hand-computed values on known changes."""

from __future__ import annotations

import math

import pytest
import torch

from lods.toyworld import metrics, render
from lods.toyworld.metrics import (
    PSNR_CAP_DB,
    aggregate,
    caption_metrics,
    delta_e76,
    hsv_saturation,
    image_metrics,
    marker_rates,
    srgb_to_lab,
)
from lods.toyworld.render import EVAL_VIEWS, GroundTruth, render_caption

AZIMUTHS = [az for az, _ in EVAL_VIEWS]
ELEVATIONS = [el for _, el in EVAL_VIEWS]


def flat_gt(foreground: torch.Tensor, colour: tuple[float, float, float]) -> GroundTruth:
    """A synthetic ground truth: ``colour`` on the [B, 1, H, W] foreground mask, background elsewhere."""
    alpha = foreground.float()
    background = torch.tensor(render.BACKGROUND)[:, None, None]
    rgb = alpha * torch.tensor(colour)[:, None, None] + (1 - alpha) * background
    zeros = torch.zeros_like(alpha)
    return GroundTruth(rgb, alpha, zeros, torch.zeros_like(rgb), alpha, zeros)


def square(size: int = 32, side: int = 10, top: int = 11, left: int = 11) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[..., top : top + side, left : left + side] = True
    return mask


@pytest.mark.parametrize(
    "caption", ["a checkered red cube with a yellow front", "a blue torus on a striped white floor"]
)
@pytest.mark.parametrize("with_alpha", [False, True])
def test_identical_images_score_perfectly(caption, with_alpha):
    gt = render_caption(caption, AZIMUTHS, ELEVATIONS)
    result = caption_metrics(caption, gt.rgb.clone(), EVAL_VIEWS, gt.alpha.clone() if with_alpha else None)
    assert result["psnr"] == PSNR_CAP_DB
    assert result["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert result["iou"] == 1.0
    assert result["delta_e"] == 0.0 and result["saturation_bias"] == 0.0 and result["floater_mass"] == 0.0
    for key in ("marker_missing", "marker_misplaced"):
        if "front" in caption:
            assert result[key] == 0.0
        else:
            assert math.isnan(result[key])


def test_psnr_of_a_known_mse():
    gt = flat_gt(square(), (0.5, 0.5, 0.5))
    pred = (gt.rgb - 0.1).clamp(0, 1)  # every pixel of every channel off by 0.1 -> MSE 0.01 -> 20 dB
    assert image_metrics(pred, gt)["psnr"] == pytest.approx(20.0, abs=1e-4)


def test_one_pixel_shift_iou():
    side = 10
    gt = flat_gt(square(side=side), (0.8, 0.1, 0.1))
    shifted = torch.roll(gt.rgb, shifts=1, dims=-1)
    # Overlap side x (side - 1), union side x (side + 1).
    expected = (side - 1) / (side + 1)
    assert image_metrics(shifted, gt)["iou"] == pytest.approx(expected)
    assert image_metrics(shifted, gt, pred_alpha=torch.roll(gt.alpha, 1, -1))["iou"] == pytest.approx(expected)


def test_lab_of_reference_colours():
    # Reference values (D65): sRGB white, red, mid grey.
    assert torch.allclose(
        srgb_to_lab(torch.tensor([1.0, 1.0, 1.0]), dim=-1), torch.tensor([100.0, 0.0, 0.0]), atol=0.01
    )
    assert torch.allclose(
        srgb_to_lab(torch.tensor([1.0, 0.0, 0.0]), dim=-1), torch.tensor([53.24, 80.09, 67.20]), atol=0.05
    )
    grey = srgb_to_lab(torch.tensor([0.5, 0.5, 0.5]), dim=-1)
    assert torch.allclose(grey, torch.tensor([53.39, 0.0, 0.0]), atol=0.01)


def test_delta_e_of_a_known_lab_change():
    gt = flat_gt(square(), (1.0, 1.0, 1.0))
    pred = flat_gt(square(), (0.5, 0.5, 0.5)).rgb
    # Greys have a* = b* = 0, so delta-E is the L* difference: L*(0.5) by hand from the sRGB curve.
    luminance = ((0.5 + 0.055) / 1.055) ** 2.4
    lightness = 116 * luminance ** (1 / 3) - 16
    assert image_metrics(pred, gt)["delta_e"] == pytest.approx(100 - lightness, abs=1e-3)
    assert delta_e76(torch.tensor([1.0, 0, 0]), torch.tensor([1.0, 0, 0]), dim=-1) == 0


def test_saturation_bias_sign_and_value():
    gt = flat_gt(square(), (0.8, 0.4, 0.4))  # saturation (0.8 - 0.4) / 0.8 = 0.5
    more = flat_gt(square(), (0.8, 0.2, 0.2)).rgb  # 0.75
    less = flat_gt(square(), (0.8, 0.6, 0.6)).rgb  # 0.25
    assert image_metrics(more, gt)["saturation_bias"] == pytest.approx(0.25, abs=1e-6)
    assert image_metrics(less, gt)["saturation_bias"] == pytest.approx(-0.25, abs=1e-6)
    assert hsv_saturation(torch.zeros(3, 2, 2)).eq(0).all()


def test_floater_mass_of_a_blob():
    gt = flat_gt(square(size=32, side=10, top=2, left=2), (0.2, 0.6, 0.2))
    pred_alpha = gt.alpha.clone()
    pred_alpha[..., 25:29, 25:29] = 1.0  # a 4x4 floater far from the silhouette
    pred_rgb = gt.rgb.clone()
    pred_rgb[..., 25:29, 25:29] = 0.3
    side = 10 + 2 * metrics.FLOATER_DILATION  # the dilated silhouette
    outside = 32 * 32 - side * side
    assert image_metrics(pred_rgb, gt, pred_alpha)["floater_mass"] == pytest.approx(16 / outside)
    assert image_metrics(pred_rgb, gt)["floater_mass"] == pytest.approx(16 / outside)  # from colour alone
    # A one-pixel halo hugging the silhouette is within the dilation: no floaters.
    halo = torch.roll(gt.alpha, 1, -1).maximum(gt.alpha)
    assert image_metrics(gt.rgb, gt, halo)["floater_mass"] == 0.0


def test_marker_rates_tell_a_missing_marker_from_a_janus_face():
    caption = "a red cube with a blue front"
    gt = render_caption(caption, AZIMUTHS, ELEVATIONS)
    scene = render.grammar.parse_caption(caption)
    # The +x face shows from azimuths 0, 45, 315; it faces away from the other 5.
    visible = (gt.marker.sum((1, 2, 3)) > 0).tolist()
    assert visible == [True, True, False, False, False, False, False, True]
    janus_result = gt.rgb[:1].expand_as(gt.rgb)  # the front view everywhere: a marker seen from the back
    assert marker_rates(janus_result, gt, scene) == {"marker_missing": 0.0, "marker_misplaced": 1.0}
    without_marker = render_caption("a red cube", AZIMUTHS, ELEVATIONS).rgb  # missing where it should show
    assert marker_rates(without_marker, gt, scene) == {"marker_missing": 1.0, "marker_misplaced": 0.0}
    assert marker_rates(gt.rgb, gt, scene) == {"marker_missing": 0.0, "marker_misplaced": 0.0}
    half = gt.rgb.clone()
    half[1] = without_marker[1]  # one of the 3 views that show the marker loses it
    assert marker_rates(half, gt, scene)["marker_missing"] == pytest.approx(1 / 3)
    rates = marker_rates(gt.rgb, gt, render.grammar.parse_caption("a red cube"))
    assert all(math.isnan(v) for v in rates.values())


def test_aggregate_per_category():
    rows = [
        {"psnr": 20.0, "marker_misplaced": 0.5, "category": "single"},
        {"psnr": 30.0, "marker_misplaced": math.nan, "category": "single"},
        {"psnr": 10.0, "marker_misplaced": math.nan, "category": "multiple"},
    ]
    table = aggregate(rows)
    assert table["single"] == {"psnr": 25.0, "marker_misplaced": 0.5, "count": 2.0}
    assert table["multiple"]["psnr"] == 10.0 and math.isnan(table["multiple"]["marker_misplaced"])
    assert table["all"]["psnr"] == pytest.approx(20.0) and table["all"]["count"] == 3.0
    assert list(table) == ["single", "multiple", "all"]
    assert aggregate(rows, ["x", "x", "y"])["x"]["psnr"] == 25.0
    with pytest.raises(ValueError, match="2 categories for 3 prompts"):
        aggregate(rows, ["x", "y"])


def test_shape_mismatch_is_an_error():
    gt = render_caption("a red cube", 0.0, 15.0)
    with pytest.raises(ValueError, match="shape"):
        image_metrics(gt.rgb[..., :32], gt)
    with pytest.raises(ValueError, match="2 result images for 8 views"):
        caption_metrics("a red cube", gt.rgb.expand(2, -1, -1, -1))

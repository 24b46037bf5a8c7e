"""Ground-truth matching of 2D results: the caption's view range, the best-matching view."""

import torch

from lods.cameras import view_direction
from lods.eval.ground_truth import ground_truth_report
from lods.toyworld.evaluate import candidate_views, ground_truth_metrics
from lods.toyworld.render import render_caption


def test_candidate_views_respect_the_suffix():
    for view in ("front", "side", "back", "overhead"):
        views = candidate_views(view)
        assert views and all(view_direction(a, e) == view for a, e in views)
    assert len(candidate_views(None)) == sum(len(candidate_views(v)) for v in ("front", "side", "back", "overhead"))


def test_a_ground_truth_render_scores_perfectly_at_its_own_view():
    image = render_caption("a checkered red cube with a yellow front", 15.0, 20.0).rgb
    metrics, reference = ground_truth_metrics(image, "a checkered red cube with a yellow front, front view")
    assert metrics["psnr"] == 100.0 and metrics["iou"] == 1.0 and metrics["delta_e"] == 0.0
    assert (metrics["azimuth"], metrics["elevation"]) == (15.0, 20.0)
    torch.testing.assert_close(reference, image)


def test_a_wrong_colour_scores_worse():
    image = render_caption("a blue sphere", 0.0, 10.0).rgb
    right, _ = ground_truth_metrics(image, "a blue sphere")
    wrong, _ = ground_truth_metrics(image, "a red sphere")
    assert wrong["delta_e"] > 20 > right["delta_e"] and wrong["psnr"] < right["psnr"]


def test_report_only_for_the_toyworld_model(model):
    image = render_caption("a green cone", 0.0, 10.0).rgb
    assert ground_truth_report(model, "a green cone", image) is None  # the tiny model is not toyworld
    model.name = "toyworld"
    metrics, _ = ground_truth_report(model, "a green cone", image)
    assert metrics["gt/psnr"] == 100.0 and metrics["gt/category"] == "single"
    assert ground_truth_report(model, "an astronaut riding a horse", image) is None

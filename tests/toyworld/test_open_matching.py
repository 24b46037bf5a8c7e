"""Set-valued ground truth: a result of an open caption is scored against the member (and view) it matches
best, and several results against one open caption are scored for diversity."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from lods.eval.ground_truth import ground_truth_report
from lods.toyworld import grammar, render
from lods.toyworld.evaluate import (
    SCREEN_TOLERANCE,
    best_scene_3d,
    candidate_views,
    ground_truth_metrics,
    screened_renders,
)
from lods.toyworld.metrics import VALIDITY_IOU, caption_metrics, diversity, entropy_bits
from lods.toyworld.render import EVAL_VIEWS, default_cameras, render_scene

SIZE = 32  # small renders keep these tests fast; the matching does not depend on the size


def member(caption: str, seed: int) -> grammar.Scene:
    return random.Random(seed).choice(grammar.consistent_scenes(caption))


@pytest.mark.parametrize(
    ("caption", "size"),
    [
        ("a cube on a striped floor", SIZE),  # patterns, front markers, a backdrop occluding and occluded
        ("a torus in front of a wall", 30),  # a size the culling tiles do not divide
        ("an object in front of a cone", SIZE),  # objects occluding each other
        ("an object on top of an object on top of a torus", SIZE),
    ],
)
def test_screening_reproduces_the_renderer(caption, size):
    """The linear screening renders as render.render_scene does, to float32 rounding (SCREEN_TOLERANCE)."""
    rng = random.Random(0)
    scenes = rng.sample(grammar.consistent_scenes(caption), 3)
    views = rng.sample(candidate_views(None), 5)
    cameras = default_cameras([a for a, _ in views], [e for _, e in views], size)
    screened = screened_renders(scenes, cameras)
    for scene, image in zip(scenes, screened):
        exact = render_scene(scene, cameras).rgb
        assert (image - exact).abs().max().item() <= SCREEN_TOLERANCE


@pytest.mark.parametrize(
    ("caption", "view"),
    [
        ("a cube, front view", (15.0, 20.0)),
        ("a red object on a floor, front view", (-30.0, 30.0)),
        ("a cone on top of an object, side view", (90.0, 10.0)),
    ],
)
def test_a_member_scores_perfectly_and_is_named(caption, view):
    scene = member(caption.rsplit(",", 1)[0], seed=len(caption))
    image = render_scene(scene, default_cameras(*view, SIZE)).rgb
    metrics, reference = ground_truth_metrics(image, caption)
    assert metrics["psnr"] == 100.0 and metrics["iou"] == 1.0 and metrics["delta_e"] == 0.0
    assert metrics["matched"] == [grammar.scene_caption(scene)]
    assert (metrics["azimuth"], metrics["elevation"]) == view
    torch.testing.assert_close(reference, image, rtol=0, atol=0)
    assert metrics["set_size"] == grammar.count_consistent(caption)
    assert metrics["distinct_scenes"] == 1.0 and metrics[f"validity@{VALIDITY_IOU:g}"] == 1.0


def test_a_non_member_is_not_matched_perfectly():
    sphere = render_scene(grammar.parse_caption("a red sphere"), default_cameras(15.0, 20.0, SIZE)).rgb
    metrics, _ = ground_truth_metrics(sphere, "a cube, front view")
    (matched,) = metrics["matched"]
    assert grammar.is_consistent(grammar.parse_caption(matched), "a cube")
    assert metrics["iou"] < 1.0 and metrics["psnr"] < 40.0
    # A red cube without a marker is no "cube with a red front" (its colour must differ from red).
    red = render_scene(grammar.parse_caption("a red cube"), default_cameras(15.0, 20.0, SIZE)).rgb
    metrics, _ = ground_truth_metrics(red, "a cube with a red front, front view")
    assert metrics["matched"] != ["a red cube"] and metrics["psnr"] < 40.0 and metrics["delta_e"] > 5.0


def test_renders_that_tie_go_to_the_first_member():
    """From behind, a cube's front marker is hidden: the plain red cube and the six red cubes with a front
    render identically, and the first in enumeration order (no front) is named."""
    image = render_scene(grammar.parse_caption("a red cube with a blue front"), default_cameras(180.0, 20.0, SIZE)).rgb
    metrics, _ = ground_truth_metrics(image, "a cube, back view")
    assert metrics["matched"] == ["a red cube"] and metrics["psnr"] == 100.0


def test_a_3d_result_commits_to_one_member():
    caption = "a cube with a blue front"
    scene = member(caption, seed=3)
    views = list(EVAL_VIEWS)
    images = render_scene(scene, render.eval_cameras(SIZE, views)).rgb
    assert best_scene_3d(images, caption, views) == scene
    metrics = caption_metrics(caption, images, views)
    assert metrics["matched"] == grammar.scene_caption(scene)
    assert (
        metrics["psnr"] == 100.0
        and metrics["iou"] == 1.0
        and metrics["marker_missing"] == 0.0
        and metrics["marker_misplaced"] == 0.0
    )
    # Half the views from another member: still one member for all views, the better of the two.
    other = grammar.parse_caption("a checkered white cube with a blue front")
    mixed = torch.cat([images[:5], render_scene(other, render.eval_cameras(SIZE, views)).rgb[5:]])
    assert best_scene_3d(mixed, caption, views) == scene
    assert caption_metrics(caption, mixed, views)["psnr"] < 100.0


def test_diversity_of_hand_built_results():
    caption = "a cube"
    results = [grammar.parse_caption(c) for c in ("a red cube", "a red cube", "a blue cube", "a striped green cube")]
    out = diversity(results, caption, ious=[0.9, VALIDITY_IOU - 0.01, VALIDITY_IOU, 1.0])
    three_quarters = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    expected = {
        "distinct_scenes": 3.0,
        "attribute_entropy": 1.5,  # scenes 2:1:1 of 4
        "attribute_entropy_max": math.log2(147),
        "entropy/colour": 1.5,
        "entropy_max/colour": math.log2(7),
        "entropy/surface": three_quarters,
        "entropy_max/surface": math.log2(3),
        "entropy/front": 0.0,
        "entropy_max/front": math.log2(8),  # none or any of the 7 colours
        "validity@0.5": 0.75,
    }
    assert out.keys() == expected.keys()
    for key, value in expected.items():  # float64 sums of a few terms: within a few units in the last place
        assert out[key] == pytest.approx(value, rel=8 * 2.0**-52, abs=8 * 2.0**-52), key

    pairs = [
        "a red cube to the left of a red sphere",
        "a red cube to the left of a blue sphere",
        "a blue cube to the left of a red sphere",
        "a blue cube to the left of a red sphere",
    ]
    out = diversity([grammar.parse_caption(c) for c in pairs], "a cube to the left of an object")
    assert out["distinct_scenes"] == 3.0 and f"validity@{VALIDITY_IOU:g}" not in out
    assert out["entropy/1.colour"] == 1.0 and out["entropy/2.shape"] == 0.0
    assert out["entropy/2.colour"] == pytest.approx(three_quarters, rel=8 * 2.0**-52)
    assert out["entropy_max/2.shape"] == pytest.approx(math.log2(5), rel=8 * 2.0**-52)
    assert out["attribute_entropy_max"] == pytest.approx(math.log2(7 * 35), rel=8 * 2.0**-52)

    full = diversity([grammar.parse_caption("a red cube")] * 3, "a red cube")
    assert full == {"distinct_scenes": 1.0, "attribute_entropy": 0.0, "attribute_entropy_max": 0.0}
    assert entropy_bits(["a", "b", "c", "d"]) == 2.0
    with pytest.raises(ValueError, match="not a member"):
        diversity([grammar.parse_caption("a red sphere")], caption)


def test_report_names_every_particle_and_their_diversity():
    model = SimpleNamespace(name="toyworld")  # ground_truth_report only asks whether the model is toyworld's
    caption = "a red object, front view"
    scenes = [grammar.parse_caption(f"a red {shape}") for shape in ("cube", "cube", "sphere", "cone")]
    images = torch.cat([render_scene(s, default_cameras(15.0, 20.0, SIZE)).rgb for s in scenes])
    metrics, references = ground_truth_report(model, caption, images)
    assert references.shape == images.shape
    assert metrics["gt/matched"] == [grammar.scene_caption(s) for s in scenes]
    assert metrics["gt/psnr"] == 100.0 and metrics["gt/iou"] == 1.0 and metrics["gt/category"] == "single"
    assert metrics["gt/set_size"] == 5 and metrics["gt/distinct_scenes"] == 3.0
    assert metrics["gt/entropy/shape"] == 1.5 and metrics["gt/validity@0.5"] == 1.0
    assert json.loads(json.dumps(metrics)) == metrics  # metrics.json takes it as it is
    logged = {k for k, v in metrics.items() if isinstance(v, float)}  # what train.py hands the loggers
    assert {"gt/psnr", "gt/distinct_scenes", "gt/attribute_entropy", "gt/validity@0.5"} <= logged
    # A fully specified caption: as before, plus the matched caption.
    metrics, _ = ground_truth_report(model, "a red cube, front view", images[:1])
    assert metrics["gt/matched"] == ["a red cube"] and "gt/distinct_scenes" not in metrics


def test_bench_skips_the_non_numeric_keys(tmp_path):
    from lods.bench import collect, summarize

    metrics = {
        "prompt": "a red object",
        "prior": "SDS",
        "gt/category": "single",
        "gt/psnr": 20.0,
        "gt/matched": ["a red cube", "a red sphere"],
        "gt/distinct_scenes": 2.0,
        "gt/validity@0.5": 1.0,
    }
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(metrics))
    (row,) = collect(tmp_path)
    assert "gt/matched" not in row["metrics"] and row["metrics"]["gt/distinct_scenes"] == 2.0
    table = summarize([row])
    assert table["image"]["SDS"]["single"]["gt/validity@0.5"] == 1.0

"""The view-word check: a ground-truth render seen from the named side has no gap; seen from another, it has."""

import pytest

from lods.toyworld.render import render_caption
from lods.toyworld.view_check import GAP_DB, backdrop, score_view, view_check_captions, view_table

CAPTION = "a green sphere in front of a checkered blue wall"  # the wall hides the sphere from the back


def render(azimuth: float, elevation: float = 10.0):  # on the grid of candidate views: an exact match exists
    return render_caption(CAPTION, azimuth, elevation).rgb[0]


def test_the_named_view_scores_no_gap():
    for view, azimuth in (("front", 0.0), ("back", 180.0), ("side", 90.0)):
        scores = score_view(render(azimuth), CAPTION, view)
        assert scores["view_gap"] < GAP_DB and scores["view_correct"] == 1.0, (view, scores)
        assert scores["iou"] == 1.0 and scores["psnr"] > 40


def test_another_side_scores_a_gap():
    front_for_back = score_view(render(0.0), CAPTION, "back")  # the failure the check exists for
    assert front_for_back["view_gap"] > 5.0 and front_for_back["view_correct"] == 0.0


def test_table_means_per_category_and_view():
    rows = [
        {"category": "single", "view": "front", "psnr": 20.0, "iou": 0.8, "view_gap": 0.0, "view_correct": 1.0},
        {"category": "single", "view": "front", "psnr": 10.0, "iou": 0.4, "view_gap": 4.0, "view_correct": 0.0},
        {"category": "multiple", "view": "back", "psnr": 16.0, "iou": 0.6, "view_gap": 1.0, "view_correct": 0.0},
    ]
    table = view_table(rows)
    expected = {"psnr": 15.0, "iou": 0.6, "view_gap": 2.0, "view_accuracy": 0.5, "count": 2.0}
    assert table["single"]["front"] == pytest.approx(expected)
    assert set(table["all"]) == {"front", "back"} and table["all"]["back"]["count"] == 1.0
    assert "surroundings" not in table


def test_surroundings_are_also_told_apart_by_backdrop():
    row = {"view": "side", "psnr": 12.0, "iou": 0.5, "view_gap": 2.0, "view_correct": 0.0}
    rows = [
        {**row, "category": "surroundings", "backdrop": backdrop(CAPTION)},
        {**row, "category": "surroundings", "backdrop": backdrop("a red cube on a striped green floor"), "psnr": 16.0},
        {**row, "category": "single", "backdrop": backdrop("a red cube")},
    ]
    assert [r["backdrop"] for r in rows] == ["wall", "floor", None]
    table = view_table(rows)
    assert list(table) == ["single", "surroundings", "surroundings: floor", "surroundings: wall", "all"]
    assert table["surroundings: wall"]["side"]["psnr"] == 12.0 and table["surroundings: floor"]["side"]["psnr"] == 16.0
    assert table["surroundings"]["side"]["count"] == 2.0 and table["all"]["side"]["count"] == 3.0
    assert [c for c, _ in view_check_captions(2, categories=["surroundings"])] == ["surroundings"] * 2
    assert view_check_captions(2, categories=["surroundings"]) == view_check_captions(2)[2:4]
    with pytest.raises(ValueError, match=r"unknown categories \['walls'\]; choose from: single, surroundings"):
        view_check_captions(2, categories=["walls"])


def test_an_unknown_view_word_is_named():
    with pytest.raises(
        ValueError, match="no candidate view is a 'top' view; choose one of: front, side, back, overhead"
    ):
        score_view(render(0.0), CAPTION, "top")

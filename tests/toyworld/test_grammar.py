"""The toyworld grammar: a bijection between captions and scenes, with errors that say what to write."""

from __future__ import annotations

import pytest

from lods.toyworld import grammar
from lods.toyworld.grammar import (
    CATEGORIES,
    count_scenes,
    iter_scenes,
    parse_caption,
    sample_captions,
    scene_at,
    scene_caption,
    split_view_suffix,
    strip_view_suffix,
    tokenize,
    vocabulary,
    with_view_suffix,
    words,
)


@pytest.mark.parametrize("category", CATEGORIES)
def test_round_trip_every_scene(category):
    seen = set()
    for scene in iter_scenes(category):
        caption = scene_caption(scene)
        parsed = parse_caption(caption)
        assert parsed == scene, caption
        assert scene_caption(parsed) == caption
        assert parsed.category == category
        seen.add(caption)
    assert len(seen) == count_scenes(category)  # distinct scenes have distinct captions


def test_counts():
    # single: shape x colour x surface x (no marker or one of the 6 other colours)
    assert count_scenes("single") == 5 * 7 * 3 * 7
    assert count_scenes("surroundings") == count_scenes("single") * 2 * 7 * 3
    assert count_scenes("multiple") == 35**2 * 5 + 35**3 * 2
    assert count_scenes() == sum(count_scenes(c) for c in CATEGORIES)
    assert sum(1 for _ in iter_scenes("single")) == count_scenes("single")


@pytest.mark.parametrize("category", CATEGORIES)
def test_scene_at_follows_iteration_order(category):
    total = count_scenes(category)
    picks = {0, 1, total // 3, total // 2 + 7, total - 1}
    for index, scene in enumerate(iter_scenes(category)):
        if index in picks:
            assert scene_at(category, index) == scene
    with pytest.raises(IndexError):
        scene_at(category, total)


def test_sample_captions_deterministic_and_valid():
    first = sample_captions(60, seed=3)
    assert first == sample_captions(60, seed=3)
    assert first != sample_captions(60, seed=4)
    categories = {parse_caption(c).category for c in first}
    assert categories == set(CATEGORIES)
    for category in CATEGORIES:
        assert {parse_caption(c).category for c in sample_captions(10, 0, category)} == {category}


def test_caption_format_and_tokens():
    vocabulary_words = set(words())
    assert {"front", "side", "back", "overhead", "view", ","} <= vocabulary_words
    for caption in sample_captions(300, seed=0):
        assert caption == caption.lower().strip()
        assert "  " not in caption and not caption.endswith(".")
        for view in ("front", "side", "back", "overhead"):
            assert set(tokenize(with_view_suffix(caption, view))) <= vocabulary_words
    assert set(vocabulary()["colours"]) == set(grammar.COLOURS)
    for rgb in grammar.COLOURS.values():
        assert all(0 <= v <= 1 for v in rgb)


def test_view_suffix():
    caption = "a red cube, a blue sphere and an orange cone in a row"
    suffixed = with_view_suffix(caption, "back")
    assert suffixed == caption + ", back view"
    assert split_view_suffix(suffixed) == (caption, "back")
    assert strip_view_suffix(caption) == caption  # the row comma is not a suffix
    assert parse_caption(suffixed) == parse_caption(caption)
    with pytest.raises(ValueError, match="'left'.*front, side, back, overhead"):
        with_view_suffix(caption, "left")


def test_parse_normalises_case_and_spacing():
    assert parse_caption("  A Red   CUBE ") == parse_caption("a red cube")


def test_layout_follows_the_front_view():
    """Left/right are the front viewer's (world -y / +y), front/behind +x / -x, on top +z."""
    left, right = parse_caption("a red cube to the left of a blue sphere").objects
    assert left.position[1] < right.position[1] and left.position[0] == right.position[0]
    a, b = parse_caption("a red cube to the right of a blue sphere").objects
    assert a.position[1] > b.position[1]
    front, back = parse_caption("a red cube in front of a blue sphere").objects
    assert front.position[0] > back.position[0]
    back, front = parse_caption("a red cube behind a blue sphere").objects
    assert back.position[0] < front.position[0]
    top, bottom = parse_caption("a red cube on top of a blue sphere").objects
    assert top.position[2] - top.half_extents[2] == pytest.approx(bottom.position[2] + bottom.half_extents[2])
    row = parse_caption("a red cube, a blue sphere and a green cone in a row").objects
    assert [o.position[1] for o in row] == sorted(o.position[1] for o in row)
    stack = parse_caption("a red cube on top of a blue sphere on top of a green cone").objects
    assert stack[0].position[2] > stack[1].position[2] > stack[2].position[2]
    (on_floor,) = parse_caption("a red torus on a blue floor").objects
    assert on_floor.position[2] - on_floor.half_extents[2] == pytest.approx(grammar.FLOOR_Z)
    (before_wall,) = parse_caption("a red cube in front of a blue wall").objects
    assert before_wall.position[0] - before_wall.half_extents[0] > grammar.WALL_X


def test_every_object_fits_between_backdrops():
    for shape in grammar.SHAPES:
        hx, hy, hz = (h * grammar.SURROUNDINGS_SCALE for h in grammar.HALF_EXTENTS[shape])
        assert -hx > grammar.WALL_X and hy < grammar.WALL_HALF_WIDTH
        assert grammar.WALL_Z_RANGE[0] <= -hz and hz <= grammar.WALL_Z_RANGE[1]
        assert hx < grammar.FLOOR_RADIUS


@pytest.mark.parametrize(
    ("caption", "bad", "allowed"),
    [
        ("a pink cube", "'pink'", "'red', 'green', 'blue'"),
        ("a red pyramid", "'pyramid'", "'sphere', 'cube', 'cylinder', 'cone', 'torus'"),
        ("a orange cube", "'a'", "'an'"),
        ("an red cube", "'an'", "'a'"),
        ("the red cube", "'the'", "'a', 'an'"),
        ("a red cube next to a blue cone", "'next'", "'to the left of'"),
        ("a red cube with a red front", "'red'", "green, blue, yellow, orange, purple, white"),
        ("a striped red cube to the left of a blue cone", "'striped'", "'<colour> <shape>'"),
        ("a red cube on a blue cone", "'on a cone'", "'on top of a ...'"),
        ("a red cube in front of a blue floor", "'floor'", "'in front of a ... wall'"),
        ("a red cube, a blue cone", "connectors", "'<a>, <b> and <c> in a row'"),
        ("a red cube, a blue cone and a green torus in a row please", "'please'", "'<end>'"),
        ("a red", "the end of the caption", "'sphere'"),
    ],
)
def test_bad_captions_name_the_word_and_the_choices(caption, bad, allowed):
    with pytest.raises(ValueError) as error:
        parse_caption(caption)
    message = str(error.value)
    assert bad in message and allowed in message, message


def test_empty_caption():
    with pytest.raises(ValueError, match="empty"):
        parse_caption("")


def test_unknown_category():
    with pytest.raises(ValueError, match="'scenery'.*single, surroundings, multiple"):
        count_scenes("scenery")

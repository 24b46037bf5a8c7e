"""The prior's training captions: open variants of each view's caption, with the view suffix kept."""

from lods.toyworld import grammar
from lods.toyworld.prior import open_variants


def test_open_variants_name_sets_that_hold_the_rendered_scene():
    captions = [grammar.with_view_suffix(c, "back") for c in grammar.sample_captions(30, seed=5)]
    captions += grammar.sample_captions(6, seed=6)  # without a view suffix
    variants = open_variants(captions, seed=1, drop_prob=0.5)
    assert variants == open_variants(captions, seed=1, drop_prob=0.5)  # deterministic
    assert open_variants(captions, seed=1, drop_prob=0.0) == captions  # nothing dropped: the caption itself
    assert sum(grammar.is_open(grammar.strip_view_suffix(v)) for v in variants) > len(captions) // 2
    for caption, variant in zip(captions, variants):
        base, view = grammar.split_view_suffix(caption)
        open_base, open_view = grammar.split_view_suffix(variant)
        assert open_view == view
        assert grammar.is_consistent(grammar.parse_caption(base), grammar.parse_open_caption(open_base))


def test_camera_in_view_stays_in_its_view_range():
    import random

    from lods.cameras import VIEWS, view_direction
    from lods.toyworld.data import ELEVATION_RANGE, camera_in_view

    rng = random.Random(0)
    for view in VIEWS:
        cameras = [camera_in_view(view, rng) for _ in range(500)]
        assert {view_direction(a, e) for a, e in cameras} == {view}
        assert all(-180.0 <= a < 180.0 and ELEVATION_RANGE[0] <= e <= ELEVATION_RANGE[1] for a, e in cameras)
    sides = [camera_in_view("side", rng)[0] for _ in range(200)]
    assert min(sides) < 0 < max(sides)  # both sides


def test_balanced_cameras_go_round_the_view_words():
    import random
    from collections import Counter

    from lods.cameras import VIEWS, view_direction
    from lods.toyworld.data import scene_cameras

    rng = random.Random(1)
    for _ in range(50):  # 4 views per scene: each word once
        words = [view_direction(a, e) for a, e in scene_cameras(4, rng, balanced=True)]
        assert sorted(words) == sorted(VIEWS)
    counts = Counter(view_direction(a, e) for _ in range(100) for a, e in scene_cameras(3, rng, balanced=True))
    assert max(counts.values()) - min(counts.values()) <= 0.3 * 75  # 300 views, ~75 per word
    uniform = Counter(view_direction(a, e) for _ in range(500) for a, e in scene_cameras(4, rng, balanced=False))
    assert uniform["side"] > 1.5 * uniform["front"]  # the uniform draw keeps the 3D tasks' shares

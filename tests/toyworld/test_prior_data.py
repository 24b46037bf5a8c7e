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

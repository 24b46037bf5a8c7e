"""Open captions: sets of scenes, exact against brute force over whole categories, with canonical forms."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lods.toyworld import grammar
from lods.toyworld.grammar import (
    ANY,
    CATEGORIES,
    COLOURS,
    SHAPES,
    OpenBackdrop,
    OpenObject,
    OpenScene,
    consistent_indices,
    consistent_scenes,
    count_consistent,
    is_consistent,
    iter_scenes,
    open_caption,
    open_forms,
    open_spec,
    parse_caption,
    parse_open_caption,
    scene_at,
    scene_caption,
)

_NONE = "none"  # how the brute force writes "no front marker"


@pytest.fixture(scope="module")
def features():
    """Per category, a table of every scene's attributes (strings; "-" where a scene has no such attribute), in
    iteration order: single/surroundings: shape, colour, surface, front, floor colour, floor surface, wall
    colour, wall surface; multiple: arrangement, then shape and colour of up to three objects."""
    tables = {}
    for category in CATEGORIES:
        rows = []
        for scene in iter_scenes(category):
            if category == "multiple":
                row = [scene.arrangement]
                for i in range(3):
                    obj = scene.objects[i] if i < len(scene.objects) else None
                    row += [obj.shape, obj.colour] if obj else ["-", "-"]
            else:
                (obj,) = scene.objects
                row = [obj.shape, obj.colour, obj.surface, obj.marker_colour or _NONE]
                for backdrop in (scene.floor, scene.wall):
                    row += [backdrop.colour, backdrop.surface] if backdrop else ["-", "-"]
            rows.append(row)
        tables[category] = np.array(rows)
    return tables


def brute_force(table: np.ndarray, spec: OpenScene) -> list[int]:
    """Indices of the scenes whose every attribute equals the spec's, or the spec leaves it open (ANY)."""
    said: list[str | None] = []  # None: any value
    if spec.category == "multiple":
        said.append(spec.arrangement)
        for i in range(3):
            obj = spec.objects[i] if i < len(spec.objects) else None
            said += [obj.shape, obj.colour] if obj else ["-", "-"]
    else:
        (obj,) = spec.objects
        said += [obj.shape, obj.colour, obj.surface, _NONE if obj.marker is None else obj.marker]
        for backdrop in (spec.floor, spec.wall):
            said += [backdrop.colour, backdrop.surface] if backdrop else ["-", "-"]
    keep = np.ones(len(table), dtype=bool)
    for column, value in enumerate(said):
        if value != ANY:
            keep &= table[:, column] == value
    return np.nonzero(keep)[0].tolist()


def randomise(spec: OpenScene, rng: random.Random) -> OpenScene:
    """Another spec of the same form: every said value redrawn (front colours other than the object's)."""

    def said(value, choices):
        return value if value in (ANY, None, "plain") else rng.choice(choices)

    objects = []
    for obj in spec.objects:
        colour = said(obj.colour, list(COLOURS))
        marker = said(obj.marker, [c for c in COLOURS if c != colour])
        objects.append(OpenObject(said(obj.shape, SHAPES), colour, said(obj.surface, ["striped", "checkered"]), marker))

    def backdrop(b):
        return (
            None
            if b is None
            else OpenBackdrop(said(b.colour, list(COLOURS)), said(b.surface, ["striped", "checkered"]))
        )

    return OpenScene(tuple(objects), backdrop(spec.floor), backdrop(spec.wall), spec.category, spec.arrangement)


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_form_is_exact_against_brute_force(category, features):
    forms = open_forms(category)
    assert len(forms) == {"single": 16, "surroundings": 128, "multiple": 208}[category]
    assert len({f.template for f in forms}) == len(forms)
    rng = random.Random(CATEGORIES.index(category))
    for form in forms:
        for spec in (parse_open_caption(form.example), randomise(parse_open_caption(form.example), rng)):
            caption = open_caption(spec)
            indices = consistent_indices(caption)
            assert indices == brute_force(features[category], spec), caption
            assert len(indices) == count_consistent(caption) == form.size, caption  # the size is the form's
            assert parse_open_caption(caption) == spec
    assert sum(f.size == 1 for f in forms) == {"single": 4, "surroundings": 16, "multiple": 7}[category]


def test_consistent_scenes_are_the_scenes_at_those_indices():
    for caption in (
        "a cube with a red front",
        "a red object in front of a wall",
        "a cone on top of a cube",
        "an object",
    ):
        scenes = consistent_scenes(caption)
        spec = parse_open_caption(caption)
        assert scenes == [scene_at(spec.category, i) for i in consistent_indices(caption)]
        assert all(is_consistent(s, caption) for s in scenes)
        assert len(set(scenes)) == len(scenes) == count_consistent(caption)
    outside = parse_caption("a red cube with a blue front")
    assert is_consistent(outside, "a cube") and not is_consistent(outside, "a cube with a red front")
    assert not is_consistent(outside, "a red cube") and not is_consistent(outside, "a cube on a floor")


@pytest.mark.parametrize("category", CATEGORIES)
def test_a_full_caption_names_exactly_its_scene(category):
    rng = random.Random(7)
    for _ in range(60):
        index = rng.randrange(grammar.count_scenes(category))
        scene = scene_at(category, index)
        caption = scene_caption(scene)
        assert consistent_indices(caption) == [index]
        assert consistent_scenes(caption) == [scene] and count_consistent(caption) == 1
        assert not grammar.is_open(caption) and grammar.open_attributes(caption) == {}
        assert parse_open_caption(caption) == open_spec(scene) and open_caption(open_spec(scene)) == caption
        assert open_spec(scene).scene() == scene == parse_caption(caption)


@pytest.mark.parametrize(
    ("caption", "size", "spec"),
    [
        ("a cube", 7 * 3 * 7, OpenObject("cube", ANY, ANY, ANY)),
        ("a striped cube", 7 * 7, OpenObject("cube", ANY, "striped", ANY)),
        ("a cube with a red front", 3 * 6, OpenObject("cube", ANY, ANY, "red")),
        ("a striped cylinder with a red front", 6, OpenObject("cylinder", ANY, "striped", "red")),
        ("a red object", 5, OpenObject(ANY, "red", "plain", None)),
        ("a checkered red object with a blue front", 5, OpenObject(ANY, "red", "checkered", "blue")),
        ("an object", 735, OpenObject(ANY, ANY, ANY, ANY)),
        ("an orange object", 5, OpenObject(ANY, "orange", "plain", None)),
    ],
)
def test_the_words_of_single_object_captions(caption, size, spec):
    parsed = parse_open_caption(caption)
    assert parsed == OpenScene((spec,), category="single")
    assert count_consistent(caption) == size and open_caption(parsed) == caption
    for scene in consistent_scenes(caption):  # a front colour differs from the object's
        assert scene.objects[0].marker_colour != scene.objects[0].colour


def test_the_words_of_backdrops_and_groups():
    on_floor = parse_open_caption("a red cube on a floor")
    assert on_floor.floor == OpenBackdrop(ANY, ANY) and on_floor.objects[0] == OpenObject("cube", "red", "plain", None)
    assert count_consistent(on_floor) == 7 * 3
    assert parse_open_caption("a red cube on a striped floor").floor == OpenBackdrop(ANY, "striped")
    assert parse_open_caption("a red cube on a red floor").floor == OpenBackdrop("red", "plain")  # as before
    assert count_consistent("a cone in front of a wall") == 147 * 21
    assert count_consistent("an object on a floor") == 735 * 21
    assert parse_open_caption("a red cube to the left of an object").objects[1] == OpenObject(ANY, ANY, "plain", None)
    assert count_consistent("a red cube to the left of an object") == 35
    assert count_consistent("a cone on top of a cube") == 49
    assert count_consistent("a red object, a cube and a sphere in a row") == 5 * 7 * 7
    assert count_consistent("an object, an object and an object in a row") == 35**3
    assert count_consistent("an object on top of an object on top of an object") == 35**3
    values = grammar.open_attributes("a cube with a red front on a floor")
    assert values["colour"] == tuple(c for c in COLOURS if c != "red")
    assert values["surface"] == grammar.SURFACES and set(values["floor.colour"]) == set(COLOURS)
    fronts = grammar.open_attributes("a cube")["front"]  # in order of first appearance
    assert len(fronts) == 8 and set(fronts) == {None, *COLOURS}
    assert set(grammar.open_attributes("a red cube behind an object")) == {"2.shape", "2.colour"}


@pytest.mark.parametrize(
    ("caption", "words"),
    [
        ("a striped cube to the left of an object", ["'striped'", "'<colour> <shape>'"]),
        ("a cube to the left of an object with a red front", ["with a red front"]),
        ("a red object with a red front", ["'red'", "must differ"]),
        ("an object on an object", ["'on an object'", "'on top of a ...'"]),
        ("a floor", ["'floor' is not an object", "torus, object"]),
        ("a object", ["'a'", "'an'"]),
        ("an object on a floor with a red front", ["a floor has no front"]),
        ("a striped", ["the end of the caption", "'red'", "'object'"]),
    ],
)
def test_bad_open_captions_say_why(caption, words):
    with pytest.raises(ValueError) as error:
        parse_open_caption(caption)
    assert all(w in str(error.value) for w in words), str(error.value)


def test_parse_caption_refuses_an_open_caption():
    with pytest.raises(ValueError, match="'a cube' is open.*colour, surface, front.*147 scenes"):
        parse_caption("a cube")
    with pytest.raises(ValueError, match="open"):
        OpenScene((OpenObject("cube"),)).scene()


@pytest.mark.parametrize(
    "spec",
    [
        OpenScene((OpenObject("cube", ANY, "plain", ANY),)),  # "plain" cannot be said without a colour
        OpenScene((OpenObject("cube", ANY, ANY, None),)),  # nor "no front"
        OpenScene((OpenObject("cube", "red", ANY, None),)),  # a said colour means a plain surface
        OpenScene((OpenObject("cube", "red", "plain", ANY),)),  # ... and no front
        OpenScene((OpenObject("cube", "red", "plain", "red"),)),
        OpenScene(
            (OpenObject("cube", "red", "plain", None),), floor=OpenBackdrop(ANY, "plain"), category="surroundings"
        ),
        OpenScene((OpenObject("cube", ANY, "striped", None), OpenObject()), category="multiple", arrangement="behind"),
        OpenScene((OpenObject("pyramid", "red", "plain", None),)),
    ],
)
def test_specs_no_caption_can_say_are_refused(spec):
    with pytest.raises(ValueError, match="not an open scene a caption can say"):
        open_caption(spec)


def test_canonical_form_round_trip():
    captions = grammar.sample_open_captions(400, seed=5)
    assert captions == grammar.sample_open_captions(400, seed=5)
    assert sum(grammar.is_open(c) for c in captions) > 300
    for caption in captions:
        spec = parse_open_caption(caption)
        assert open_caption(spec) == caption
        noisy = "  " + caption.upper().replace(" ", "   ") + ", back view"
        assert parse_open_caption(noisy) == spec and grammar.canonical_caption(noisy) == caption
        assert set(grammar.tokenize(noisy.lower())) <= set(grammar.words())


@pytest.mark.parametrize("drop_prob", [0.0, 0.3, 1.0])
def test_sampled_open_captions_contain_their_scene(drop_prob):
    rng = random.Random(11)
    for category in CATEGORIES:
        for _ in range(40):
            index = rng.randrange(grammar.count_scenes(category))
            scene = scene_at(category, index)
            caption = grammar.sample_open_caption(scene, rng, drop_prob)
            assert is_consistent(scene, caption)
            if count_consistent(caption) <= 5000:
                assert index in consistent_indices(caption)
            if drop_prob == 0.0:
                assert caption == scene_caption(scene)
            if drop_prob == 1.0:  # everything that can be dropped is
                assert count_consistent(caption) == {"single": 735, "surroundings": 735 * 21}.get(
                    category, 35 ** len(scene.objects)
                )


def test_form_counts_add_up():
    for category in CATEGORIES:
        forms = open_forms(category)
        assert sum(f.captions for f in forms if f.size == 1) == grammar.count_scenes(category)
    assert grammar.count_captions("single") == 6 * (7 * 3 * 7 + 3 * 8)  # shapes or "object" x object phrases
    assert grammar.count_captions("surroundings") == grammar.count_captions("single") * 2 * (7 * 3 + 3)
    assert grammar.count_captions("multiple") == 48**2 * 5 + 48**3 * 2  # (5 shapes + "object") x (7 colours + none)
    assert "object" in grammar.words() and grammar.vocabulary()["general nouns"] == ["object"]

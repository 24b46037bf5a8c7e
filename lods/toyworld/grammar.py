"""The toyworld scene grammar: captions <-> scenes, a bijection over a finite, enumerable world.

Every caption the grammar accepts names exactly one :class:`Scene`, and :func:`scene_caption` maps each
scene back to that caption. Everything here is pure Python and deterministic (no tensors; the only randomness
is the explicitly seeded :func:`sample_captions`).

Frame (see ``lods.cameras``): world +z up, the front faces +x, azimuth 0 is the front view. Spatial words
are those of a viewer at the front (azimuth 0):

- "to the left of"  -> smaller y (the viewer's left in the front view is world -y; it is the object's
  own right, since an object facing +x has its left at +y);
- "to the right of" -> larger y;
- "in front of"     -> larger x (closer to the front camera); "behind" -> smaller x;
- "on top of"       -> larger z, resting on the object below.

Caption forms (``[...]`` optional, ``|`` alternatives; "a" becomes "an" before a vowel, e.g. "an orange"):

- single:        ``a [striped|checkered] <colour> <shape> [with a <colour> front]``
                 e.g. "a checkered red cube with a yellow front"
- surroundings:  ``<single> on a [striped|checkered] <colour> floor``
                 ``<single> in front of a [striped|checkered] <colour> wall``
                 e.g. "a green sphere in front of a checkered blue wall"
- multiple:      ``a <colour> <shape> <relation> a <colour> <shape>``, relation one of
                 "to the left of", "to the right of", "in front of", "behind", "on top of";
                 ``a <colour> <shape>, a <colour> <shape> and a <colour> <shape> in a row`` (listed left to right);
                 ``a <colour> <shape> on top of a <colour> <shape> on top of a <colour> <shape>`` (a stack,
                 listed top to bottom). Objects in multi-object captions are plain and carry no front marker.

Layout: a single object is centred at the origin at scale 1 (every shape's bounding box within +-0.5).
Surroundings shrink it to SURROUNDINGS_SCALE and rest it on the floor (FLOOR_*) or centre it in front of the
wall (WALL_*). Multi-object arrangements use PAIR_* / TRIPLE_* scales and spacings; side-by-side objects share
a ground level, stacked objects rest on each other, and each group's bounding box is centred on z = 0.

Surfaces: "plain" (never written in a caption), "striped" (16 meridian stripes around the object's vertical
axis), "checkered" (a 3D checkerboard in object space). Patterns alternate the object colour with
:data:`PATTERN_COLOUR` (charcoal, not a named colour). The front marker ("with a blue front") recolours the
surface whose outward normal is within 45 degrees of +x (for a cube: exactly its +x face); its colour must
differ from the object colour.

Captions are lower case, words separated by single spaces, no trailing period; a comma is written attached
to the preceding word ("a red cube, a blue cone and ...") but is a token of its own (:func:`tokenize`).
Training captions may carry a DreamFusion view suffix, ``"<caption>, <view> view"``
(:func:`with_view_suffix`); :func:`parse_caption` ignores it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from lods.cameras import VIEWS

CATEGORIES = ("single", "surroundings", "multiple")
SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
# Albedo of each colour, sRGB in [0, 1]. Shading multiplies these directly (no linearisation).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.10, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (0.95, 0.50, 0.05),
    "purple": (0.55, 0.15, 0.75),
    "white": (0.95, 0.95, 0.95),
}
PATTERN_COLOUR: tuple[float, float, float] = (0.12, 0.12, 0.12)  # charcoal: not a named colour, so never ambiguous
SURFACES = ("plain", "striped", "checkered")
BACKDROPS = ("floor", "wall")
# Two-object relations: Scene.arrangement -> caption phrase.
RELATIONS: dict[str, str] = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "in_front_of": "in front of",
    "behind": "behind",
    "on_top_of": "on top of",
}
# Three-object arrangements: Scene.arrangement -> description (the caption form is in the module docstring).
ARRANGEMENTS_THREE: dict[str, str] = {
    "row": "<a>, <b> and <c> in a row",  # listed left to right in the front view
    "stack": "<a> on top of <b> on top of <c>",  # listed top to bottom
}

# --- Geometry of the world (object space: every shape's bounding box is centred on its position) ---
# Half extents (x, y, z) of each shape at scale 1; the renderer's primitives use the same numbers.
SPHERE_RADIUS = 0.5
CUBE_HALF = 0.4
CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT = 0.4, 0.45
CONE_RADIUS, CONE_HALF_HEIGHT = 0.45, 0.45  # base at -half height, apex at +half height
TORUS_MAJOR, TORUS_MINOR = 0.35, 0.15  # lying flat: axis along z
HALF_EXTENTS: dict[str, tuple[float, float, float]] = {
    "sphere": (SPHERE_RADIUS,) * 3,
    "cube": (CUBE_HALF,) * 3,
    "cylinder": (CYLINDER_RADIUS, CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT),
    "cone": (CONE_RADIUS, CONE_RADIUS, CONE_HALF_HEIGHT),
    "torus": (TORUS_MAJOR + TORUS_MINOR, TORUS_MAJOR + TORUS_MINOR, TORUS_MINOR),
}
# Surroundings: the object (at SURROUNDINGS_SCALE, so the backdrop shows around it) rests on the floor, a disc
# of radius FLOOR_RADIUS in the plane z = FLOOR_Z, or is centred in front of the wall, a rectangle in the plane
# x = WALL_X (behind the object, seen from the front), |y| <= WALL_HALF_WIDTH, z in WALL_Z_RANGE.
SURROUNDINGS_SCALE = 0.8
FLOOR_Z = -0.5
FLOOR_RADIUS = 0.85
WALL_X = -0.5
WALL_HALF_WIDTH = 0.75
WALL_Z_RANGE = (-0.5, 0.6)
# Multi-object layouts: per-object scale and spacing between neighbouring centres.
PAIR_SCALE, PAIR_SPACING = 0.7, 0.8
TRIPLE_SCALE, TRIPLE_SPACING = 0.55, 0.65

ARTICLES = ("a", "an")
VIEW_WORDS = (*VIEWS, "view")


@dataclass(frozen=True)
class ObjectSpec:
    """One primitive: its appearance and its placement (centre of its bounding box, uniform scale)."""

    shape: str
    colour: str
    surface: str = "plain"
    marker_colour: str | None = None  # colour of the front (+x facing) surface, None for no marker
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    @property
    def half_extents(self) -> tuple[float, float, float]:
        hx, hy, hz = HALF_EXTENTS[self.shape]
        return hx * self.scale, hy * self.scale, hz * self.scale


@dataclass(frozen=True)
class Backdrop:
    """A floor or wall: its colour and surface pattern (its geometry is fixed, see FLOOR_* and WALL_*)."""

    colour: str
    surface: str = "plain"


@dataclass(frozen=True)
class Scene:
    """A toyworld scene. ``arrangement`` is the multi-object relation as written in the caption
    (a key of RELATIONS or ARRANGEMENTS_THREE), None otherwise; objects are in caption order."""

    objects: tuple[ObjectSpec, ...]
    floor: Backdrop | None = None
    wall: Backdrop | None = None
    category: str = "single"
    arrangement: str | None = None

    @property
    def has_marker(self) -> bool:
        return any(obj.marker_colour is not None for obj in self.objects)


# ----------------------------------------------------------------------------------------------------------
# Layout: where the grammar puts objects.


def _resting(shape: str, scale: float, x: float, y: float, bottom: float) -> tuple[float, float, float]:
    """Centre of an object of this shape and scale whose bounding box bottom is at z = bottom."""
    return (x, y, bottom + HALF_EXTENTS[shape][2] * scale)


def _place(shapes_colours: list[tuple[str, str]], arrangement: str) -> tuple[ObjectSpec, ...]:
    """Positions for a multi-object arrangement; the group's bounding box is centred vertically on z = 0."""
    n = len(shapes_colours)
    scale = PAIR_SCALE if n == 2 else TRIPLE_SCALE
    spacing = PAIR_SPACING if n == 2 else TRIPLE_SPACING
    heights = [2 * HALF_EXTENTS[shape][2] * scale for shape, _ in shapes_colours]
    if arrangement in ("on_top_of", "stack"):
        # Caption order is top to bottom; stack from the bottom up, then centre the stack.
        bottoms, z = [0.0] * n, 0.0
        for i in reversed(range(n)):
            bottoms[i] = z
            z += heights[i]
        xys = [(0.0, 0.0)] * n
        total = z
    else:
        offsets = {
            "left_of": [(0.0, -spacing / 2), (0.0, spacing / 2)],
            "right_of": [(0.0, spacing / 2), (0.0, -spacing / 2)],
            "in_front_of": [(spacing / 2, 0.0), (-spacing / 2, 0.0)],
            "behind": [(-spacing / 2, 0.0), (spacing / 2, 0.0)],
            "row": [(0.0, -spacing), (0.0, 0.0), (0.0, spacing)],
        }[arrangement]
        xys, bottoms, total = offsets, [0.0] * n, max(heights)  # side by side on a common ground
    objects = []
    for (shape, colour), (x, y), bottom in zip(shapes_colours, xys, bottoms):
        position = _resting(shape, scale, x, y, bottom - total / 2)
        objects.append(ObjectSpec(shape, colour, "plain", None, _round(position), scale))
    return tuple(objects)


def _round(position: tuple[float, float, float]) -> tuple[float, float, float]:
    # Rounding makes positions exact decimal numbers (and -0.0 into 0.0), so equal layouts compare equal.
    return tuple(round(v, 9) + 0.0 for v in position)  # type: ignore[return-value]


def _single(shape: str, colour: str, surface: str, marker: str | None, backdrop: str | None) -> ObjectSpec:
    """The object of a single or surroundings scene; backdrop is None, "floor" or "wall"."""
    scale = 1.0 if backdrop is None else SURROUNDINGS_SCALE
    position = _resting(shape, scale, 0.0, 0.0, FLOOR_Z) if backdrop == "floor" else (0.0, 0.0, 0.0)
    return ObjectSpec(shape, colour, surface, marker, _round(position), scale)


def allowed_markers(colour: str) -> list[str]:
    """Front-marker colours allowed on an object of this colour: every other colour."""
    return [c for c in COLOURS if c != colour]


# ----------------------------------------------------------------------------------------------------------
# Scene -> caption.


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(colour: str, noun: str, surface: str = "plain") -> str:
    words = ([surface] if surface != "plain" else []) + [colour, noun]
    return f"{_article(words[0])} {' '.join(words)}"


def _object_phrase(obj: ObjectSpec) -> str:
    phrase = _noun_phrase(obj.colour, obj.shape, obj.surface)
    if obj.marker_colour is not None:
        phrase += f" with {_article(obj.marker_colour)} {obj.marker_colour} front"
    return phrase


def scene_caption(scene: Scene) -> str:
    """The caption of a scene: the exact inverse of :func:`parse_caption` on every scene the grammar makes."""
    objs = scene.objects
    if scene.category in ("single", "surroundings"):
        caption = _object_phrase(objs[0])
        if scene.floor is not None:
            caption += " on " + _noun_phrase(scene.floor.colour, "floor", scene.floor.surface)
        if scene.wall is not None:
            caption += " in front of " + _noun_phrase(scene.wall.colour, "wall", scene.wall.surface)
        return caption
    if scene.category != "multiple":
        raise ValueError(f"unknown category {scene.category!r}; choose one of: {', '.join(CATEGORIES)}")
    phrases = [_object_phrase(obj) for obj in objs]
    if scene.arrangement == "row":
        return f"{phrases[0]}, {phrases[1]} and {phrases[2]} in a row"
    if scene.arrangement == "stack":
        return " on top of ".join(phrases)
    if scene.arrangement in RELATIONS:
        return f"{phrases[0]} {RELATIONS[scene.arrangement]} {phrases[1]}"
    allowed = ", ".join([*RELATIONS, *ARRANGEMENTS_THREE])
    raise ValueError(f"unknown arrangement {scene.arrangement!r}; choose one of: {allowed}")


# ----------------------------------------------------------------------------------------------------------
# Caption -> scene.


def tokenize(caption: str) -> list[str]:
    """Lower-cased words of a caption, with commas as tokens of their own."""
    return caption.lower().replace(",", " , ").split()


def split_view_suffix(caption: str) -> tuple[str, str | None]:
    """``("a red cube", "back")`` for ``"a red cube, back view"``; ``(caption, None)`` without a suffix."""
    head, sep, tail = caption.rpartition(",")
    words = tail.split()
    if sep and len(words) == 2 and words[1] == "view" and words[0] in VIEWS:
        return head.rstrip(), words[0]
    return caption, None


def strip_view_suffix(caption: str) -> str:
    """The caption without its DreamFusion view suffix (unchanged if it has none)."""
    return split_view_suffix(caption)[0]


def with_view_suffix(caption: str, view: str) -> str:
    """``f"{caption}, {view} view"``, view one of lods.cameras.VIEWS."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of: {', '.join(VIEWS)}")
    return f"{caption}, {view} view"


@dataclass(frozen=True)
class _Phrase:
    surface: str
    colour: str
    noun: str  # a shape, "floor" or "wall"
    marker: str | None


class _Parser:
    """Recursive descent over the tokens of one caption; every error names the bad word and the allowed ones."""

    def __init__(self, caption: str):
        self.caption = caption
        self.tokens = tokenize(strip_view_suffix(caption))
        self.i = 0

    def error(self, what: str, allowed: list[str] | tuple[str, ...]) -> ValueError:
        found = repr(self.tokens[self.i]) if self.i < len(self.tokens) else "the end of the caption"
        choices = ", ".join(repr(a) for a in allowed)
        return ValueError(
            f"bad caption {self.caption!r}: expected {what} at word {self.i + 1}, got {found}; choose one of: {choices}"
        )

    def peek(self, offset: int = 0) -> str | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self, what: str, allowed: list[str] | tuple[str, ...]) -> str:
        word = self.peek()
        if word not in allowed:
            raise self.error(what, allowed)
        self.i += 1
        return word

    def article(self) -> None:
        # The article agrees with the next word ("an orange"); the next word is checked by its own rule.
        if self.peek() not in ARTICLES:
            raise self.error("an article", ARTICLES)
        following = self.peek(1)
        if following is not None and self.peek() != _article(following):
            raise self.error(f"the article for {following!r}", [_article(following)])
        self.i += 1

    def phrase(self) -> _Phrase:
        self.article()
        surface = "plain"
        if self.peek() in SURFACES[1:]:
            surface = self.take("a surface", SURFACES[1:])
        colour = self.take("a colour" if surface != "plain" else "a surface or a colour", self._colour_choices(surface))
        noun = self.take("a shape, 'floor' or 'wall'", [*SHAPES, *BACKDROPS])
        marker = None
        if self.peek() == "with":
            self.i += 1
            self.article()
            marker = self.take("a front colour", list(COLOURS))
            self.take("'front'", ["front"])
        return _Phrase(surface, colour, noun, marker)

    @staticmethod
    def _colour_choices(surface: str) -> list[str]:
        return list(COLOURS) if surface != "plain" else [*SURFACES[1:], *COLOURS]

    def words(self, *expected: str) -> None:
        for word in expected:
            self.take(repr(" ".join(expected)), [word])

    def connector(self) -> str | None:
        """The word(s) after a phrase: None at the end, else a relation key, 'on', 'in_front_of', ',', 'and'."""
        word = self.peek()
        if word is None:
            return None
        if word == "on":
            if self.peek(1) == "top":
                self.words("on", "top", "of")
                return "on_top_of"
            self.i += 1
            return "on"
        if word == "in":
            if self.peek(1) == "a":
                self.words("in", "a", "row")
                return "in_a_row"
            self.words("in", "front", "of")
            return "in_front_of"
        if word == "to":
            self.words("to", "the")
            side = self.take("'left' or 'right'", ["left", "right"])
            self.words("of")
            return f"{side}_of"
        if word in ("behind", ",", "and"):
            self.i += 1
            return word
        allowed = ["on", "in front of", *RELATIONS.values(), ",", "and", "in a row", "with"]
        raise self.error("a relation or the end of the caption", list(dict.fromkeys(allowed)))

    def parse(self) -> Scene:
        if not self.tokens:
            raise ValueError(f"bad caption {self.caption!r}: it is empty")
        items: list[_Phrase | str] = [self.phrase()]
        spans = [(0, self.i)]
        while (conn := self.connector()) is not None:
            items.append(conn)
            if conn == "in_a_row":
                if self.peek() is not None:
                    raise self.error("the end of the caption after 'in a row'", ["<end>"])
                break
            start = self.i
            items.append(self.phrase())
            spans.append((start, self.i))
        phrases = [p for p in items if isinstance(p, _Phrase)]
        connectors = [c for c in items if isinstance(c, str)]
        return self._build(phrases, connectors, spans)

    def _fail(self, message: str) -> ValueError:
        return ValueError(f"bad caption {self.caption!r}: {message}")

    def _check_object(self, phrase: _Phrase, plain_only: bool) -> None:
        if phrase.noun not in SHAPES:
            raise self._fail(f"{phrase.noun!r} is not an object here; choose one of: {', '.join(SHAPES)}")
        if plain_only and (phrase.surface != "plain" or phrase.marker is not None):
            bad = phrase.surface if phrase.surface != "plain" else f"with a {phrase.marker} front"
            raise self._fail(
                f"objects in multi-object captions are '<colour> <shape>' only, got {bad!r}; "
                f"surfaces and front markers belong to single-object captions"
            )
        if phrase.marker is not None and phrase.marker not in allowed_markers(phrase.colour):
            raise self._fail(
                f"front colour {phrase.marker!r} must differ from the object colour; "
                f"choose one of: {', '.join(allowed_markers(phrase.colour))}"
            )

    def _build(self, phrases: list[_Phrase], connectors: list[str], spans: list[tuple[int, int]]) -> Scene:
        first = phrases[0]
        if not connectors:
            self._check_object(first, plain_only=False)
            return Scene((_single(first.noun, first.colour, first.surface, first.marker, None),), category="single")
        if connectors in (["on"], ["in_front_of"]) and phrases[1].noun in BACKDROPS:
            self._check_object(first, plain_only=False)
            backdrop, expected = phrases[1], "floor" if connectors == ["on"] else "wall"
            if backdrop.noun != expected or backdrop.marker is not None:
                raise self._fail(f"expected 'on a ... floor' or 'in front of a ... wall', got {backdrop.noun!r}")
            on_floor = expected == "floor"
            obj = _single(first.noun, first.colour, first.surface, first.marker, expected)
            backdrop_spec = Backdrop(backdrop.colour, backdrop.surface)
            return Scene(
                (obj,),
                floor=backdrop_spec if on_floor else None,
                wall=None if on_floor else backdrop_spec,
                category="surroundings",
            )
        if connectors == ["on"]:
            raise self._fail(
                f"'on a {phrases[1].noun}' is not a caption form; write 'on top of a ...' or 'on a ... floor'"
            )
        if len(connectors) == 1 and connectors[0] in RELATIONS:
            arrangement = connectors[0]
        elif connectors == ["on_top_of", "on_top_of"]:
            arrangement = "stack"
        elif connectors == [",", "and", "in_a_row"]:
            arrangement = "row"
        else:
            forms = "'on a ... floor', 'in front of a ... wall', " + ", ".join(repr(r) for r in RELATIONS.values())
            forms += ", " + ", ".join(repr(form) for form in ARRANGEMENTS_THREE.values())
            raise self._fail(f"no caption form matches these connectors; choose one of: {forms}")
        for phrase in phrases:
            self._check_object(phrase, plain_only=True)
        objects = _place([(p.noun, p.colour) for p in phrases], arrangement)
        return Scene(objects, category="multiple", arrangement=arrangement)


def parse_caption(caption: str) -> Scene:
    """The scene a caption names. Case and spacing are normalised and a view suffix is ignored.

    Raises ValueError naming the bad word and the allowed words for anything the grammar does not make.
    """
    return _Parser(caption).parse()


# ----------------------------------------------------------------------------------------------------------
# Enumeration: every scene, in a fixed order, indexable without building the list.


def _object_choices() -> list[tuple[str, str, str, str | None]]:
    """(shape, colour, surface, marker) of every single object, in enumeration order."""
    return [
        (shape, colour, surface, marker)
        for shape in SHAPES
        for colour in COLOURS
        for surface in SURFACES
        for marker in (None, *allowed_markers(colour))
    ]


_OBJECTS = _object_choices()
_SIMPLE = [(shape, colour) for shape in SHAPES for colour in COLOURS]
_BACKDROP_CHOICES = [(kind, colour, surface) for kind in BACKDROPS for colour in COLOURS for surface in SURFACES]


def _check_category(category: str | None) -> tuple[str, ...]:
    if category is None:
        return CATEGORIES
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose one of: {', '.join(CATEGORIES)}")
    return (category,)


def count_scenes(category: str | None = None) -> int:
    """Number of scenes in a category (all categories for None), without enumerating them."""
    counts = {
        "single": len(_OBJECTS),
        "surroundings": len(_OBJECTS) * len(_BACKDROP_CHOICES),
        "multiple": len(_SIMPLE) ** 2 * len(RELATIONS) + len(_SIMPLE) ** 3 * len(ARRANGEMENTS_THREE),
    }
    return sum(counts[c] for c in _check_category(category))


def scene_at(category: str, index: int) -> Scene:
    """The index-th scene of a category, in the order of :func:`iter_scenes`."""
    (category,) = _check_category(category)
    if not 0 <= index < count_scenes(category):
        raise IndexError(f"scene index {index} out of range for {category!r} (0 .. {count_scenes(category) - 1})")
    if category == "single":
        return _make_surrounded(_OBJECTS[index], None)
    if category == "surroundings":
        obj, backdrop = divmod(index, len(_BACKDROP_CHOICES))
        return _make_surrounded(_OBJECTS[obj], _BACKDROP_CHOICES[backdrop])
    n, pairs = len(_SIMPLE), len(_SIMPLE) ** 2 * len(RELATIONS)
    if index < pairs:
        rest, relation = divmod(index, len(RELATIONS))
        return _make_multiple([_SIMPLE[rest // n], _SIMPLE[rest % n]], list(RELATIONS)[relation])
    rest, arrangement = divmod(index - pairs, len(ARRANGEMENTS_THREE))
    a, rest = divmod(rest, n * n)
    return _make_multiple([_SIMPLE[a], _SIMPLE[rest // n], _SIMPLE[rest % n]], list(ARRANGEMENTS_THREE)[arrangement])


def _make_surrounded(obj: tuple[str, str, str, str | None], backdrop: tuple[str, str, str] | None) -> Scene:
    shape, colour, surface, marker = obj
    if backdrop is None:
        return Scene((_single(shape, colour, surface, marker, None),), category="single")
    kind, bcolour, bsurface = backdrop
    spec = Backdrop(bcolour, bsurface)
    return Scene(
        (_single(shape, colour, surface, marker, kind),),
        floor=spec if kind == "floor" else None,
        wall=spec if kind == "wall" else None,
        category="surroundings",
    )


def _make_multiple(objects: list[tuple[str, str]], arrangement: str) -> Scene:
    return Scene(_place(objects, arrangement), category="multiple", arrangement=arrangement)


def iter_scenes(category: str | None = None) -> Iterator[Scene]:
    """Every scene of a category (all categories for None), lazily, in a fixed order."""
    for cat in _check_category(category):
        if cat == "single":
            for obj in _OBJECTS:
                yield _make_surrounded(obj, None)
        elif cat == "surroundings":
            for obj, backdrop in itertools.product(_OBJECTS, _BACKDROP_CHOICES):
                yield _make_surrounded(obj, backdrop)
        else:
            for a, b, relation in itertools.product(_SIMPLE, _SIMPLE, RELATIONS):
                yield _make_multiple([a, b], relation)
            for a, b, c, arrangement in itertools.product(_SIMPLE, _SIMPLE, _SIMPLE, ARRANGEMENTS_THREE):
                yield _make_multiple([a, b, c], arrangement)


def enumerate_scenes(category: str | None = None) -> Iterator[Scene]:
    """Alias of :func:`iter_scenes` (a lazy iterator: the world has ~10^5 scenes, see :func:`count_scenes`)."""
    return iter_scenes(category)


def sample_captions(n: int, seed: int, category: str | None = None) -> list[str]:
    """``n`` captions drawn uniformly with replacement, deterministic in ``seed``.

    With ``category=None`` each caption first draws its category uniformly (1/3 each), so the large
    multi-object category does not crowd out the others.
    """
    categories = _check_category(category)
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        cat = rng.choice(categories)
        captions.append(scene_caption(scene_at(cat, rng.randrange(count_scenes(cat)))))
    return captions


def vocabulary() -> dict[str, list[str]]:
    """The grammar's word classes (multi-word relations as phrases)."""
    return {
        "categories": list(CATEGORIES),
        "shapes": list(SHAPES),
        "colours": list(COLOURS),
        "surfaces": list(SURFACES),
        "backdrops": list(BACKDROPS),
        "relations": list(RELATIONS.values()),
        "arrangements": list(ARRANGEMENTS_THREE.values()),
        "views": list(VIEWS),
    }


def words() -> list[str]:
    """Every token a caption (with or without a view suffix) can contain, sorted; "," is a token."""
    structural = ["with", "front", "on", "in", "of", "a", "an", "and", "row", ","]
    relation_words = [w for phrase in RELATIONS.values() for w in phrase.split()]
    return sorted(
        set([*ARTICLES, *SURFACES[1:], *COLOURS, *SHAPES, *BACKDROPS, *structural, *relation_words, *VIEW_WORDS])
    )

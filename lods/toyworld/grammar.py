"""The toyworld scene grammar: captions <-> scenes, a bijection over a finite, enumerable world.

Every fully specified caption names exactly one :class:`Scene`, and :func:`scene_caption` maps each scene
back to that caption; an open caption (one that leaves words unsaid, see "Open captions" below) names the
set of scenes consistent with it. Everything here is pure Python and deterministic (no tensors; the only
randomness is the explicitly seeded :func:`sample_captions` and :func:`sample_open_caption`).

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

Open captions. A caption may leave things unsaid; it then names the *set* of scenes consistent with it
(:func:`consistent_scenes`), and every caption above is the special case of a set of one scene. What may be
left unsaid, and the words for it:

- an object's colour: drop the colour word ("a cube", "a striped cylinder with a red front");
- an object's shape: the general noun "object" ("a red object", "an object");
- a backdrop's colour and pattern: drop them ("a red cube on a floor", "a cone in front of a wall");
  a pattern alone may stay ("a cube on a striped floor");
- any object of a multi-object caption, in part or whole ("a red cube to the left of an object",
  "a cone on top of a cube").

The one rule for what an unsaid word means: *a phrase that names its colour is plain and unmarked unless it
says otherwise* (exactly as before, so "a red cube", "a red object" and "a red floor" are plain, with no front
marker); *a phrase that names no colour leaves everything it does not say open*: its colour, its pattern
(plain, striped or checkered) and, for a single object, its front (none, or any colour other than the
object's). So "a cube" is 7 colours x 3 patterns x (no front or 6 front colours) = 147 scenes, "a striped
cube" 49, "a cube with a red front" 3 patterns x the 6 colours other than red = 18, "an object" the 735
single-object scenes, "a floor" 7 colours x 3 patterns = 21 backdrops. Objects of multi-object captions are
plain and unmarked in every scene, so there only colour and shape can be open ("an object, an object and an
object in a row" = 35^3 scenes). The kind of backdrop (floor or wall), the relation and the arrangement are
always said. Since the phrases of a caption constrain independent parts of a scene, a caption's set is the
product of its phrases' sets.

An open caption is represented by an :class:`OpenScene` (attributes left unsaid are :data:`ANY`); its canonical
caption is :func:`open_caption` and :func:`parse_open_caption` is the inverse (case, spacing and a view suffix
normalised). :func:`parse_caption` accepts fully specified captions only and says so for an open one.
:func:`sample_open_caption` drops the words of a scene's caption at random (the scene is always a member of the
result), :func:`open_forms` lists the caption forms (which words are said) with their set sizes.
"""

from __future__ import annotations

import functools
import itertools
import math
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
# Open scenes: what an open caption says (see "Open captions" in the module docstring).

ANY = "*"  # an attribute the caption leaves unsaid (open)
OBJECT_NOUN = "object"  # the general noun: any shape
NOUNS = (*SHAPES, OBJECT_NOUN)


@dataclass(frozen=True)
class OpenObject:
    """An object phrase: each attribute is a value or ANY. ``marker`` None means no front marker.

    Single and surroundings objects: with a said colour, surface is a value and marker None or another
    colour; with colour ANY, surface is ANY, "striped" or "checkered" and marker ANY or a colour (then the
    object's colour differs from it). Multi-object captions: surface "plain" and marker None always.
    """

    shape: str = ANY
    colour: str = ANY
    surface: str = ANY
    marker: str | None = ANY


@dataclass(frozen=True)
class OpenBackdrop:
    """A backdrop phrase: a said colour with a surface value, or colour ANY with surface ANY or a pattern."""

    colour: str = ANY
    surface: str = ANY


@dataclass(frozen=True)
class OpenScene:
    """An open caption's content, laid out like :class:`Scene` (objects in caption order, no positions)."""

    objects: tuple[OpenObject, ...]
    floor: OpenBackdrop | None = None
    wall: OpenBackdrop | None = None
    category: str = "single"
    arrangement: str | None = None

    @property
    def is_open(self) -> bool:
        """Whether anything is left unsaid (the set has, or may have, more than one scene)."""
        backdrops = [b for b in (self.floor, self.wall) if b is not None]
        return any(ANY in (o.shape, o.colour, o.surface, o.marker) for o in self.objects) or any(
            ANY in (b.colour, b.surface) for b in backdrops
        )

    def scene(self) -> Scene:
        """The one scene of a fully specified spec (ValueError for an open one)."""
        if self.is_open:
            raise ValueError(f"{open_caption(self)!r} is open; it names {count_consistent(self):,} scenes")
        _check_open_scene(self)
        objs = self.objects
        if self.category == "multiple":
            return _make_multiple([(o.shape, o.colour) for o in objs], self.arrangement)
        obj = (objs[0].shape, objs[0].colour, objs[0].surface, objs[0].marker)
        if self.category == "single":
            return _make_surrounded(obj, None)
        kind, backdrop = ("floor", self.floor) if self.floor is not None else ("wall", self.wall)
        return _make_surrounded(obj, (kind, backdrop.colour, backdrop.surface))


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
    surface: str | None  # None: unsaid
    colour: str | None  # None: unsaid
    noun: str  # a shape, "object", "floor" or "wall"
    marker: str | None  # None: unsaid


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
        """``a [<surface>] [<colour>] <noun> [with a <colour> front]``; what is left out is None."""
        self.article()
        surface = colour = None
        if self.peek() in SURFACES[1:]:
            surface = self.take("a surface", SURFACES[1:])
        if self.peek() in COLOURS:
            colour = self.take("a colour", list(COLOURS))
        nouns = [*NOUNS, *BACKDROPS]
        if colour is not None:
            what, allowed = "a shape, 'object', 'floor' or 'wall'", nouns
        elif surface is not None:
            what, allowed = "a colour or a noun", [*COLOURS, *nouns]
        else:
            what, allowed = "a surface, a colour or a noun", [*SURFACES[1:], *COLOURS, *nouns]
        noun = self.take(what, allowed)
        marker = None
        if self.peek() == "with":
            self.i += 1
            self.article()
            marker = self.take("a front colour", list(COLOURS))
            self.take("'front'", ["front"])
        return _Phrase(surface, colour, noun, marker)

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

    def parse(self) -> OpenScene:
        if not self.tokens:
            raise ValueError(f"bad caption {self.caption!r}: it is empty")
        items: list[_Phrase | str] = [self.phrase()]
        while (conn := self.connector()) is not None:
            items.append(conn)
            if conn == "in_a_row":
                if self.peek() is not None:
                    raise self.error("the end of the caption after 'in a row'", ["<end>"])
                break
            items.append(self.phrase())
        phrases = [p for p in items if isinstance(p, _Phrase)]
        connectors = [c for c in items if isinstance(c, str)]
        return self._build(phrases, connectors)

    def _fail(self, message: str) -> ValueError:
        return ValueError(f"bad caption {self.caption!r}: {message}")

    def _check_object(self, phrase: _Phrase, plain_only: bool) -> None:
        if phrase.noun not in NOUNS:
            raise self._fail(f"{phrase.noun!r} is not an object here; choose one of: {', '.join(NOUNS)}")
        if plain_only and (phrase.surface is not None or phrase.marker is not None):
            bad = phrase.surface if phrase.surface is not None else f"with a {phrase.marker} front"
            raise self._fail(
                f"objects in multi-object captions are '<colour> <shape>' only (either may be left unsaid), "
                f"got {bad!r}; surfaces and front markers belong to single-object captions"
            )
        if (
            phrase.marker is not None
            and phrase.colour is not None
            and phrase.marker not in allowed_markers(phrase.colour)
        ):
            raise self._fail(
                f"front colour {phrase.marker!r} must differ from the object colour; "
                f"choose one of: {', '.join(allowed_markers(phrase.colour))}"
            )

    def _build(self, phrases: list[_Phrase], connectors: list[str]) -> OpenScene:
        first = phrases[0]
        if not connectors:
            self._check_object(first, plain_only=False)
            return OpenScene((_open_object(first),), category="single")
        if connectors in (["on"], ["in_front_of"]) and phrases[1].noun in BACKDROPS:
            self._check_object(first, plain_only=False)
            backdrop, expected = phrases[1], "floor" if connectors == ["on"] else "wall"
            if backdrop.noun != expected:
                raise self._fail(f"expected 'on a ... floor' or 'in front of a ... wall', got {backdrop.noun!r}")
            if backdrop.marker is not None:
                raise self._fail(f"a {backdrop.noun} has no front: 'with a ... front' belongs to the object")
            spec = _open_backdrop(backdrop)
            on_floor = expected == "floor"
            return OpenScene(
                (_open_object(first),),
                floor=spec if on_floor else None,
                wall=None if on_floor else spec,
                category="surroundings",
            )
        if connectors == ["on"]:
            noun = phrases[1].noun
            raise self._fail(
                f"'on {_article(noun)} {noun}' is not a caption form; write 'on top of a ...' or 'on a ... floor'"
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
        objects = tuple(OpenObject(_said(p.noun), _said(p.colour), "plain", None) for p in phrases)
        return OpenScene(objects, category="multiple", arrangement=arrangement)


def _said(word: str | None) -> str:
    """A said word as itself, an unsaid one (None) or the general noun as ANY."""
    return ANY if word is None or word == OBJECT_NOUN else word


def _open_object(phrase: _Phrase) -> OpenObject:
    """The single object a phrase describes: unsaid surface and front are plain and none when the colour is said,
    open when it is not (see the module docstring)."""
    if phrase.colour is not None:
        return OpenObject(_said(phrase.noun), phrase.colour, phrase.surface or "plain", phrase.marker)
    marker = ANY if phrase.marker is None else phrase.marker
    return OpenObject(_said(phrase.noun), ANY, phrase.surface or ANY, marker)


def _open_backdrop(phrase: _Phrase) -> OpenBackdrop:
    if phrase.colour is not None:
        return OpenBackdrop(phrase.colour, phrase.surface or "plain")
    return OpenBackdrop(ANY, phrase.surface or ANY)


def parse_open_caption(caption: str) -> OpenScene:
    """The :class:`OpenScene` a caption (open or not) describes. Case and spacing are normalised and a view
    suffix is ignored; ``open_caption(parse_open_caption(c))`` is the canonical form of ``c``.

    Raises ValueError naming the bad word and the allowed words for anything the grammar does not make.
    """
    return _Parser(caption).parse()


def parse_caption(caption: str) -> Scene:
    """The scene a fully specified caption names. Case and spacing are normalised and a view suffix is ignored.

    Raises ValueError naming the bad word and the allowed words for anything the grammar does not make, and
    for an open caption (which names a set of scenes: see :func:`consistent_scenes`).
    """
    spec = parse_open_caption(caption)
    if spec.is_open:
        raise ValueError(
            f"caption {caption!r} is open: it leaves {', '.join(open_attributes(spec))} unsaid and so names "
            f"{count_consistent(spec):,} scenes, not one; use consistent_scenes() or parse_open_caption()"
        )
    return spec.scene()


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
_SIMPLE_AS_OBJECTS = [(shape, colour, "plain", None) for shape, colour in _SIMPLE]


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
        "general nouns": [OBJECT_NOUN],
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
        set([*ARTICLES, *SURFACES[1:], *COLOURS, *NOUNS, *BACKDROPS, *structural, *relation_words, *VIEW_WORDS])
    )


# ----------------------------------------------------------------------------------------------------------
# Open captions: sets of scenes (see "Open captions" in the module docstring).


def open_spec(scene: Scene) -> OpenScene:
    """The fully specified :class:`OpenScene` of a scene (nothing ANY)."""

    def backdrop(b: Backdrop | None) -> OpenBackdrop | None:
        return None if b is None else OpenBackdrop(b.colour, b.surface)

    objects = tuple(OpenObject(o.shape, o.colour, o.surface, o.marker_colour) for o in scene.objects)
    return OpenScene(objects, backdrop(scene.floor), backdrop(scene.wall), scene.category, scene.arrangement)


def _check_open_scene(spec: OpenScene) -> None:
    """ValueError unless the spec is one a caption can say (its canonical caption exists)."""

    def fail(message: str) -> ValueError:
        return ValueError(f"not an open scene a caption can say: {message} ({spec!r})")

    _check_category(spec.category)
    n = len(spec.objects)
    if spec.category == "multiple":
        if not ((n == 2 and spec.arrangement in RELATIONS) or (n == 3 and spec.arrangement in ARRANGEMENTS_THREE)):
            raise fail(f"arrangement {spec.arrangement!r} of {n} objects")
        if spec.floor is not None or spec.wall is not None:
            raise fail("multi-object scenes have no backdrop")
    else:
        backdrops = [b for b in (spec.floor, spec.wall) if b is not None]
        if n != 1 or spec.arrangement is not None or len(backdrops) != (spec.category == "surroundings"):
            raise fail(f"a {spec.category} scene has one object and {'one backdrop' if backdrops else 'none'}")
        for b in backdrops:
            allowed = SURFACES if b.colour in COLOURS else (ANY, *SURFACES[1:]) if b.colour == ANY else ()
            if b.surface not in allowed:
                raise fail(f"backdrop colour {b.colour!r} with surface {b.surface!r}")
    for obj in spec.objects:
        if obj.shape not in (*SHAPES, ANY) or obj.colour not in (*COLOURS, ANY):
            raise fail(f"shape {obj.shape!r}, colour {obj.colour!r}")
        if spec.category == "multiple":
            if (obj.surface, obj.marker) != ("plain", None):
                raise fail("objects of multi-object scenes are plain and unmarked")
        elif obj.colour != ANY:
            if obj.surface not in SURFACES or obj.marker not in (None, *allowed_markers(obj.colour)):
                raise fail(f"a {obj.colour} object with surface {obj.surface!r} and front {obj.marker!r}")
        elif obj.surface not in (ANY, *SURFACES[1:]) or obj.marker not in (ANY, *COLOURS):
            raise fail(f"an object of any colour with surface {obj.surface!r} and front {obj.marker!r}")


def _as_open_scene(caption_or_spec: str | OpenScene) -> OpenScene:
    if isinstance(caption_or_spec, OpenScene):
        _check_open_scene(caption_or_spec)
        return caption_or_spec
    return parse_open_caption(caption_or_spec)


def _phrase_words(surface: str, colour: str, noun: str) -> list[str]:
    return ([surface] if surface not in ("plain", ANY) else []) + ([colour] if colour != ANY else []) + [noun]


def _open_object_phrase(obj: OpenObject) -> str:
    words = _phrase_words(obj.surface, obj.colour, OBJECT_NOUN if obj.shape == ANY else obj.shape)
    phrase = f"{_article(words[0])} {' '.join(words)}"
    if obj.marker not in (None, ANY):
        phrase += f" with {_article(obj.marker)} {obj.marker} front"
    return phrase


def _open_backdrop_phrase(backdrop: OpenBackdrop, kind: str) -> str:
    words = _phrase_words(backdrop.surface, backdrop.colour, kind)
    return f"{_article(words[0])} {' '.join(words)}"


def _write(spec: OpenScene, object_phrase, backdrop_phrase) -> str:
    """A caption (or, with template writers, a form) of a spec, laid out as in :func:`scene_caption`."""
    phrases = [object_phrase(obj) for obj in spec.objects]
    if spec.category != "multiple":
        caption = phrases[0]
        if spec.floor is not None:
            caption += " on " + backdrop_phrase(spec.floor, "floor")
        if spec.wall is not None:
            caption += " in front of " + backdrop_phrase(spec.wall, "wall")
        return caption
    if spec.arrangement == "row":
        return f"{phrases[0]}, {phrases[1]} and {phrases[2]} in a row"
    if spec.arrangement == "stack":
        return " on top of ".join(phrases)
    return f"{phrases[0]} {RELATIONS[spec.arrangement]} {phrases[1]}"


def open_caption(spec: OpenScene) -> str:
    """The canonical caption of an open scene: the inverse of :func:`parse_open_caption`. For a fully specified
    spec it is the scene's caption (``open_caption(open_spec(s)) == scene_caption(s)``)."""
    _check_open_scene(spec)
    return _write(spec, _open_object_phrase, _open_backdrop_phrase)


def canonical_caption(caption: str) -> str:
    """The canonical form of a caption, open or not (normalised case and spacing, no view suffix)."""
    return open_caption(parse_open_caption(caption))


def is_open(caption_or_spec: str | OpenScene) -> bool:
    """Whether a caption (or spec) leaves anything unsaid, i.e. names more than one scene."""
    return _as_open_scene(caption_or_spec).is_open


def _fits(value, said) -> bool:
    return said == ANY or value == said


def _object_table(category: str) -> list[tuple[str, str, str, str | None]]:
    """(shape, colour, surface, marker) of each object choice of a category: _OBJECTS, or _SIMPLE (plain)."""
    return _SIMPLE_AS_OBJECTS if category == "multiple" else _OBJECTS


@functools.lru_cache(maxsize=4096)
def _choices(spec: OpenScene) -> tuple[tuple[int, ...], ...]:
    """Per part of the scene (its objects, then its backdrop), the allowed entries of _OBJECTS (_SIMPLE for
    multi-object scenes) or _BACKDROP_CHOICES, in enumeration order."""
    parts, table = [], _object_table(spec.category)
    for obj in spec.objects:
        parts.append(
            tuple(
                i
                for i, (sh, co, su, ma) in enumerate(table)
                if _fits(sh, obj.shape) and _fits(co, obj.colour) and _fits(su, obj.surface) and _fits(ma, obj.marker)
            )
        )
    for kind, backdrop in (("floor", spec.floor), ("wall", spec.wall)):
        if backdrop is not None:
            parts.append(
                tuple(
                    i
                    for i, (k, co, su) in enumerate(_BACKDROP_CHOICES)
                    if k == kind and _fits(co, backdrop.colour) and _fits(su, backdrop.surface)
                )
            )
    return tuple(parts)


def count_consistent(caption_or_spec: str | OpenScene) -> int:
    """Size of a caption's set of scenes, without enumerating it (1 for a fully specified caption)."""
    return math.prod(len(part) for part in _choices(_as_open_scene(caption_or_spec)))


def consistent_indices(caption_or_spec: str | OpenScene) -> list[int]:
    """Indices (:func:`scene_at` of the caption's category) of the scenes consistent with a caption, ascending,
    i.e. in :func:`iter_scenes` order."""
    spec = _as_open_scene(caption_or_spec)
    parts = _choices(spec)
    if spec.category == "single":
        return list(parts[0])
    if spec.category == "surroundings":
        return [o * len(_BACKDROP_CHOICES) + b for o, b in itertools.product(*parts)]
    n = len(_SIMPLE)
    if len(parts) == 2:
        relation, count = list(RELATIONS).index(spec.arrangement), len(RELATIONS)
        return [(a * n + b) * count + relation for a, b in itertools.product(*parts)]
    base, count = n * n * len(RELATIONS), len(ARRANGEMENTS_THREE)
    arrangement = list(ARRANGEMENTS_THREE).index(spec.arrangement)
    return [base + ((a * n + b) * n + c) * count + arrangement for a, b, c in itertools.product(*parts)]


def consistent_scenes(caption_or_spec: str | OpenScene) -> list[Scene]:
    """Every scene consistent with a caption (open or not; a view suffix is ignored), in :func:`iter_scenes`
    order. A fully specified caption gives its one scene."""
    spec = _as_open_scene(caption_or_spec)
    return [scene_at(spec.category, i) for i in consistent_indices(spec)]


def is_consistent(scene: Scene, caption_or_spec: str | OpenScene) -> bool:
    """Whether a scene is a member of a caption's set."""
    spec, full = _as_open_scene(caption_or_spec), open_spec(scene)
    if (spec.category, spec.arrangement, len(spec.objects)) != (full.category, full.arrangement, len(full.objects)):
        return False
    for said, obj in zip(spec.objects, full.objects):
        if not all(_fits(getattr(obj, f), getattr(said, f)) for f in ("shape", "colour", "surface", "marker")):
            return False
    for said, backdrop in ((spec.floor, full.floor), (spec.wall, full.wall)):
        if (said is None) != (backdrop is None):
            return False
        if said is not None and not (_fits(backdrop.colour, said.colour) and _fits(backdrop.surface, said.surface)):
            return False
    return True


def scene_attributes(scene: Scene) -> dict[str, str | None]:
    """A scene's attributes by name: "shape", "colour", "surface", "front" (None: no marker) of a single object
    (with "floor.colour", "floor.surface" or "wall.*" in surroundings); "<i>.shape", "<i>.colour" of the i-th
    object (from 1, caption order) of a multi-object scene."""
    if scene.category == "multiple":
        return {f"{i}.{key}": getattr(o, key) for i, o in enumerate(scene.objects, 1) for key in ("shape", "colour")}
    (obj,) = scene.objects
    names = {"shape": obj.shape, "colour": obj.colour, "surface": obj.surface, "front": obj.marker_colour}
    for kind, backdrop in (("floor", scene.floor), ("wall", scene.wall)):
        if backdrop is not None:
            names.update({f"{kind}.colour": backdrop.colour, f"{kind}.surface": backdrop.surface})
    return names


def open_attributes(caption_or_spec: str | OpenScene) -> dict[str, tuple]:
    """The attributes a caption leaves open (names as in :func:`scene_attributes`), each with the values it
    takes across the caption's set, in order of first appearance in it; empty for a fully specified caption."""
    spec = _as_open_scene(caption_or_spec)
    parts, values = _choices(spec), {}
    table = _object_table(spec.category)
    for i, (obj, part) in enumerate(zip(spec.objects, parts), 1):
        prefix = f"{i}." if spec.category == "multiple" else ""
        for column, (name, said) in enumerate(
            (("shape", obj.shape), ("colour", obj.colour), ("surface", obj.surface), ("front", obj.marker))
        ):
            if said == ANY:
                values[prefix + name] = tuple(dict.fromkeys(table[j][column] for j in part))
    for kind, backdrop in (("floor", spec.floor), ("wall", spec.wall)):
        if backdrop is not None:  # (then it is the last part)
            for column, (name, said) in enumerate((("colour", backdrop.colour), ("surface", backdrop.surface)), 1):
                if said == ANY:
                    values[f"{kind}.{name}"] = tuple(dict.fromkeys(_BACKDROP_CHOICES[j][column] for j in parts[-1]))
    return values


def sample_open_caption(scene: Scene, rng: random.Random, drop_prob: float = 0.5) -> str:
    """An open caption of which ``scene`` is a member: its caption with words dropped at random.

    Each said attribute is dropped with probability ``drop_prob``: an object's shape (-> "object") and colour;
    once an object's colour is dropped, also its pattern and its front (a plain surface or no front cannot be
    said without the colour, so they become open); a backdrop's colour, and once dropped its pattern.
    ``drop_prob`` 0 gives the scene's own caption. Deterministic in the state of ``rng``.
    """

    def drop() -> bool:
        return rng.random() < drop_prob

    objects = []
    for obj in scene.objects:
        shape = ANY if drop() else obj.shape
        if scene.category == "multiple":
            objects.append(OpenObject(shape, ANY if drop() else obj.colour, "plain", None))
        elif drop():  # the colour, and with it a plain surface and a missing front
            surface = ANY if obj.surface == "plain" or drop() else obj.surface
            marker = ANY if obj.marker_colour is None or drop() else obj.marker_colour
            objects.append(OpenObject(shape, ANY, surface, marker))
        else:
            objects.append(OpenObject(shape, obj.colour, obj.surface, obj.marker_colour))

    def backdrop(b: Backdrop | None) -> OpenBackdrop | None:
        if b is None or not drop():
            return None if b is None else OpenBackdrop(b.colour, b.surface)
        return OpenBackdrop(ANY, ANY if b.surface == "plain" or drop() else b.surface)

    spec = OpenScene(tuple(objects), backdrop(scene.floor), backdrop(scene.wall), scene.category, scene.arrangement)
    return open_caption(spec)


def sample_open_captions(n: int, seed: int, category: str | None = None, drop_prob: float = 0.5) -> list[str]:
    """``n`` open captions, deterministic in ``seed``: a scene drawn as in :func:`sample_captions`, then
    :func:`sample_open_caption` of it (so some captions, by chance, stay fully specified)."""
    categories = _check_category(category)
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        cat = rng.choice(categories)
        captions.append(sample_open_caption(scene_at(cat, rng.randrange(count_scenes(cat))), rng, drop_prob))
    return captions


@dataclass(frozen=True)
class OpenForm:
    """A caption form: which words are said (``template``), the size of the set of each of its captions, how
    many captions it has, and one of them. Forms with ``size`` 1 are the fully specified ones."""

    category: str
    template: str
    size: int
    captions: int
    example: str


def _object_template(obj: OpenObject) -> str:
    words = _phrase_words(
        "<surface>" if obj.surface not in ("plain", ANY) else obj.surface,
        "<colour>" if obj.colour != ANY else ANY,
        OBJECT_NOUN if obj.shape == ANY else "<shape>",
    )
    template = f"{'an' if words[0] == OBJECT_NOUN else 'a'} {' '.join(words)}"
    return template + (" with a <colour> front" if obj.marker not in (None, ANY) else "")


def _backdrop_template(backdrop: OpenBackdrop, kind: str) -> str:
    surface = "<surface>" if backdrop.surface not in ("plain", ANY) else backdrop.surface
    return "a " + " ".join(_phrase_words(surface, "<colour>" if backdrop.colour != ANY else ANY, kind))


def _phrase_forms(specs: list) -> dict[str, list]:
    """Phrase specs grouped by their template, in enumeration order."""
    forms: dict[str, list] = {}
    for spec in specs:
        template = _object_template(spec) if isinstance(spec, OpenObject) else _backdrop_template(spec, "floor")
        forms.setdefault(template, []).append(spec)
    return forms


def _object_phrase_specs(multiple: bool) -> list[OpenObject]:
    """Every object phrase a caption can say (multiple: of a multi-object caption), in enumeration order."""
    specs = []
    for shape, colour in itertools.product((*SHAPES, ANY), (*COLOURS, ANY)):
        if multiple:
            specs.append(OpenObject(shape, colour, "plain", None))
        elif colour != ANY:
            specs += [OpenObject(shape, colour, s, m) for s in SURFACES for m in (None, *allowed_markers(colour))]
        else:
            specs += [OpenObject(shape, ANY, s, m) for s in (ANY, *SURFACES[1:]) for m in (ANY, *COLOURS)]
    return specs


def _backdrop_phrase_specs() -> list[OpenBackdrop]:
    said = [OpenBackdrop(colour, surface) for colour in COLOURS for surface in SURFACES]
    return said + [OpenBackdrop(ANY, surface) for surface in (ANY, *SURFACES[1:])]


def open_forms(category: str | None = None) -> list[OpenForm]:
    """Every caption form of a category (all for None), fully specified ones included, with set sizes.

    A form fixes which words each phrase says (e.g. "a <shape> on a floor"); every caption of a form names a
    set of the same size (the product of its phrases' sets). Single: 16 forms; surroundings: 16 object forms x
    2 backdrops x 4 backdrop forms = 128; multiple: 4 object forms per object, 4^2 x 5 relations + 4^3 x 2 = 208.
    """
    forms = []
    for cat in _check_category(category):
        objects = _phrase_forms(_object_phrase_specs(cat == "multiple"))
        if cat == "multiple":
            layouts = [(a, 2) for a in RELATIONS] + [(a, 3) for a in ARRANGEMENTS_THREE]
            combos = [
                (OpenScene(objs, category=cat, arrangement=a), templates)
                for a, n in layouts
                for templates in itertools.product(objects, repeat=n)
                for objs in [tuple(objects[t][(13 * k) % len(objects[t])] for k, t in enumerate(templates))]
            ]
        elif cat == "single":
            combos = [(OpenScene((specs[0],), category=cat), (t,)) for t, specs in objects.items()]
        else:
            backdrops = _phrase_forms(_backdrop_phrase_specs())
            combos = [
                (
                    OpenScene(
                        (objects[t][0],),
                        floor=backdrops[b][0] if kind == "floor" else None,
                        wall=backdrops[b][0] if kind == "wall" else None,
                        category=cat,
                    ),
                    (t, b),
                )
                for t in objects
                for kind in BACKDROPS
                for b in backdrops
            ]
        for spec, templates in combos:
            template = _write(spec, _object_template, _backdrop_template)
            counts = [len(objects[t]) for t in templates[: len(spec.objects)]]
            if cat == "surroundings":
                counts.append(len(_phrase_forms(_backdrop_phrase_specs())[templates[1]]))
            forms.append(OpenForm(cat, template, count_consistent(spec), math.prod(counts), open_caption(spec)))
    return forms


def count_captions(category: str | None = None, open_only: bool = False) -> int:
    """Number of distinct captions (canonical forms) of a category, open ones only with ``open_only``."""
    return sum(f.captions for f in open_forms(category) if f.size > 1 or not open_only)

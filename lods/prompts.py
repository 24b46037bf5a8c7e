"""Prompt lists for benchmark sweeps: ``prompt_list=<name> prompt_index=<i>`` picks ``cfg.prompt``.

Built-in lists, 100 prompts each, in the three T3Bench categories (single object, single object with
surroundings, multiple objects):

- ``toyworld_single``, ``toyworld_surroundings``, ``toyworld_multiple``: captions of the procedural toyworld
  grammar (the T3Bench analogue that can be scored against ground truth): the first 100 *distinct* captions
  that :func:`lods.toyworld.grammar.sample_captions` draws with seed 0 (it samples with replacement, so
  repeats are skipped). Fixed forever: results stay comparable across runs and machines.
- ``toyworld_open_single``, ``toyworld_open_surroundings``, ``toyworld_open_multiple``: 100 distinct open
  captions each (every one names a set of at least ``OPEN_MIN_SET`` scenes), drawn from the same scene
  stream: the i-th scene gives a new open variant of its caption (:func:`open_variant`, seeded per scene),
  or none when every variant it has is already in the list. Fixed forever as well.
- ``toyworld_standard``: the standard bench's 24 prompts (``make bench-standard``), drawn once with the seed
  ``STANDARD_SEED`` from the six lists above: 4 full and 4 open captions per category, in rounds of one prompt
  per (kind, category), so that any prefix of it mixes the kinds and categories (the bench's NeRF and 2D
  parts take its first 8). Fixed forever with the lists it draws from.
- ``t3bench_single``, ``t3bench_surroundings``, ``t3bench_multiple``: the T3Bench prompts (He et al. 2023),
  not shipped with lods. They are read from a local clone of https://github.com/THU-LYJ-Lab/T3Bench, found
  through the environment variable ``T3BENCH_ROOT`` (or the ``root`` argument). That repository keeps them
  as ``data/prompt_single.txt``, ``data/prompt_surr.txt`` and ``data/prompt_multi.txt``, one prompt per line.
  A folder holding those three files, or ``single.txt``, ``surroundings.txt`` and ``multiple.txt``, works too.

Any path to a ``.txt`` file is a list as well: one prompt per line; blank lines and lines starting with
``#`` are skipped.

python -m lods.prompts                    # the lists and their sizes
python -m lods.prompts toyworld_multiple  # one list, numbered (the numbers are prompt_index)
"""

from __future__ import annotations

import argparse
import functools
import operator
import os
import random
from collections.abc import Collection
from pathlib import Path

from lods.toyworld import grammar

TOYWORLD_SIZE = 100  # prompts per toyworld list (T3Bench: 100 per category)
TOYWORLD_SEED = 0
OPEN_MIN_SET = 4  # an open prompt names at least this many scenes (so 4 particles can all differ)
MAX_OPEN_DRAWS = 1000  # open variants tried per scene before giving up
OPEN_LIST_DRAWS = 200  # ... for the open lists, where a scene may have no untaken variant left
STANDARD = "toyworld_standard"
STANDARD_SEED = "toyworld-standard"
STANDARD_PER_KIND = 4  # full (and open) captions per category in toyworld_standard
T3BENCH_ENV = "T3BENCH_ROOT"
T3BENCH_URL = "https://github.com/THU-LYJ-Lab/T3Bench"
# Category -> the file name stem in the T3Bench repository (data/prompt_<stem>.txt).
T3BENCH_STEMS = {"single": "single", "surroundings": "surr", "multiple": "multi"}

# Built-in list name -> its category (one of grammar.CATEGORIES).
LISTS: dict[str, str] = {
    **{f"toyworld_{category}": category for category in grammar.CATEGORIES},
    **{f"toyworld_open_{category}": category for category in grammar.CATEGORIES},
    **{f"t3bench_{category}": category for category in grammar.CATEGORIES},
}


# Built-in lists that mix the categories (category_of: None, as for a .txt file).
MIXED_LISTS = (STANDARD,)


def _allowed() -> str:
    return f"{', '.join([*LISTS, *MIXED_LISTS])}, or a path to a .txt file"


def _is_file_name(name: str) -> bool:
    return name.endswith(".txt") or os.sep in name or "/" in name


def category_of(name: str | os.PathLike) -> str | None:
    """ "single", "surroundings" or "multiple" for a built-in list; None for a .txt file."""
    name = os.fspath(name)
    if name in LISTS:
        return LISTS[name]
    if name in MIXED_LISTS or _is_file_name(name):
        return None
    raise ValueError(f"unknown prompt list {name!r}; choose one of: {_allowed()}")


@functools.cache
def _toyworld(category: str, size: int = TOYWORLD_SIZE) -> tuple[str, ...]:
    """The first ``size`` distinct captions of the seed-0 sample stream of one category."""
    draws = size
    while True:
        # sample_captions(n) is a prefix of sample_captions(2 n) for one seed: drawing more only appends.
        distinct = list(dict.fromkeys(grammar.sample_captions(draws, TOYWORLD_SEED, category)))
        if len(distinct) >= size:
            return tuple(distinct[:size])
        draws *= 2


def open_variant(
    scene: grammar.Scene,
    rng: random.Random,
    taken: Collection[str] = (),
    min_set: int = OPEN_MIN_SET,
    view: str | None = None,
    draws: int = MAX_OPEN_DRAWS,
) -> str:
    """An open caption whose set holds ``scene``: :func:`grammar.sample_open_caption` drawn from ``rng`` until
    the caption is open, names at least ``min_set`` scenes and (with ``view``'s suffix, if given) is not in
    ``taken``; at most ``draws`` draws, then RuntimeError."""
    for _ in range(draws):
        variant = grammar.sample_open_caption(scene, rng)
        caption = variant if view is None else grammar.with_view_suffix(variant, view)
        if grammar.is_open(variant) and grammar.count_consistent(variant) >= min_set and caption not in taken:
            return caption
    raise RuntimeError(f"no new open variant of {grammar.scene_caption(scene)!r} in {draws} draws")


@functools.cache
def _toyworld_open(category: str) -> tuple[str, ...]:
    """The first TOYWORLD_SIZE open prompts: full prompt i's scene gives an open variant drawn with the seed
    "toyworld-open-<cat>-<i>", or none when every variant it has is taken (the stream goes on past the full
    list's 100 where it must)."""
    out: list[str] = []
    size = TOYWORLD_SIZE
    while len(out) < TOYWORLD_SIZE:
        size *= 2
        out = []
        for i, caption in enumerate(_toyworld(category, size)):
            try:
                rng = random.Random(f"toyworld-open-{category}-{i}")
                out.append(open_variant(grammar.parse_caption(caption), rng, set(out), draws=OPEN_LIST_DRAWS))
            except RuntimeError:
                continue  # every open variant of this scene is in the list already
            if len(out) == TOYWORLD_SIZE:
                break
    return tuple(out)


@functools.cache
def _toyworld_standard() -> tuple[str, ...]:
    """STANDARD_PER_KIND distinct indices per built-in toyworld list, drawn from one seeded stream (full then
    open, by category), interleaved round by round: (full single, full surroundings, full multiple, open
    single, open surroundings, open multiple), then the next round."""
    rng = random.Random(STANDARD_SEED)
    names = [f"toyworld_{c}" for c in grammar.CATEGORIES] + [f"toyworld_open_{c}" for c in grammar.CATEGORIES]
    drawn = {name: rng.sample(range(TOYWORLD_SIZE), STANDARD_PER_KIND) for name in names}
    return tuple(prompt_list(name)[drawn[name][r]] for r in range(STANDARD_PER_KIND) for name in names)


def t3bench_file(category: str, root: str | os.PathLike | None = None) -> Path:
    """The T3Bench prompt file of a category inside ``root`` (default: ``$T3BENCH_ROOT``)."""
    stem = T3BENCH_STEMS[category]
    expected = f"data/prompt_{stem}.txt"
    root = root if root is not None else os.environ.get(T3BENCH_ENV)
    if not root:
        raise FileNotFoundError(
            f"t3bench_{category} is not shipped with lods: set {T3BENCH_ENV} to a clone of the T3Bench repository "
            f"({T3BENCH_URL}); expected file: ${T3BENCH_ENV}/{expected}"
        )
    root = Path(root).expanduser()
    candidates = [root / expected, root / f"prompt_{stem}.txt", root / f"{category}.txt"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"t3bench_{category}: {T3BENCH_ENV}={root} has no {expected} (nor {candidates[1].name} or "
        f"{candidates[2].name}); set {T3BENCH_ENV} to a clone of the T3Bench repository ({T3BENCH_URL})"
    )


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """One prompt per line of a text file; blank lines and ``#`` comments skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt list file '{path}' does not exist; give a built-in list ({_allowed()})")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"prompt list file '{path}' holds no prompts (blank lines and # comments are skipped)")
    return prompts


def prompt_list(name: str | os.PathLike, root: str | os.PathLike | None = None) -> list[str]:
    """The prompts of a list: a built-in name (see LISTS) or a path to a .txt file.

    ``root`` is the T3Bench clone for the ``t3bench_*`` lists (default: ``$T3BENCH_ROOT``).
    """
    name = os.fspath(name)
    if name == STANDARD:
        return list(_toyworld_standard())
    category = category_of(name)
    if category is None:
        return read_prompt_file(name)
    if name.startswith("toyworld_open_"):
        return list(_toyworld_open(category))
    if name.startswith("toyworld_"):
        return list(_toyworld(category))
    return read_prompt_file(t3bench_file(category, root))


def prompt_at(name: str | os.PathLike, index: int, root: str | os.PathLike | None = None) -> str:
    """The ``index``-th prompt (from 0) of a list."""
    prompts = prompt_list(name, root)
    try:
        index = operator.index(index)
    except TypeError:
        raise TypeError(f"prompt index must be an integer, got {index!r}") from None
    if not 0 <= index < len(prompts):
        raise IndexError(f"index {index} out of range for {os.fspath(name)} (0..{len(prompts) - 1})")
    return prompts[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lods.prompts", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help=f"a list to print: {_allowed()}")
    args = parser.parse_args(argv)
    if args.name is None:
        width = max(map(len, [*LISTS, *MIXED_LISTS]))
        for name, category in [*LISTS.items(), *((name, "mixed") for name in MIXED_LISTS)]:
            try:
                count = f"{len(prompt_list(name)):4d} prompts"
            except FileNotFoundError:
                count = f"   - (not found: set {T3BENCH_ENV} to a clone of {T3BENCH_URL})"
            print(f"{name:<{width}}  {category:<12}  {count}")
        print("or a path to a .txt file (one prompt per line)")
        return 0
    try:
        prompts = prompt_list(args.name)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    digits = len(str(len(prompts) - 1))
    for i, prompt in enumerate(prompts):
        print(f"{i:>{digits}}  {prompt}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

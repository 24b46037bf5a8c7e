"""``python -m lods.toyworld``: the world's vocabulary, its size and sample captions; or a ground-truth render.

python -m lods.toyworld                                  # vocabulary, scene counts, open captions, samples
python -m lods.toyworld --samples 10 --seed 1
python -m lods.toyworld --forms                          # every caption form (open ones too) and its set size
python -m lods.toyworld --forms surroundings
python -m lods.toyworld --set "a cube on a floor"        # an open caption's set: size, open attributes, members
python -m lods.toyworld --render "a red cube with a blue front" --out red_cube.png   # EVAL_VIEWS grid
python -m lods.toyworld --benchmark                      # renderer frames per second
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from lods.toyworld import grammar, render


def describe(console: Console, samples: int, seed: int) -> None:
    vocab = Table(title="toyworld vocabulary", show_lines=False)
    vocab.add_column("class")
    vocab.add_column("words")
    for name, values in grammar.vocabulary().items():
        vocab.add_row(name, ", ".join(values))
    vocab.add_row("tokens", " ".join(grammar.words()))
    console.print(vocab)

    counts = Table(title="scenes and captions per category")
    for column in ("category", "scenes", "captions", "open captions", "forms", "open forms", "largest set"):
        counts.add_column(column, justify="left" if column in ("category", "largest set") else "right")
    for category in (*grammar.CATEGORIES, None):
        forms = grammar.open_forms(category)
        largest = max(forms, key=lambda f: f.size)
        counts.add_row(
            category or "all",
            f"{grammar.count_scenes(category):,}",
            f"{grammar.count_captions(category):,}",
            f"{grammar.count_captions(category, open_only=True):,}",
            str(len(forms)),
            str(sum(f.size > 1 for f in forms)),
            f"{largest.size:,} ({largest.template})",
        )
    console.print(counts)
    console.print(
        "Open captions leave words unsaid and name the set of scenes consistent with them; a caption's set is the "
        "product of its phrases' sets (python -m lods.toyworld --forms lists every form)."
    )
    console.print(forms_table(grammar.open_forms("single"), "single-object caption forms"))

    for category in grammar.CATEGORIES:
        console.print(f"[bold]{category}[/bold]")
        for caption in grammar.sample_captions(samples, seed, category):
            console.print(f"  {caption}")
        for caption in grammar.sample_open_captions(samples, seed, category):
            size = grammar.count_consistent(caption)
            console.print(f"  {caption}  [dim]({size:,} scene{'s' * (size != 1)})[/dim]")


def forms_table(forms: list[grammar.OpenForm], title: str) -> Table:
    table = Table(title=title)
    for column in ("category", "form", "set size", "captions", "example"):
        table.add_column(column, justify="right" if column in ("set size", "captions") else "left")
    for form in sorted(forms, key=lambda f: (grammar.CATEGORIES.index(f.category), f.size)):
        table.add_row(form.category, form.template, f"{form.size:,}", f"{form.captions:,}", form.example)
    return table


def describe_set(console: Console, caption: str, limit: int) -> None:
    """An open caption's canonical form, its set's size, its open attributes and its first members."""
    spec = grammar.parse_open_caption(caption)
    size = grammar.count_consistent(spec)
    console.print(f"[bold]{grammar.open_caption(spec)}[/bold]: {size:,} scene{'s' * (size != 1)} ({spec.category})")
    for name, values in grammar.open_attributes(spec).items():
        console.print(f"  {name}: {', '.join('none' if v is None else str(v) for v in values)}")
    for scene in grammar.consistent_scenes(spec)[:limit]:
        console.print(f"  {grammar.scene_caption(scene)}")
    if size > limit:
        console.print(f"  ... and {size - limit:,} more")


def save_grid(caption: str, out: Path, size: int) -> Path:
    """Ground truth of ``caption`` at render.EVAL_VIEWS, one row of views (left to right in view order)."""
    gt = render.render_caption(caption, [az for az, _ in render.EVAL_VIEWS], [el for _, el in render.EVAL_VIEWS], size)
    grid = np.concatenate(list(gt.rgb.permute(0, 2, 3, 1).numpy()), axis=1)  # [size, views * size, 3]
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lods.toyworld", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5, help="sample captions (and open captions) per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--forms",
        nargs="?",
        const="all",
        choices=[*grammar.CATEGORIES, "all"],
        help="list every caption form (of one category) with its set size",
    )
    parser.add_argument("--set", metavar="CAPTION", help="show the set of scenes an (open) caption names")
    parser.add_argument("--limit", type=int, default=20, help="members listed by --set")
    parser.add_argument("--render", metavar="CAPTION", help="save a ground-truth grid of this caption")
    parser.add_argument("--out", type=Path, default=Path("toyworld.png"), help="PNG path for --render")
    parser.add_argument("--size", type=int, default=render.DEFAULT_SIZE, help="pixels per view for --render")
    parser.add_argument("--benchmark", action="store_true", help="measure rendering frames per second")
    args = parser.parse_args(argv)
    console = Console()
    if args.render:
        try:
            path = save_grid(args.render, args.out, args.size)
        except ValueError as error:
            parser.error(str(error))
        views = ", ".join(f"({az:g}, {el:g})" for az, el in render.EVAL_VIEWS)
        console.print(f"wrote {path}: {args.size}px views at (azimuth, elevation) {views}")
    elif args.set:
        try:
            describe_set(console, args.set, args.limit)
        except ValueError as error:
            parser.error(str(error))
    elif args.forms:
        category = None if args.forms == "all" else args.forms
        console.print(forms_table(grammar.open_forms(category), "caption forms (set size 1: fully specified)"))
    elif args.benchmark:
        render.benchmark_fps()
    else:
        describe(console, args.samples, args.seed)


if __name__ == "__main__":
    main()

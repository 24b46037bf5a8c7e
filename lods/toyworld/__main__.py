"""``python -m lods.toyworld``: the world's vocabulary, its size and sample captions; or a ground-truth render.

python -m lods.toyworld                                  # vocabulary, scene counts, samples
python -m lods.toyworld --samples 10 --seed 1
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

    counts = Table(title="scenes per category")
    counts.add_column("category")
    counts.add_column("scenes", justify="right")
    for category in grammar.CATEGORIES:
        counts.add_row(category, f"{grammar.count_scenes(category):,}")
    counts.add_row("all", f"{grammar.count_scenes():,}")
    console.print(counts)

    for category in grammar.CATEGORIES:
        console.print(f"[bold]{category}[/bold]")
        for caption in grammar.sample_captions(samples, seed, category):
            console.print(f"  {caption}")


def save_grid(caption: str, out: Path, size: int) -> Path:
    """Ground truth of ``caption`` at render.EVAL_VIEWS, one row of views (left to right in view order)."""
    gt = render.render_caption(caption, [az for az, _ in render.EVAL_VIEWS], [el for _, el in render.EVAL_VIEWS], size)
    grid = np.concatenate(list(gt.rgb.permute(0, 2, 3, 1).numpy()), axis=1)  # [size, views * size, 3]
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lods.toyworld", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5, help="sample captions per category")
    parser.add_argument("--seed", type=int, default=0)
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
    elif args.benchmark:
        render.benchmark_fps()
    else:
        describe(console, args.samples, args.seed)


if __name__ == "__main__":
    main()

"""Does the prior follow its view words? Its own samples per view suffix, against the ground truth seen from there.

For each category, a fixed set of scenes is sampled once per view word ("<caption>, front view", ... side,
back, overhead) with DDIM. Each sample is scored twice against its scene's ground truth: at the best view
*within* the named range (as every toyworld metric does) and at the best view *anywhere* around the scene.
The gap between the two PSNRs says whether the sample shows the scene from where the caption asked:

- ``view_gap``: PSNR at the best view anywhere minus PSNR at the best view in range (dB, >= 0). Zero when
  the sample looks like the named view at least as much as like any other; large when it shows another
  side, e.g. the front of a sphere in front of a wall for "back view". A scene that looks the same from
  everywhere (a plain sphere on its own) gives zero whatever the sample shows: it cannot be told.
- ``view_accuracy``: share of samples whose gap is below ``GAP_DB`` (0.5 dB).
- ``psnr``, ``iou``: at the best view in range, as in the model card's sample-quality table.

    python -m lods.toyworld.view_check                         # the shipped prior
    python -m lods.toyworld.view_check --model DIR --per-category 6 --json out.json
    python -m lods.toyworld.view_check --categories surroundings --per-category 12   # walls and floors apart
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from lods.cameras import view_direction
from lods.toyworld import grammar
from lods.toyworld.evaluate import _slice, candidate_views, sample
from lods.toyworld.metrics import image_metrics
from lods.toyworld.render import default_cameras, render_scene

VIEW_WORDS = ("front", "side", "back", "overhead")
GAP_DB = 0.5


def view_check_captions(
    per_category: int, seed: int = 4321, categories: Sequence[str] = grammar.CATEGORIES
) -> list[tuple[str, str]]:
    """(category, caption without suffix): a fixed, seeded set of ``per_category`` scenes per category (a
    category's scenes are the same whichever others are asked for)."""
    unknown = sorted(set(categories) - set(grammar.CATEGORIES))
    if unknown:
        raise ValueError(f"unknown categories {unknown}; choose from: {', '.join(grammar.CATEGORIES)}")
    return [
        (category, caption)
        for i, category in enumerate(grammar.CATEGORIES)
        if category in categories
        for caption in grammar.sample_captions(per_category, seed + i, category)
    ]


def backdrop(caption: str) -> str | None:
    """ "floor" or "wall" for a surroundings caption, else None."""
    scene = grammar.parse_caption(caption)
    return "floor" if scene.floor is not None else "wall" if scene.wall is not None else None


def score_view(image: torch.Tensor, caption: str, view: str) -> dict[str, float]:
    """Metrics of one sample [3, H, W] for ``caption`` at the named view, and its gap to the best view anywhere.

    Every candidate view is rendered once; as in ``evaluate.best_view`` the best view is the one of least
    squared error, here both among all views and among those in the named range."""
    views = candidate_views(None)
    gt = render_scene(
        grammar.parse_caption(caption), default_cameras([a for a, _ in views], [e for _, e in views], image.shape[-1])
    )
    errors = ((gt.rgb - image[None].to(gt.rgb)) ** 2).mean(dim=(1, 2, 3))
    in_range = torch.tensor([view_direction(a, e) == view for a, e in views])
    if not in_range.any():
        raise ValueError(f"no candidate view is a '{view}' view; choose one of: {', '.join(VIEW_WORDS)}")
    best = int(errors.argmin())
    named = int(torch.where(in_range, errors, torch.inf).argmin())

    def metrics_at(i: int) -> dict[str, float]:
        return image_metrics(image[None], _slice(gt, i))

    metrics = metrics_at(named)
    gap = max(0.0, metrics_at(best)["psnr"] - metrics["psnr"])
    azimuth, elevation = views[named]
    return {
        "psnr": metrics["psnr"],
        "iou": metrics["iou"],
        "view_gap": gap,
        "view_correct": float(gap < GAP_DB),
        "azimuth": azimuth,
        "elevation": elevation,
    }


@torch.no_grad()
def evaluate_view_words(
    model,
    per_category: int = 4,
    seed: int = 0,
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    categories: Sequence[str] = grammar.CATEGORIES,
) -> dict:
    """Per caption and view word, then per (category, view word): psnr, iou, view_gap, view_accuracy."""
    scenes = view_check_captions(per_category, categories=categories)
    rows = []
    for v, view in enumerate(VIEW_WORDS):
        captions = [grammar.with_view_suffix(caption, view) for _, caption in scenes]
        images = sample(model, captions, num_steps=num_steps, guidance_scale=guidance_scale, seed=seed + v)
        for (category, caption), image in zip(scenes, images):
            scores = score_view(image.cpu(), caption, view)
            rows.append(
                {"category": category, "backdrop": backdrop(caption), "caption": caption, "view": view, **scores}
            )
    return {"per_caption": rows, "table": view_table(rows)}


def view_table(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """group -> view word -> mean psnr, iou, view_gap, view_accuracy and count. Groups: each category, the
    surroundings split by backdrop ("surroundings: wall", "surroundings: floor"; rows that name their
    ``backdrop``), and "all"."""
    groups = {}
    for category in grammar.CATEGORIES:
        groups[category] = (category, None)
        if category == "surroundings":
            groups |= {f"surroundings: {b}": (category, b) for b in grammar.BACKDROPS}
    groups["all"] = ("all", None)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for group, (category, kind) in groups.items():
        for view in VIEW_WORDS:
            picked = [
                r
                for r in rows
                if r["view"] == view and category in (r["category"], "all") and kind in (None, r.get("backdrop"))
            ]
            if not picked:
                continue
            n = len(picked)
            table.setdefault(group, {})[view] = {
                "psnr": sum(r["psnr"] for r in picked) / n,
                "iou": sum(r["iou"] for r in picked) / n,
                "view_gap": sum(r["view_gap"] for r in picked) / n,
                "view_accuracy": sum(r["view_correct"] for r in picked) / n,
                "count": float(n),
            }
    return table


def markdown(table: dict) -> str:
    """One row per category, view words as column groups: 'accuracy / gap dB / PSNR'."""
    header = "| category | " + " | ".join(f"{v} view: acc. / gap dB / PSNR" for v in VIEW_WORDS) + " |\n"
    lines = [header + "|---|" + "---|" * len(VIEW_WORDS)]
    for category, views in table.items():
        cells = []
        for view in VIEW_WORDS:
            m = views.get(view)
            cells.append("–" if m is None else f"{m['view_accuracy']:.2f} / {m['view_gap']:.1f} / {m['psnr']:.1f}")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from lods.toyworld.model import PRIOR_DIR, load_prior

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=PRIOR_DIR)
    parser.add_argument("--per-category", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", default=",".join(grammar.CATEGORIES), help="comma-separated")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.per_category < 1:
        raise SystemExit(f"--per-category must be at least 1, got {args.per_category}")
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    try:
        view_check_captions(1, categories=categories)
    except ValueError as error:
        raise SystemExit(f"--categories: {error}") from None
    model = load_prior(str(args.model), device="cpu")
    result = evaluate_view_words(model, args.per_category, args.seed, args.steps, args.guidance, categories)
    print(markdown(result["table"]))
    if args.json:
        record = {**result, "model": str(args.model), "steps": args.steps, "guidance_scale": args.guidance}
        record |= {"seed": args.seed, "per_category": args.per_category}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

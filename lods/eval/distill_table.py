"""The 2D distillation table: every prior on toyworld captions of the three categories, scored
against ground truth (the 2D analogue of the LODS paper's Table 1).

    python -m lods.eval.distill_table --per-category 4 --steps 300 --out bench/distill_2d

Generation priors run ``task=text_to_image`` on each caption. DDS, an editing prior, edits the
ground-truth render of the same scene with its first object's colour changed (source caption)
towards the caption. Guidance weights and learning rates are the configs' 2D defaults
(conf/prior/*.yaml, from shared/design/PRIORS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lods.toyworld import grammar
from lods.toyworld.evaluate import METRIC_KEYS, evaluation_captions
from lods.toyworld.render import default_cameras, render_scene
from lods.training import run_quietly
from lods.utils.images import save_grid

GENERATION_PRIORS = ("sds", "sds_ref", "lods_embedding", "lods_lora", "vsd", "sdi")
EDITING_PRIORS = ("dds",)
VIEW_CAMERA = {
    "front": (0.0, 15.0),
    "side": (90.0, 15.0),
    "back": (180.0, 15.0),
    "overhead": (0.0, 75.0),
    None: (0.0, 15.0),
}


def recoloured(caption: str) -> str:
    """The caption with its first object in another colour (the editing source)."""
    base, view = grammar.split_view_suffix(caption)
    scene = grammar.parse_caption(base)
    first = scene.objects[0]
    taken = {first.colour, first.marker_colour}
    colour = next(c for c in grammar.COLOURS if c not in taken)
    objects = (dataclasses.replace(first, colour=colour), *scene.objects[1:])
    source = grammar.scene_caption(dataclasses.replace(scene, objects=objects))
    return grammar.with_view_suffix(source, view) if view else source


def editing_source(caption: str, folder: Path) -> tuple[str, Path]:
    """(source caption, a PNG of its ground truth seen from the caption's view)."""
    source = recoloured(caption)
    base, view = grammar.split_view_suffix(source)
    azimuth, elevation = VIEW_CAMERA[view]
    gt = render_scene(grammar.parse_caption(base), default_cameras([azimuth], [elevation]))
    path = folder / f"{abs(hash(source))}.png"
    save_grid(gt.rgb, path)
    return source, path


def run_table(per_category: int, steps: int, overrides: list[str], out: Path | None, priors=None) -> dict:
    priors = priors or (*GENERATION_PRIORS, *EDITING_PRIORS)
    captions = evaluation_captions(per_category)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for prior in priors:
            for i, caption in enumerate(captions):
                task = [f"prompt='{caption}'"]
                if prior in EDITING_PRIORS:
                    source, image = editing_source(caption, tmp)
                    task = [
                        "task=image_editing",
                        f"task.prompt='{caption}'",
                        f"task.source_prompt='{source}'",
                        f"task.source_image={image}",
                        "backbone.init=source",
                    ]
                metrics = run_quietly(
                    ["model=toyworld", f"prior={prior}", *task, *overrides], steps, str(tmp / f"{prior}_{i}")
                )
                row = {"prior": prior, "caption": caption, "seconds_per_step": metrics["seconds_per_step"]}
                row.update({k[3:]: v for k, v in metrics.items() if k.startswith("gt/")})
                rows.append(row)
                if out:
                    out.mkdir(parents=True, exist_ok=True)
                    image_dir = out / "images"
                    image_dir.mkdir(exist_ok=True)
                    final = tmp / f"{prior}_{i}" / "images" / "final.png"
                    final.replace(image_dir / f"{prior}_{i:02d}.png")
    table = summarize(rows)
    if out:
        (out / "results.json").write_text(
            json.dumps({"rows": rows, "table": table, "steps": steps, "overrides": overrides}, indent=2) + "\n"
        )
        (out / "table.md").write_text(markdown(table))
    return {"rows": rows, "table": table}


def summarize(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """prior -> category (and "all") -> mean of every metric."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for prior in dict.fromkeys(r["prior"] for r in rows):
        mine = [r for r in rows if r["prior"] == prior]
        table[prior] = {}
        for category in (*grammar.CATEGORIES, "all"):
            group = [r for r in mine if category == "all" or r["category"] == category]
            if group:
                table[prior][category] = {k: _mean([r[k] for r in group]) for k in (*METRIC_KEYS, "seconds_per_step")}
    return table


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def markdown(table: dict) -> str:
    keys = (*METRIC_KEYS, "seconds_per_step")
    lines = ["| prior | category | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for prior, categories in table.items():
        for category, values in categories.items():
            lines.append(f"| {prior} | {category} | " + " | ".join(f"{values[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-category", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--prior", action="append", default=None, help="only these priors (repeatable)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    result = run_table(args.per_category, args.steps, args.override, args.out, args.prior)
    console = Table(title=f"2D distillation on toyworld ({args.steps} steps)")
    for column in ("prior", "category", *METRIC_KEYS):
        console.add_column(column)
    for prior, categories in result["table"].items():
        for category, values in categories.items():
            console.add_row(prior, category, *(f"{values[k]:.3f}" for k in METRIC_KEYS))
    Console().print(console)
    return result


if __name__ == "__main__":
    main()

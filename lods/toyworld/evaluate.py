"""Score 2D results against the toyworld's ground truth, and measure the embedded prior's own samples.

A caption names a scene and, through its view suffix, a *range* of views ("front view" is any
azimuth within 45 degrees of the front below 60 degrees elevation; no suffix means any view). A 2D
result is therefore compared with the ground-truth render, among a grid of candidate cameras in
that range, that it matches best (lowest mean squared error), and the metrics are computed there.

    python -m lods.toyworld.evaluate --model lods/models/toyworld --captions 12   # prior sample quality
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import torch
from torch import Tensor

from lods.cameras import view_direction
from lods.diffusion.model import DiffusionModel
from lods.toyworld import grammar
from lods.toyworld.data import ELEVATION_RANGE
from lods.toyworld.metrics import aggregate, image_metrics
from lods.toyworld.render import DEFAULT_SIZE, GroundTruth, default_cameras, render_scene

AZIMUTH_STEP, ELEVATION_STEP = 15.0, 10.0
METRIC_KEYS = ("psnr", "ssim", "iou", "delta_e", "saturation_bias", "floater_mass")


def candidate_views(view: str | None) -> list[tuple[float, float]]:
    """(azimuth, elevation) grid of the views a caption's suffix allows (``None``: every view)."""
    azimuths = [-180.0 + AZIMUTH_STEP * i for i in range(int(360 / AZIMUTH_STEP))]
    lo, hi = ELEVATION_RANGE
    elevations = [lo + ELEVATION_STEP * i for i in range(int((hi - lo) / ELEVATION_STEP) + 1)]
    grid = list(itertools.product(azimuths, elevations))
    return [(a, e) for a, e in grid if view is None or view_direction(a, e) == view]


def best_view(image: Tensor, caption: str, size: int | None = None) -> tuple[GroundTruth, tuple[float, float]]:
    """The ground-truth render (and its view) closest to ``image`` [3, H, W] among the caption's views."""
    base, view = grammar.split_view_suffix(caption)
    views = candidate_views(view)
    size = size or image.shape[-1]
    gt = render_scene(grammar.parse_caption(base), default_cameras([a for a, _ in views], [e for _, e in views], size))
    errors = ((gt.rgb - image[None].to(gt.rgb)) ** 2).mean(dim=(1, 2, 3))
    i = int(errors.argmin())
    pick = GroundTruth(**{k: getattr(gt, k)[i : i + 1] for k in gt.__dataclass_fields__})
    return pick, views[i]


def ground_truth_metrics(images: Tensor, caption: str) -> tuple[dict[str, float], Tensor]:
    """Mean metrics of ``images`` [N, 3, H, W] against their best-matching ground-truth views, and
    those ground-truth renders [N, 3, H, W] (to save beside the result)."""
    per_image, references = [], []
    for image in images:
        gt, (azimuth, elevation) = best_view(image.float().cpu(), caption)
        metrics = image_metrics(image[None].float().cpu(), gt)
        per_image.append({**metrics, "azimuth": azimuth, "elevation": elevation})
        references.append(gt.rgb[0])
    mean = {k: sum(m[k] for m in per_image) / len(per_image) for k in per_image[0]}
    mean["category"] = grammar.parse_caption(grammar.strip_view_suffix(caption)).category
    return mean, torch.stack(references)


@torch.no_grad()
def sample(
    model: DiffusionModel,
    captions: list[str],
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    seed: int = 0,
    negative_prompt: str = "",
) -> Tensor:
    """DDIM samples (eta 0) of the model for ``captions``, images [N, 3, H, W] in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(captions), model.latent_channels, model.latent_size, model.latent_size)
    latents = torch.randn(shape, generator=generator).to(model.device)
    cond = model.text_embeddings(captions)
    uncond = model.text_embeddings(negative_prompt)
    z0 = model.ddim_sample(latents, model.num_train_timesteps - 1, num_steps, cond, uncond, guidance_scale)
    return model.decode(z0)


def evaluation_captions(per_category: int, seed: int = 1234) -> list[str]:
    """A fixed, seeded set of captions with view suffixes, ``per_category`` per category."""
    import random

    rng = random.Random(seed)
    captions = []
    for category in grammar.CATEGORIES:
        for caption in grammar.sample_captions(per_category, seed + len(captions), category):
            captions.append(grammar.with_view_suffix(caption, rng.choice(("front", "side", "back"))))
    return captions


def evaluate_prior(model: DiffusionModel, per_category: int = 8, seed: int = 0, **sample_kwargs) -> dict:
    """Sample quality of the prior against ground truth, per caption and per category."""
    captions = evaluation_captions(per_category)
    images = torch.cat(
        [sample(model, chunk, seed=seed + i, **sample_kwargs) for i, chunk in enumerate(_chunks(captions, 12))]
    )
    rows = []
    for caption, image in zip(captions, images):
        metrics, _ = ground_truth_metrics(image[None], caption)
        rows.append({"caption": caption, **metrics})
    table = aggregate([{k: r[k] for k in (*METRIC_KEYS, "category")} for r in rows])
    return {"per_caption": rows, "per_category": table, "images": images}


def _chunks(items: list, n: int):
    return [items[i : i + n] for i in range(0, len(items), n)]


def markdown_table(per_category: dict[str, dict[str, float]]) -> str:
    header = "| category | " + " | ".join(METRIC_KEYS) + " |\n|---|" + "---|" * len(METRIC_KEYS) + "\n"
    lines = []
    for category, values in per_category.items():
        cells = [f"{values.get(k, math.nan):.3f}" for k in METRIC_KEYS]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from lods.diffusion import load_model
    from lods.utils.images import save_grid

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "models" / "toyworld"))
    parser.add_argument("--per-category", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--out", type=Path, default=None, help="folder for evaluation.json and samples.png")
    args = parser.parse_args(argv)
    model = load_model(args.model, device="cpu")
    result = evaluate_prior(model, args.per_category, num_steps=args.steps, guidance_scale=args.guidance)
    print(markdown_table(result["per_category"]))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        save_grid(result["images"], args.out / "samples.png", columns=args.per_category)
        record = {k: v for k, v in result.items() if k != "images"}
        record.update(steps=args.steps, guidance_scale=args.guidance, size=DEFAULT_SIZE)
        (args.out / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

"""Fit a 3D backbone to ground-truth toyworld renders, without any prior.

This checks a renderer and its optimisation independently of the diffusion priors: a backbone
that cannot reconstruct a scene from 48 posed views cannot be blamed on SDS.

    python -m lods.eval.reconstruction --backbone gaussians --caption "a red cube" --steps 600 grow_grad2d=2e-4

(``grow_grad2d=2e-4`` is gsplat's threshold for image losses; the backbone's default is set for SDS.)

Training views are seeded random cameras over toyworld's elevation range; the held-out views
are the evaluation orbit (``lods.toyworld.render.EVAL_VIEWS``), none of which is a training view.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lods.backbones.base import Backbone3D
from lods.config import CONF_DIR
from lods.toyworld import grammar
from lods.toyworld.data import ELEVATION_RANGE
from lods.toyworld.render import DEFAULT_SIZE, default_cameras, eval_cameras, render_scene


def build_backbone(name: str, overrides: list[str] | None = None) -> Backbone3D:
    """A backbone from ``conf/backbone/<name>.yaml`` with ``key=value`` overrides."""
    path = CONF_DIR / "backbone" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))
        raise ValueError(f"unknown backbone '{name}'; choose one of: {', '.join(choices)}")
    loaded = OmegaConf.load(path)
    loaded = loaded.backbone if "backbone" in loaded else loaded  # 3D backbones are _global_ packages
    cfg = OmegaConf.merge(loaded, OmegaConf.from_dotlist(overrides or []))
    return instantiate(cfg)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 100.0 if mse == 0 else -10 * math.log10(mse)


def fit(
    backbone: Backbone3D,
    caption: str = "a red cube",
    steps: int = 500,
    num_views: int = 48,
    batch_size: int = 4,
    size: int = DEFAULT_SIZE,
    alpha_weight: float = 0.1,
    seed: int = 0,
    log_every: int = 0,
) -> dict[str, float]:
    """Optimise ``backbone`` on MSE to the caption's ground truth; PSNR on training and held-out views."""
    generator = torch.Generator().manual_seed(seed)
    lo, hi = ELEVATION_RANGE
    azimuth = torch.rand(num_views, generator=generator) * 360 - 180
    elevation = lo + torch.rand(num_views, generator=generator) * (hi - lo)
    scene = grammar.parse_caption(caption)
    cameras = default_cameras(azimuth, elevation, size)
    gt = render_scene(scene, cameras)
    heldout_cameras = eval_cameras(size)
    heldout = render_scene(scene, heldout_cameras)

    backbone.setup(None, None, generator)
    optimizer = torch.optim.Adam(backbone.param_groups())
    backbone.train()
    started = time.perf_counter()
    for step in range(steps):
        pick = torch.randperm(num_views, generator=generator)[:batch_size]
        out = backbone.render(cameras[pick], step)
        loss = torch.nn.functional.mse_loss(out.rgb, gt.rgb[pick])
        if alpha_weight and out.alpha is not None:
            loss = loss + alpha_weight * torch.nn.functional.mse_loss(out.alpha, gt.alpha[pick])
        for value in backbone.regularizers(out, step).values():
            loss = loss + value
        optimizer.zero_grad()
        loss.backward()
        backbone.after_backward(out, step, optimizer)
        optimizer.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}: loss {loss.item():.5f}", flush=True)
    seconds = time.perf_counter() - started
    train_pred = torch.cat([backbone.images(None, cameras[i : i + 8]) for i in range(0, num_views, 8)])
    heldout_pred = backbone.images(None, heldout_cameras)
    return {
        "psnr_train": psnr(train_pred, gt.rgb),
        "psnr_heldout": psnr(heldout_pred, heldout.rgb),
        "seconds": seconds,
        "seconds_per_step": seconds / max(steps, 1),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True, help="a conf/backbone/<name>.yaml (nerf, gaussians)")
    parser.add_argument("--caption", default="a red cube")
    parser.add_argument(
        "--per-category",
        type=int,
        default=0,
        help="instead of --caption: the first N prompts of each toyworld list (single, surroundings, multiple), "
        "each fitted by a fresh backbone, with per-category means",
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="write the results here (json)")
    parser.add_argument("overrides", nargs="*", help="backbone key=value overrides")
    args = parser.parse_args(argv)
    if args.per_category < 0:
        parser.error(f"--per-category must be >= 0, got {args.per_category}")
    build_backbone(args.backbone, args.overrides)  # a bad name or override fails before any fit
    if args.per_category:
        from lods.prompts import prompt_list

        captions = [
            (category, caption)
            for category in grammar.CATEGORIES
            for caption in prompt_list(f"toyworld_{category}")[: args.per_category]
        ]
    else:
        captions = [(grammar.parse_caption(args.caption).category, args.caption)]
    rows = []
    for category, caption in captions:
        result = fit(
            build_backbone(args.backbone, args.overrides),
            caption,
            args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            log_every=args.log_every,
        )
        rows.append({"category": category, "caption": caption, **result})
        print(json.dumps({"backbone": args.backbone, **rows[-1]}), flush=True)
    per_category = {}
    for category in [*grammar.CATEGORIES, "all"]:
        mine = [r for r in rows if category in ("all", r["category"])]
        if mine:
            per_category[category] = {
                k: sum(r[k] for r in mine) / len(mine) for k in ("psnr_train", "psnr_heldout", "seconds")
            } | {"count": len(mine)}
    report = {
        "backbone": args.backbone,
        "overrides": args.overrides,
        "steps": args.steps,
        "per_category": per_category,
        "fits": rows,
    }
    if len(rows) > 1:
        for category, means in per_category.items():
            print(
                f"{category:12} n={means['count']}: held-out PSNR {means['psnr_heldout']:.2f} dB, "
                f"train {means['psnr_train']:.2f} dB, {means['seconds']:.0f} s per fit"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return rows[0] if len(rows) == 1 else report


if __name__ == "__main__":
    main()

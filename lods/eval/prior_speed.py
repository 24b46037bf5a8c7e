"""Per-step time of every prior relative to SDS, split into the step's sections, measured through train().

    python -m lods.eval.prior_speed                        # toyworld, 2D latent, 30 steps per prior
    python -m lods.eval.prior_speed --backbone gaussians   # text-to-3D on 3D Gaussians (64x64 renders)
    python -m lods.eval.prior_speed --backbone nerf --override model=tiny

Each prior runs the same task, backbone and model with ``profile=true``; the first step (warm-up) is
excluded and every figure is a median over the steps. Sections: render (cameras + backbone), encode (VAE),
U-Net (its forward passes, inside the prior), prior other (the prior's own work besides the U-Net: noise,
inversion bookkeeping), losses (task losses, regularisers), backward (one backward through everything,
the prior's own update loss included), update (densification + optimiser step). DDS is an editing prior
(2D only). 3D runs skip the end-of-run exports. Peak memory is each run's (CPU resident set / CUDA allocated).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

PRIORS = ("sds", "sds_ref", "lods_embedding", "lods_lora", "vsd", "sdi", "dds")
SPLIT = ("render", "encode", "unet", "prior_other", "losses", "backward", "update")
KEEP = ("seconds_per_step", "unet_calls_per_step", "peak_memory_mb", "model", "model/random_weights")


def configuration(prior: str, backbone: str = "image") -> list[str] | None:
    """The overrides that run ``prior`` on ``backbone``: DDS on the editing task (2D only: None elsewhere), the
    others on text-to-image or text-to-3D (3D without the end-of-run exports)."""
    if prior == "dds":
        return ["task=image_editing", "backbone.init=source"] if backbone == "image" else None
    if backbone == "image":
        return []
    return [f"backbone={backbone}", "export.frames=0", "export.assets=false"]


def measure_one(
    prior: str, steps: int, overrides: list[str], backbone: str, run_dir: str | Path, accelerator: str = "cpu"
) -> dict:
    """One prior's seconds per step, its split (``time/<section>``), U-Net passes per step and peak memory,
    measured by a quiet ``train()`` of ``steps`` steps with ``profile=true``."""
    from lods.training import run_quietly

    task = configuration(prior, backbone)
    if task is None:
        raise ValueError(f"prior '{prior}' does not run on backbone '{backbone}' (DDS edits 2D images: backbone=image)")
    metrics = run_quietly([f"prior={prior}", "profile=true", *task, *overrides], steps, run_dir, accelerator)
    return {k: v for k, v in metrics.items() if k in KEEP or k.startswith("time/")}


def measure(steps: int, overrides: list[str], priors=PRIORS, backbone: str = "image") -> dict[str, dict]:
    """:func:`measure_one` for each prior that runs on ``backbone``, in this process, on the CPU."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prior in priors:
            if configuration(prior, backbone) is not None:
                results[prior] = measure_one(prior, steps, overrides, backbone, f"{tmp}/{prior}")
    return results


def table(results: dict[str, dict], title: str) -> Table:
    sds = results["sds"]["seconds_per_step"]
    out = Table(title=title)
    for column in ("prior", "s/step", "× SDS", *SPLIT, "U-Net passes", "peak MiB"):
        out.add_column(column, justify="left" if column == "prior" else "right")
    for prior, r in results.items():
        split = [f"{r.get(f'time/{s}', float('nan')):.4f}" for s in SPLIT]
        out.add_row(
            prior,
            f"{r['seconds_per_step']:.4f}",
            f"{r['seconds_per_step'] / sds:.2f}",
            *split,
            f"{r.get('unet_calls_per_step', float('nan')):.0f}",
            f"{r.get('peak_memory_mb', float('nan')):.0f}",
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--backbone", default="image", help="image (2D), nerf or gaussians (text-to-3D)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results = measure(args.steps, args.override, backbone=args.backbone)
    title = f"median seconds per step and its split, backbone={args.backbone} ({args.steps} steps)"
    Console(width=200).print(table(results, title))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()

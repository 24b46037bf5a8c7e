"""Per-step time of every prior relative to SDS, measured in one process through train().

    python -m lods.eval.prior_speed                        # toyworld, 2D latent, 30 steps per prior
    python -m lods.eval.prior_speed --backbone gaussians   # text-to-3D on 3D Gaussians (64x64 renders)
    python -m lods.eval.prior_speed --backbone nerf --override model=tiny

Each prior runs the same task, backbone and model; the first step (warm-up) is excluded. DDS is an
editing prior (2D only). 3D runs skip the end-of-run exports.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

PRIORS = ("sds", "sds_ref", "lods_embedding", "lods_lora", "vsd", "sdi", "dds")


def measure(steps: int, overrides: list[str], priors=PRIORS, backbone: str = "image") -> dict[str, float]:
    """Seconds per step of each prior (editing task for DDS, text-to-image/3D for the others)."""
    from lods.eval.runs import run_quietly

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prior in priors:
            if backbone != "image" and prior == "dds":
                continue
            task = ["task=image_editing", "backbone.init=source"] if prior == "dds" else []
            if backbone != "image":
                task = [f"backbone={backbone}", "export.frames=0", "export.assets=false"]
            metrics = run_quietly([f"prior={prior}", *task, *overrides], steps, f"{tmp}/{prior}")
            results[prior] = metrics["seconds_per_step"]
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--backbone", default="image", help="image (2D), nerf or gaussians (text-to-3D)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results = measure(args.steps, args.override, backbone=args.backbone)
    table = Table(title=f"median seconds per step, backbone={args.backbone} ({args.steps} steps)")
    for column in ("prior", "s/step", "ratio to SDS"):
        table.add_column(column)
    for prior, seconds in results.items():
        table.add_row(prior, f"{seconds:.4f}", f"{seconds / results['sds']:.2f}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()

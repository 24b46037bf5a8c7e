"""Exports of a 3D run: a turntable video and the backbone's asset files (mesh, .ply).

Every 3D run exports at its end (``<run_dir>/export/``); an existing run directory exports again
on demand, from its last checkpoint, into a directory of its own:

    python -m lods.export outputs/2026-11-22/12-00-00 --frames 72 --size 128 --out turntable_hd

The turntable is an mp4 (imageio-ffmpeg) or, where ffmpeg is missing, a gif.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch import Tensor

from lods.utils.images import to_uint8

log = logging.getLogger(__name__)

RENDER_CHUNK = 8  # views rendered together


def write_video(frames: Tensor, path: str | Path, fps: int = 12) -> Path:
    """Frames [N, 3, H, W] in [0, 1] -> ``path`` with suffix .mp4, or .gif when ffmpeg is unavailable."""
    import imageio.v2 as imageio

    path = Path(path).with_suffix(".mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [to_uint8(frame) for frame in frames]
    try:
        import imageio_ffmpeg  # noqa: F401

        with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as writer:
            for image in images:
                writer.append_data(image)
        return path
    except (ImportError, RuntimeError, OSError) as err:
        log.warning("no mp4 writer (%s); writing a gif instead", err)
        path.unlink(missing_ok=True)
        gif = path.with_suffix(".gif")
        imageio.mimsave(gif, images, duration=1000 / fps, loop=0)
        return gif


@torch.no_grad()
def render_views(backbone, cameras) -> Tensor:
    """Evaluation-mode renders [N, 3, H, W] of any number of cameras, a chunk at a time, on the CPU."""
    chunks = [backbone.images(None, cameras[i : i + RENDER_CHUNK]).cpu() for i in range(0, len(cameras), RENDER_CHUNK)]
    return torch.cat(chunks)


def export_assets(
    system, directory: str | Path, frames: int = 36, fps: int = 12, size: int | None = None, assets: bool = True
) -> list[Path]:
    """Turntable video (``frames`` > 0) + the backbone's files (``assets``) into ``directory``; logged to
    every logger that takes them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    if frames > 0:
        cameras = system.task.turntable_cameras(frames, size).to(system.model.device)
        paths.append(write_video(render_views(system.backbone, cameras), directory / "turntable", fps))
    if assets:
        paths += [Path(p) for p in system.backbone.export(directory)]
    for logger in system.loggers:
        _log_files(logger, paths, system.global_step)
    return paths


def _log_files(logger, paths: list[Path], step: int) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    import wandb

    for path in paths:
        try:
            if path.suffix in (".mp4", ".gif"):
                logger.log_video(key="turntable", videos=[str(path)], step=step)
            elif path.suffix in (".obj", ".glb"):
                logger.experiment.log({f"mesh{path.suffix.replace('.', '_')}": wandb.Object3D(str(path))}, step=step)
            else:
                logger.experiment.save(str(path), base_path=str(path.parent), policy="now")
        except Exception as err:  # a logging failure must not lose the run's results
            log.warning("could not log %s to W&B: %s", path, err)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a 3D run directory (config.yaml + checkpoints/last.ckpt)")
    parser.add_argument("--out", default=None, help="directory to write into (default <run_dir>/export-<step>)")
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--size", type=int, default=None, help="turntable resolution (default: the run's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    from lods.runs import load_system

    system, step = load_system(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"export-step{step:06d}"
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"'{out}' already holds files; refusing to overwrite them (choose another --out)")
    paths = export_assets(system, out, args.frames, args.fps, args.size)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()

"""A run directory, read back: its config, metrics, images, checkpoint and the system they describe.

Training writes a run (``lods.training``); export, evaluation and the benchmarks read it through this module,
so that imports go one way: entry points (train.py, ``python -m lods.export``, ``lods.eval.*``) -> training ->
runs -> system -> backbones, priors, tasks -> diffusion.

    <run_dir>/config.yaml             the resolved config
    <run_dir>/metrics.json            final metrics (a finished run)
    <run_dir>/images/final_<i>.png    the result, one image per particle or evaluation view
    <run_dir>/checkpoints/last.ckpt   the last checkpoint
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import lods.config  # noqa: F401  (registers the config resolvers a saved config may use)
from lods.system import ScoreDistillationSystem

CONFIG_FILE = "config.yaml"
RESULT_FILE = "metrics.json"
CHECKPOINT = "checkpoints/last.ckpt"


class RunDirectoryError(RuntimeError):
    """A run would overwrite finished work, or a directory is not the run it should be."""


def _require(run_dir: str | Path, relative: str) -> Path:
    run_dir = Path(run_dir).expanduser().resolve()
    path = run_dir / relative
    if not path.is_file():
        raise RunDirectoryError(f"'{run_dir}' has no {relative}: is it a lods run directory?")
    return path


def read_config(run_dir: str | Path) -> DictConfig:
    """The resolved config a run was started with."""
    return OmegaConf.load(_require(run_dir, CONFIG_FILE))


def read_metrics(run_dir: str | Path) -> dict:
    """A finished run's ``metrics.json``."""
    return json.loads(_require(run_dir, RESULT_FILE).read_text())


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """``checkpoints/last.ckpt`` where the run has one."""
    path = Path(run_dir).expanduser().resolve() / CHECKPOINT
    return path if path.is_file() else None


def final_images(run_dir: str | Path) -> torch.Tensor:
    """``images/final_<i>.png`` of a run, in index order, as [N, 3, H, W] floats in [0, 1]."""
    from PIL import Image

    run_dir = Path(run_dir)
    files = sorted((run_dir / "images").glob("final_*.png"), key=lambda f: int(f.stem.split("_")[1]))
    if not files:
        raise FileNotFoundError(f"no images/final_*.png in {run_dir}")
    arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def build_system(cfg: DictConfig, run_dir: Path | None = None) -> ScoreDistillationSystem:
    """The LightningModule a config describes (model, prior, backbone, task, schedules)."""
    return ScoreDistillationSystem(
        model=instantiate(cfg.model),
        prior=instantiate(cfg.prior),
        backbone=instantiate(cfg.backbone),
        task=instantiate(cfg.task),
        cfg_schedule=instantiate(cfg.cfg_schedule),
        optimizer=instantiate(cfg.optimizer),
        max_steps=cfg.trainer.max_steps,
        seed=cfg.seed,
        image_every=cfg.image_every,
        run_dir=run_dir,
        profile=cfg.get("profile", False),
    )


def load_system(run_dir: str | Path) -> tuple[ScoreDistillationSystem, int]:
    """A run's system restored from its last checkpoint (eval mode), and that checkpoint's step."""
    run_dir = Path(run_dir).expanduser().resolve()
    cfg = read_config(run_dir)
    checkpoint = _require(run_dir, CHECKPOINT)
    system = build_system(cfg, run_dir)
    state = torch.load(checkpoint, map_location=system.model.device, weights_only=False)
    system.on_load_checkpoint(state)
    system.load_state_dict(state["state_dict"])
    system.eval()
    return system, int(state["global_step"])

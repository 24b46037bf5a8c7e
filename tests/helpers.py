"""Compose the project's Hydra config the way train.py does (for in-process runs)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict

from lods.config import CONF_DIR, compose_config

ROOT = Path(__file__).resolve().parent.parent
CONF = CONF_DIR


def make_config(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    cfg = compose_config(overrides, run_dir)
    with open_dict(cfg):
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.enable_progress_bar = False
    return cfg

"""Compose the project's Hydra config the way train.py does (for in-process runs)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import lods.config  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def make_config(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir) if run_dir else None
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.enable_progress_bar = False
    return cfg

"""Loggers: W&B offline unless the user is logged in."""

from __future__ import annotations

import netrc
import os


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(save_dir: str, project: str = "lods", name: str | None = None, group: str | None = None, **kwargs):
    """A Lightning WandbLogger: online only with credentials (or WANDB_MODE=online), offline otherwise."""
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_credentials_present() else "offline")
    return WandbLogger(
        save_dir=save_dir, project=project, name=name or None, group=group, offline=mode == "offline", **kwargs
    )

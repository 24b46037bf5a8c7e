"""Loggers: W&B offline unless the user is logged in; a CSV logger that keeps a resumed run's history."""

from __future__ import annotations

import csv
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter as _LightningWriter


class _AppendingWriter(_LightningWriter):
    def _check_log_dir_exists(self) -> None:
        pass  # Lightning deletes an existing metrics.csv here; a resumed run appends to it instead


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger, except that it appends to an existing ``metrics.csv`` (resumed runs)."""

    @property
    def experiment(self) -> _LightningWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def drop_rows_from(csv_path: str | os.PathLike, step: int) -> None:
    """Remove the rows of ``step`` and later from a metrics CSV (a resumed run logs them again)."""
    path = Path(csv_path)
    if not path.is_file():
        return
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames or [], [r for r in reader if r.get("step") and int(float(r["step"])) < step]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


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

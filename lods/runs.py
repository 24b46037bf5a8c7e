"""A run directory, read back: its config, metrics, images, checkpoint and the system they describe.

Training writes a run (``lods.training``); export, evaluation and the benchmarks read it through this module,
so that imports go one way: entry points (train.py, ``python -m lods.export``, ``lods.eval.*``) -> training ->
runs -> system -> backbones, priors, tasks -> diffusion.

    <run_dir>/config.yaml             the resolved config
    <run_dir>/recipe.json             the settings that make the run what it is, with the digest of its weights
    <run_dir>/metrics.json            final metrics (a finished run)
    <run_dir>/images/final_<i>.png    the result, one image per particle or evaluation view
    <run_dir>/checkpoints/last.ckpt   the last checkpoint
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import lods.config  # noqa: F401  (registers the config resolvers a saved config may use)
from lods.system import ScoreDistillationSystem

CONFIG_FILE = "config.yaml"
RECIPE_FILE = "recipe.json"
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


# The settings that make a run what it is; not where it writes, how it logs or how often it saves.
RECIPE = ("model", "prior", "backbone", "task", "cfg_schedule", "optimizer", "trainer.max_steps", "seed")


def _flatten(value, prefix: str) -> dict[str, object]:
    if isinstance(value, dict):
        items: dict[str, object] = {}
        for key, item in value.items():
            items.update(_flatten(item, f"{prefix}.{key}"))
        return items
    return {prefix: value}


def config_changes(saved: dict, wanted: dict, limit: int = 6) -> list[str]:
    """Where two resolved configs differ: one 'key: saved -> wanted' line per dotted key (a key only one of them
    has shows as absent in the other), at most ``limit`` lines and then how many more."""
    old = {k: v for key, item in saved.items() for k, v in _flatten(item, str(key)).items()}
    new = {k: v for key, item in wanted.items() for k, v in _flatten(item, str(key)).items()}

    def said(values: dict, key: str) -> str:
        return repr(values[key]) if key in values else "(absent)"

    lines = [
        f"{key}: {said(old, key)} -> {said(new, key)}"
        for key in sorted(old.keys() | new.keys())
        if key not in old or key not in new or old[key] != new[key]
    ]
    return lines if len(lines) <= limit else [*lines[:limit], f"and {len(lines) - limit} more"]


WEIGHT_FILES = ("*.safetensors", "*.bin")


def weights_folder(model_cfg: dict) -> Path | None:
    """The local folder whose weights a model config loads: the shipped toyworld prior (``path: null``) or a
    local ``path``; None for hub ids and models built in code (their weights are named by the config alone)."""
    target = model_cfg.get("_target_", "")
    path = model_cfg.get("path")
    if target == "lods.toyworld.model.load_prior" and not path:
        from lods.toyworld.model import PRIOR_DIR

        return PRIOR_DIR
    if target.endswith("load_model") and model_cfg.get("weights", "pretrained") != "pretrained":
        return None
    if path and Path(path).expanduser().is_dir():
        return Path(path).expanduser().resolve()
    return None


def weights_digest(folder: Path) -> str | None:
    """A short SHA-256 of every weight file under ``folder`` (names and bytes, sorted), None if it holds none:
    retrained weights in the same folder make another digest."""
    files = sorted({f for pattern in WEIGHT_FILES for f in folder.rglob(pattern)})
    if not files:
        return None
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(stats)


@functools.lru_cache(maxsize=8)
def _digest(stats: tuple[tuple[str, int, int], ...]) -> str:
    sha = hashlib.sha256()
    for name, _, _ in stats:
        path = Path(name)
        sha.update(f"{path.parent.name}/{path.name}".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:16]


def recipe(cfg: DictConfig) -> dict[str, object]:
    """A config's :data:`RECIPE` settings, resolved, as {dotted key: value} (JSON-ready, for a run's record),
    with ``model.weights``, the digest of the local weights it loads (see :func:`weights_folder`), so that
    retrained weights under the same config make another recipe."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, object] = {}
    for key in RECIPE:
        node = container
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            flat.update(_flatten(node, key))
    folder = weights_folder(container.get("model") or {})
    digest = weights_digest(folder) if folder is not None else None
    if digest is not None:
        flat["model.weights"] = digest
    return flat


def write_recipe(run_dir: Path, cfg: DictConfig) -> dict[str, object]:
    """Keep the recipe a run starts with (the weights' digest too, which config.yaml cannot say) in its folder."""
    made = recipe(cfg)
    (Path(run_dir) / RECIPE_FILE).write_text(json.dumps(made, indent=1, sort_keys=True) + "\n")
    return made


def run_recipe(run_dir: str | Path) -> dict[str, object]:
    """The recipe a run was made with: its recipe.json where it has one; else (a run from before recipe.json was
    written) its config.yaml's, whose ``model.weights`` is the digest of the weights in that folder today."""
    path = Path(run_dir).expanduser().resolve() / RECIPE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return recipe(read_config(run_dir))


def weights_change(run_dir: str | Path, cfg: DictConfig) -> str | None:
    """Why the weights a run was made with may not be the ones ``cfg`` loads now (a prior retrained or replaced
    in the same folder), None where they are the same. Its recipe.json names them ('model.weights: saved ->
    now'); a run from before recipe.json was written only shows when it started (its config.yaml): weights
    written after that cannot be the ones it loaded."""
    run_dir = Path(run_dir)
    path = run_dir / RECIPE_FILE
    if path.is_file():
        saved = json.loads(path.read_text()).get("model.weights")
        now = recipe(cfg).get("model.weights")
        return None if saved == now else f"model.weights: {saved!r} -> {now!r}"
    config = run_dir / CONFIG_FILE
    folder = weights_folder(OmegaConf.to_container(cfg, resolve=True).get("model") or {})
    if folder is None or not config.is_file():
        return None
    newer = [f for pattern in WEIGHT_FILES for f in folder.rglob(pattern) if f.stat().st_mtime > config.stat().st_mtime]
    if not newer:
        return None
    return (
        f"model weights written after the run started: {newer[0]} (the run has no {RECIPE_FILE} to say which it used)"
    )


# Options added after runs were recorded, whose default on some model is not what runs before them did: the
# value in effect before the option existed. A recipe without the key had it.
BEFORE_OPTION = {
    "backbone.halo_points": 0,  # Gaussians' halo (toyworld default since the continued prior shipped)
    "backbone.halo_density": 0.0,  # NeRF's halo (toyworld default 0.2, the same day)
    "backbone.halo_fade_steps": None,  # NeRF's halo fading (toyworld default since the sitting of 2026-12-07)
}


def recipe_changes(saved: dict[str, object], wanted: DictConfig, overrides: Sequence[str] = ()) -> list[str]:
    """Where a run's ``saved`` recipe and the config asked for now (``wanted``) describe different runs: one
    'key: saved -> wanted' line per setting. A key the saved recipe lacks is an option added after the run: it
    had the value of :data:`BEFORE_OPTION` where that names one; else the option's default keeps the behaviour
    from before it, and it counts only where ``overrides`` set it."""
    named = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    changes = []
    for key, value in recipe(wanted).items():
        if key in saved and saved[key] != value:
            changes.append(f"{key}: {saved[key]!r} -> {value!r}")
        elif key not in saved and key in BEFORE_OPTION and BEFORE_OPTION[key] != value:
            changes.append(f"{key}: {BEFORE_OPTION[key]!r} (before the option) -> {value!r}")
        elif key not in saved and key not in BEFORE_OPTION and key in named:
            changes.append(f"{key}: (not an option then) -> {value!r}")
    return changes


def require_recipe(
    run_dir: str | Path, wanted: DictConfig, overrides: Sequence[str] = (), saved: dict[str, object] | None = None
) -> None:
    """Raise :class:`RunDirectoryError` where the run in ``run_dir`` was made with other settings than ``wanted``
    (e.g. a default changed since it ran), so that its results are not read back as the run asked for now.
    ``saved``: the run's recipe as its record keeps it; else the run folder's (:func:`run_recipe`); a run with
    neither (a record from before recipes were kept, its config.yaml not committed) is not checked. A config.yaml
    alone cannot say which weights the run loaded (``model.weights``): read from it, the digest is today's."""
    if saved is None:
        if not (Path(run_dir) / CONFIG_FILE).is_file():
            return
        saved = run_recipe(run_dir)
    changes = recipe_changes(saved, wanted, overrides)
    if changes:
        raise RunDirectoryError(
            f"'{run_dir}' was run with other settings than asked for now ({'; '.join(changes)}): move it to a "
            "label whose overrides name its settings, or delete it to run it again"
        )

"""OmegaConf resolvers used by the Hydra configs (registered on import, idempotently)."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import OmegaConf


def _by_dims(value_2d, value_3d, *, _root_):
    """A default that differs between 2D tasks and 3D tasks (e.g. SDS guidance 7.5 vs 100)."""
    dims = OmegaConf.select(_root_, "task.dims", default=2)
    return value_2d if dims == 2 else value_3d


TOYWORLD_LOADER = "lods.toyworld.model.load_prior"
GAUSSIANS_BACKBONE = "lods.backbones.gaussians.GaussianBackbone"
SDS_PRIOR = "lods.priors.SDS"


def _targets(root, key: str, target: str) -> bool:
    return OmegaConf.select(root, f"{key}._target_", default=None) == target


def _on_toyworld(toyworld_value, other_value, *, _root_):
    """A default measured on the embedded toyworld prior (``model=toyworld``, shipped or retrained weights),
    and the papers' value for every other model (Stable Diffusion, model=tiny...)."""
    return toyworld_value if _targets(_root_, "model", TOYWORLD_LOADER) else other_value


def _on_gaussians(gaussians_value, other_value, *, _root_):
    """A default that differs on the 3D Gaussian backbone (e.g. a guidance measured there only)."""
    return gaussians_value if _targets(_root_, "backbone", GAUSSIANS_BACKBONE) else other_value


def _on_sds(sds_value, other_value, *, _root_):
    """A backbone default measured with SDS only (NeRF's regulariser weights, set against SDS's gradient at its
    toyworld guidance; the Gaussians' larger halo, which LODS-embedding leaves as haze); every other prior keeps
    the value it was measured with."""
    return sds_value if _targets(_root_, "prior", SDS_PRIOR) else other_value


def _run_dir(resume, fresh):
    """A resumed run writes into its own directory; a new run gets a fresh, timestamped one."""
    return resume if resume else fresh


def _hydra_subdir(resume):
    """Hydra's own record of a resuming invocation goes beside the original, never over it."""
    return f".hydra/resume-{time.strftime('%Y%m%d-%H%M%S')}" if resume else ".hydra"


def register_resolvers() -> None:
    resolvers = (
        ("lods.by_dims", _by_dims),
        ("lods.on_toyworld", _on_toyworld),
        ("lods.on_gaussians", _on_gaussians),
        ("lods.on_sds", _on_sds),
        ("lods.run_dir", _run_dir),
        ("lods.hydra_subdir", _hydra_subdir),
    )
    for name, fn in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str], run_dir: str | None = None, config_name: str = "train"):
    """The config ``python train.py <overrides>`` would run, composed in-process (tests, benchmarks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir) if run_dir else None
    return cfg

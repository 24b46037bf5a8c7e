"""OmegaConf resolvers used by the Hydra configs (registered on import, idempotently)."""

from __future__ import annotations

import time

from omegaconf import OmegaConf


def _by_dims(value_2d, value_3d, *, _root_):
    """A default that differs between 2D tasks and 3D tasks (e.g. SDS guidance 7.5 vs 100)."""
    dims = OmegaConf.select(_root_, "task.dims", default=2)
    return value_2d if dims == 2 else value_3d


def _run_dir(resume, fresh):
    """A resumed run writes into its own directory; a new run gets a fresh, timestamped one."""
    return resume if resume else fresh


def _hydra_subdir(resume):
    """Hydra's own record of a resuming invocation goes beside the original, never over it."""
    return f".hydra/resume-{time.strftime('%Y%m%d-%H%M%S')}" if resume else ".hydra"


def register_resolvers() -> None:
    for name, fn in (("lods.by_dims", _by_dims), ("lods.run_dir", _run_dir), ("lods.hydra_subdir", _hydra_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()

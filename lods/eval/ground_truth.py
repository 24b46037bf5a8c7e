"""Ground-truth metrics of a finished run, when its model is the toyworld prior."""

from __future__ import annotations

import logging

from torch import Tensor

from lods.diffusion.model import DiffusionModel

log = logging.getLogger(__name__)


def ground_truth_report(model: DiffusionModel, prompt: str, images: Tensor) -> tuple[dict, Tensor] | None:
    """(metrics prefixed ``gt/``, matched ground-truth renders) for a toyworld run, else ``None``.

    The prompt names the scene and, through its view suffix, the range of views to compare with.
    """
    from lods.toyworld.model import is_toyworld

    if not is_toyworld(model):
        return None
    from lods.toyworld.evaluate import ground_truth_metrics

    try:
        metrics, references = ground_truth_metrics(images, prompt)
    except ValueError as err:  # not a caption of the toyworld grammar
        log.warning("no ground-truth metrics: %s", err)
        return None
    return {f"gt/{k}": v for k, v in metrics.items()}, references

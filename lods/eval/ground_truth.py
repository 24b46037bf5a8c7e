"""Ground-truth metrics of a finished run, when its model is the toyworld prior."""

from __future__ import annotations

import logging

from torch import Tensor

from lods.diffusion.model import DiffusionModel

log = logging.getLogger(__name__)


def ground_truth_report(model: DiffusionModel, prompt: str, images: Tensor) -> tuple[dict, Tensor] | None:
    """(metrics prefixed ``gt/``, matched ground-truth renders) for a toyworld run, else ``None``.

    The prompt names the scene and, through its view suffix, the range of views to compare with. ``images``
    [N, 3, H, W] are the run's N results (particles); numeric metrics are their means. ``gt/matched`` lists
    the full caption of the scene each result was scored against. For an open caption (a set of scenes,
    ``lods.toyworld.grammar``) each result is scored against the member and view it matches best, and
    ``gt/set_size`` and the diversity of the N results are added (``gt/distinct_scenes``,
    ``gt/attribute_entropy``, ``gt/entropy/<attribute>``, ``gt/validity@0.5``...: see
    ``lods.toyworld.metrics.diversity``). Loggers take the float entries; metrics.json takes all.
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


def ground_truth_report_3d(
    model: DiffusionModel, task, images: Tensor, alpha: Tensor | None = None
) -> tuple[dict, Tensor] | None:
    """(metrics prefixed ``gt/``, ground-truth renders) of a 3D toyworld run at its evaluation views.

    ``images`` [V, 3, H, W] and ``alpha`` [V, 1, H, W] (for the floater metric) are the run's renders of
    ``task.eval_cameras()``. Metrics are the means over the views (``lods.toyworld.metrics.caption_metrics``,
    including the marker-missing and marker-misplaced (Janus) rates); ``gt/matched`` is the full caption of
    the scene scored against. For an open caption that is the one member of its set that matches the renders
    best over all the views together (least mean squared error), and ``gt/set_size`` is the size of the set.
    """
    from lods.toyworld.model import is_toyworld

    if not is_toyworld(model):
        return None
    from lods.toyworld import grammar
    from lods.toyworld.metrics import caption_metrics
    from lods.toyworld.render import DEFAULT_DISTANCE, DEFAULT_FOVY_DEG, render_scene

    if (task.eval_distance, task.eval_fovy) != (DEFAULT_DISTANCE, DEFAULT_FOVY_DEG):
        log.warning(
            "no ground-truth metrics: the evaluation cameras (distance %s, fovy %s) are not toyworld's (%s, %s)",
            task.eval_distance,
            task.eval_fovy,
            DEFAULT_DISTANCE,
            DEFAULT_FOVY_DEG,
        )
        return None
    caption = grammar.strip_view_suffix(task.prompt)
    try:
        spec = grammar.parse_open_caption(caption)
    except ValueError as err:
        log.warning("no ground-truth metrics: %s", err)
        return None
    metrics = caption_metrics(caption, images.float().cpu(), task.eval_views(), alpha)
    metrics["views"] = len(images)
    if spec.is_open:
        metrics["set_size"] = grammar.count_consistent(spec)
    scene = grammar.parse_caption(str(metrics["matched"]))
    references = render_scene(scene, task.eval_cameras().to("cpu")).rgb
    return {f"gt/{k}": v for k, v in metrics.items()}, references

"""Ground-truth metrics: a result's renders against toyworld's renders of the same caption at the same views.

All images are [B, 3, H, W] sRGB in [0, 1] (B = views), compared pixel to pixel with a :class:`GroundTruth`.
Scalar metrics average over views as noted per metric; identical images score perfectly:
PSNR = PSNR_CAP_DB, SSIM = 1, IoU = 1, delta-E = 0, saturation bias = 0, floater mass = 0, marker missing = marker misplaced = 0.

Masks. The ground-truth foreground is ``gt.alpha > 0.5`` (objects, floor and wall). A result's foreground
is ``pred_alpha > 0.5`` when the result has an alpha channel; without one it is recovered from colour:
a pixel is foreground when some channel differs from ``render.BACKGROUND`` by more than
FOREGROUND_THRESHOLD (every lit toyworld surface differs by >= 0.09, see ``render``). For IoU the
ground-truth mask is then recovered from ``gt.rgb`` by the same rule, so that like is compared with like.

Open captions name sets of scenes: a result is scored against the member it matches best (``evaluate``),
and several results of one open caption are also scored for :func:`diversity`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lods.toyworld import grammar, render
from lods.toyworld.render import GroundTruth

PSNR_CAP_DB = 100.0  # PSNR of identical images (instead of inf)
FOREGROUND_THRESHOLD = 0.05  # max-channel |rgb - BACKGROUND| above which a pixel of an alpha-less result is foreground
FLOATER_DILATION = 2  # pixels the ground-truth silhouette grows by before opacity outside it counts as floaters
JANUS_VISIBLE = 0.05  # marker fraction of the object silhouette that counts as "visible"
JANUS_MISSING = 0.5  # a visible marker is "missing" when the result shows less than this share of it
JANUS_MARKER_DELTA_E = 20.0  # a result pixel is marker-coloured when nearest to a marker shade and this close
_SHADES = torch.linspace(0.2, 1.0, 17)  # brightness factors spanned when matching a pixel to an albedo
VALIDITY_IOU = 0.5  # a result of an open caption is "valid" when its best match reaches this IoU (diversity)


# ----------------------------------------------------------------------------------------------------------
# Colour science.


def srgb_to_lab(rgb: Tensor, dim: int = -3) -> Tensor:
    """CIE L*a*b* (D65 white) of sRGB values in [0, 1] along ``dim``: sRGB -> linear -> XYZ -> Lab."""
    rgb = rgb.movedim(dim, -1).clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = torch.tensor(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
        dtype=rgb.dtype,
        device=rgb.device,
    )
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=rgb.dtype, device=rgb.device)
    xyz = (linear @ to_xyz.T) / white
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), (kappa * xyz + 16) / 116)
    lab = torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)
    return lab.movedim(-1, dim)


def delta_e76(rgb_a: Tensor, rgb_b: Tensor, dim: int = -3) -> Tensor:
    """CIE76 colour difference: Euclidean distance in Lab (channel ``dim`` reduced)."""
    return (srgb_to_lab(rgb_a, dim) - srgb_to_lab(rgb_b, dim)).norm(dim=dim)


def hsv_saturation(rgb: Tensor, dim: int = -3) -> Tensor:
    """HSV saturation (max - min) / max, 0 for black (channel ``dim`` reduced)."""
    high, low = rgb.amax(dim), rgb.amin(dim)
    return torch.where(high > 0, (high - low) / high.clamp_min(1e-12), torch.zeros_like(high))


# ----------------------------------------------------------------------------------------------------------
# Masks.


def foreground_from_rgb(rgb: Tensor) -> Tensor:
    """[B, 1, H, W] bool: pixels whose colour differs from the background by > FOREGROUND_THRESHOLD."""
    background = torch.tensor(render.BACKGROUND, dtype=rgb.dtype, device=rgb.device)[:, None, None]
    return (rgb - background).abs().amax(1, keepdim=True) > FOREGROUND_THRESHOLD


def dilate(mask: Tensor, pixels: int) -> Tensor:
    """Binary dilation of a [B, 1, H, W] mask by a square of side 2 * pixels + 1."""
    return F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels) > 0


def erode(mask: Tensor, pixels: int) -> Tensor:
    """Binary erosion of a [B, 1, H, W] mask by a square of side 2 * pixels + 1 (outside the image is empty)."""
    return ~dilate(~F.pad(mask, (pixels,) * 4), pixels)[..., pixels:-pixels, pixels:-pixels]


def _mean_over(values: Tensor, mask: Tensor) -> float:
    """Mean of values [B, 1, H, W] over a bool mask pooled across the batch; 0 for an empty mask."""
    count = mask.sum()
    return (values * mask).sum().item() / count.item() if count > 0 else 0.0


# ----------------------------------------------------------------------------------------------------------
# Metrics.


def image_metrics(pred_rgb: Tensor, gt: GroundTruth, pred_alpha: Tensor | None = None) -> dict[str, float]:
    """Ground-truth metrics of a batch of result images [B, 3, H, W] against ``gt`` (same views).

    psnr             dB, of the mean squared error over all views (data range 1), capped at PSNR_CAP_DB
                     (a mean of per-view PSNRs would let one identical view outweigh the rest).
    ssim             torchmetrics SSIM (11x11 Gaussian window), mean over views.
    iou              foreground mask IoU (see the module docstring), mean over views; 1 when both are empty.
    delta_e          CIE76 delta-E between result and ground truth, mean over GT foreground pixels of all views.
    saturation_bias  mean HSV saturation of the result minus that of the ground truth over the same pixels;
                     positive = over-saturated.
    floater_mass     mean result opacity (pred_alpha, else the colour foreground mask) over the pixels
                     outside the GT silhouette (alpha > 0) dilated by FLOATER_DILATION pixels, all views
                     pooled; 0 = nothing floats outside the object, 1 = everything outside is opaque.
    """
    if pred_rgb.shape != gt.rgb.shape:
        raise ValueError(f"pred_rgb has shape {tuple(pred_rgb.shape)}, ground truth {tuple(gt.rgb.shape)}")
    pred_rgb = pred_rgb.to(gt.rgb)
    psnr = peak_signal_noise_ratio(pred_rgb, gt.rgb, data_range=1.0)  # of the MSE over all views
    ssim = structural_similarity_index_measure(pred_rgb, gt.rgb, data_range=1.0)

    if pred_alpha is not None:
        pred_alpha = pred_alpha.to(gt.alpha)
        pred_mask, gt_mask, opacity = pred_alpha > 0.5, gt.alpha > 0.5, pred_alpha
    else:
        pred_mask, gt_mask = foreground_from_rgb(pred_rgb), foreground_from_rgb(gt.rgb)
        opacity = pred_mask.float()
    union = (pred_mask | gt_mask).sum((1, 2, 3))
    intersection = (pred_mask & gt_mask).sum((1, 2, 3))
    iou = torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union, dtype=torch.float32))

    foreground = gt.alpha > 0.5
    saturation_diff = (hsv_saturation(pred_rgb) - hsv_saturation(gt.rgb))[:, None]
    outside = ~dilate(gt.alpha > 0, FLOATER_DILATION)
    return {
        "psnr": min(psnr.item(), PSNR_CAP_DB),
        "ssim": ssim.item(),
        "iou": iou.mean().item(),
        "delta_e": _mean_over(delta_e76(pred_rgb, gt.rgb)[:, None], foreground),
        "saturation_bias": _mean_over(saturation_diff, foreground),
        "floater_mass": _mean_over(opacity, outside),
    }


def marker_pixels(pred_rgb: Tensor, scene: grammar.Scene) -> Tensor:
    """[B, 1, H, W] bool: result pixels coloured like the scene's front marker.

    Each pixel is matched, in Lab, to every brightness (_SHADES) of every albedo the marked object can show
    (its colour, the pattern colour if patterned, the marker colour); it is marker-coloured when the
    nearest albedo is the marker's, lies within JANUS_MARKER_DELTA_E, and the pixel is not background
    (foreground_from_rgb: a hole showing the white background is not a white marker).
    """
    (obj,) = [o for o in scene.objects if o.marker_colour is not None]
    albedos = [grammar.COLOURS[obj.marker_colour], grammar.COLOURS[obj.colour]]
    if obj.surface != "plain":
        albedos.append(grammar.PATTERN_COLOUR)
    palette = torch.tensor(albedos, dtype=pred_rgb.dtype, device=pred_rgb.device)  # [K, 3]
    shades = palette[:, None, :] * _SHADES.to(pred_rgb)[None, :, None]  # [K, S, 3]
    lab_shades = srgb_to_lab(shades, dim=-1)
    lab = srgb_to_lab(pred_rgb).permute(0, 2, 3, 1)[..., None, :]  # [B, H, W, 1, 3]
    distance = torch.stack([(lab - shade).norm(dim=-1).amin(-1) for shade in lab_shades], -1)  # [B, H, W, K]
    nearest, closest = distance.min(-1)
    return ((closest == 0) & (nearest < JANUS_MARKER_DELTA_E))[:, None] & foreground_from_rgb(pred_rgb)


def marker_rates(pred_rgb: Tensor, gt: GroundTruth, scene: grammar.Scene) -> dict[str, float]:
    """How the result draws the front marker, as two shares of judged views: ``marker_missing`` (the
    marker should show and does not) and ``marker_misplaced`` (it shows where it should not: the Janus
    problem proper, a front seen from behind).

    In each view, let S be the interior of the GT object silhouette: pixels fully covered by objects
    (``gt.object_alpha == 1``; floor and wall excluded) whose 3x3 neighbourhood is too, so that edge
    pixels blended with the background are never read as a (white) marker. Then
      f_gt   = GT marker coverage over S (``gt.marker`` summed over S) / |S|,
      f_pred = |{pixels of S that are marker-coloured in the result (marker_pixels)}| / |S|.
    A view should show the marker when S is non-empty and f_gt >= JANUS_VISIBLE, and should hide it when
    S is non-empty and the GT shows no marker at all (it faces away); views in between (a sliver at a
    grazing angle) are judged for neither.
      marker_missing   = |should show and f_pred < JANUS_MISSING * f_gt| / |should show|
      marker_misplaced = |should hide and f_pred >= JANUS_VISIBLE| / |should hide|
    Each is NaN when the scene has no marker or no view is judged for it. Ground truth scores 0 on both; a
    result that never draws the marker scores 1 on the first and 0 on the second; one with the marker on
    every side, 0 and 1.
    """
    if not scene.has_marker:
        return {"marker_missing": math.nan, "marker_misplaced": math.nan}
    interior = erode(gt.object_alpha >= 1 - 1e-6, 1)
    area = interior.sum((1, 2, 3)).float()
    f_gt = (gt.marker * interior).sum((1, 2, 3)) / area.clamp_min(1)
    f_pred = (marker_pixels(pred_rgb.to(gt.rgb), scene) & interior).sum((1, 2, 3)) / area.clamp_min(1)
    should_show = (area > 0) & (f_gt >= JANUS_VISIBLE)
    should_hide = (area > 0) & (gt.marker.sum((1, 2, 3)) == 0)

    def share(wrong: Tensor, judged: Tensor) -> float:
        n = judged.sum().item()
        return (wrong & judged).sum().item() / n if n else math.nan

    return {
        "marker_missing": share(f_pred < JANUS_MISSING * f_gt, should_show),
        "marker_misplaced": share(f_pred >= JANUS_VISIBLE, should_hide),
    }


def caption_metrics(
    caption: str,
    pred_rgb_per_view: Tensor,
    views: Sequence[tuple[float, float]] = render.EVAL_VIEWS,
    pred_alpha: Tensor | None = None,
) -> dict[str, float | str]:
    """Render the caption's ground truth at ``views`` ((azimuth, elevation) pairs, one per result image
    [V, 3, H, W]) and score the result: image_metrics plus marker_missing and marker_misplaced (:func:`marker_rates`; NaN
    without a front marker), the
    caption's category and ``matched``, the full caption of the scene scored against. An open caption is
    scored against the one member of its set that matches the result best over all the views
    (``lods.toyworld.evaluate.best_scene_3d``: least mean squared error)."""
    if pred_rgb_per_view.shape[0] != len(views):
        raise ValueError(f"{pred_rgb_per_view.shape[0]} result images for {len(views)} views")
    height, width = pred_rgb_per_view.shape[-2:]
    if height != width:
        raise ValueError(f"toyworld renders square images; got {height}x{width}")
    if grammar.is_open(grammar.strip_view_suffix(caption)):
        from lods.toyworld.evaluate import best_scene_3d  # (evaluate imports this module)

        scene = best_scene_3d(pred_rgb_per_view, caption, views)
    else:
        scene = grammar.parse_caption(caption)
    gt = render.render_scene(scene, render.eval_cameras(height, views))
    metrics: dict[str, float | str] = dict(image_metrics(pred_rgb_per_view, gt, pred_alpha))
    metrics.update(marker_rates(pred_rgb_per_view, gt, scene))
    metrics["category"] = scene.category
    metrics["matched"] = grammar.scene_caption(scene)
    return metrics


# ----------------------------------------------------------------------------------------------------------
# Diversity of several results of one open caption.


def entropy_bits(values: Sequence) -> float:
    """Shannon entropy (bits) of the empirical distribution of ``values`` (hashable); 0 for fewer than two."""
    counts = Counter(values)
    total = sum(counts.values())
    return 0.0 - sum(c / total * math.log2(c / total) for c in counts.values())  # 0.0 - : never -0.0


def diversity(
    matched: Sequence[grammar.Scene], caption: str | grammar.OpenScene, ious: Sequence[float] | None = None
) -> dict[str, float]:
    """Diversity of K results of one open caption from the scenes they matched (one per result, K >= 1).

    distinct_scenes        number of distinct matched scenes (a float, so that loggers take it).
    attribute_entropy      entropy (bits) of the matched scenes' open attributes taken together (the
                           members of the set are exactly the joint values of its open attributes);
    attribute_entropy_max  its maximum, log2 of the set's size. K results reach at most log2 K.
    entropy/<attribute>    entropy (bits) of one open attribute (names: grammar.scene_attributes, e.g.
    entropy_max/<attribute>  "colour", "front", "floor.surface", "2.shape") and log2 of the number of values
                           it takes across the set.
    validity@<VALIDITY_IOU>  share of results whose best match reaches IoU >= VALIDITY_IOU (with ``ious``,
                           the results' IoUs against their matches).
    Every result counts, valid or not. A fully specified caption has no open attribute: only the first
    three (1 distinct scene, 0 bits of 0) and validity.
    """
    if not matched:
        raise ValueError("diversity of no results")
    spec = caption if isinstance(caption, grammar.OpenScene) else grammar.parse_open_caption(caption)
    for scene in matched:
        if not grammar.is_consistent(scene, spec):
            raise ValueError(f"{grammar.scene_caption(scene)!r} is not a member of {grammar.open_caption(spec)!r}")
    out = {
        "distinct_scenes": float(len(set(matched))),
        "attribute_entropy": entropy_bits(matched),
        "attribute_entropy_max": math.log2(grammar.count_consistent(spec)),
    }
    attributes = [grammar.scene_attributes(scene) for scene in matched]
    for name, values in grammar.open_attributes(spec).items():
        out[f"entropy/{name}"] = entropy_bits([a[name] for a in attributes])
        out[f"entropy_max/{name}"] = math.log2(len(values))
    if ious is not None:
        if len(ious) != len(matched):
            raise ValueError(f"{len(ious)} IoUs for {len(matched)} results")
        out[f"validity@{VALIDITY_IOU:g}"] = sum(iou >= VALIDITY_IOU for iou in ious) / len(ious)
    return out


def aggregate(
    per_prompt: Sequence[dict[str, float | str]], categories: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Per-category means of every numeric metric, plus "all" over every prompt (like T3Bench's table).

    ``categories`` gives each prompt's category (default: its "category" entry). NaN values (marker rates
    of prompts without a marker) are left out of a mean; a mean over no values is NaN. Each row also
    holds "count", the number of prompts.
    """
    if categories is None:
        categories = [str(row["category"]) for row in per_prompt]
    if len(categories) != len(per_prompt):
        raise ValueError(f"{len(categories)} categories for {len(per_prompt)} prompts")
    groups: dict[str, list[dict[str, float | str]]] = defaultdict(list)
    for row, category in zip(per_prompt, categories):
        groups[category].append(row)
        groups["all"].append(row)
    table = {}
    for category in [*(c for c in grammar.CATEGORIES if c in groups), *sorted(set(groups) - set(grammar.CATEGORIES))]:
        rows = groups[category]
        keys = dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, (int, float)))
        means = {}
        for key in keys:  # a metric some rows lack is averaged over the rows that have it
            values = [float(r[key]) for r in rows if key in r and not math.isnan(float(r[key]))]
            means[key] = sum(values) / len(values) if values else math.nan
        table[category] = {**means, "count": float(len(rows))}
    return table

"""The premise test in 2D: do the priors distil open captions (sets of scenes) differently from full ones?

    python -m lods.eval.premise                                   # the whole table, --steps fitted to ~90 min
    python -m lods.eval.premise --estimate                        # only measure per-step times, print --steps
    python -m lods.eval.premise --plan                            # only list the captions and runs
    python -m lods.eval.premise --steps 20 --open 1 --full 1 --priors sds,lods_embedding --out /tmp/premise

Without --steps, each prior first runs CALIBRATION_STEPS steps on one caption (per-step time and per-run
overhead measured, plus the open captions' ground-truth matching), and --steps becomes the most (a multiple of
10) that fit --budget-minutes (default 90) for the whole table; the estimate is printed.

Every run distils the 2D latent backbone (``backbone=image``, 4 particles, latent lr 3e-2) on one toyworld
caption through ``train()`` (:func:`lods.training.run_quietly`, as ``lods.eval.distill_table``: composed
in-process, no logger, no intermediate images), and is scored against ground truth (gt/psnr, gt/iou,
gt/delta_e, gt/saturation_bias) and for diversity (distinct matched scenes of the 4 particles, attribute
entropy, validity@0.5). Priors (``--priors``, labels of :data:`PRIORS`; ``sds`` means all three guidances):
sds_ref; sds at guidance 7.5, 30 and 100; lods_embedding and lods_lora at CFG inf with the LODS paper's 2D
settings (A.1: latent lr 3e-2, embedding lr 1e-4, LoRA lr 1e-6); vsd; sdi (their conf/prior defaults).

Captions (:func:`select_captions`): per category, ``--full`` scenes drawn with a fixed seed (their captions,
with a view suffix front/side/back as in ``toyworld.evaluate.evaluation_captions``) and ``--open`` open
variants of the same draw (``grammar.sample_open_caption`` of scene i, same view suffix, redrawn until the
caption is open, names at least 4 scenes and is new): open caption i contains full caption i's scene.
``--open`` and ``--full`` count per category.

Movement (LODS only, :func:`embedding_movement`, :func:`lora_movement`): how far the learned part moved
between its initial value (rebuilt from the run's config.yaml, seeded as train() seeds it) and the final
checkpoint (checkpoints/last.ckpt):
  lods_embedding  ||alpha_T - alpha_0||_2 / ||alpha_0||_2 (also the L1 ratio and the mean |alpha_T - alpha_0|);
  lods_lora       sqrt(sum_l ||dW_l||_F^2) / sqrt(sum_l ||W_l||_F^2) over the adapted layers l, where W_l is the
                  frozen base weight and dW_l = lora_scale * (alpha/r) * (B_T A_T - B_0 A_0) is the change of the
                  weight the null branch uses (B_0 = 0, so the LoRA's own initial norm is no yardstick).

Output (``--out``, default bench/premise/): runs/<prior>/seed<s>/<kind>-<category>-<hash>/ (the train() run
directory, with premise.json, the run's record, written last), results.json (every finished run in the
folder) and table.md (per prior, open vs full captions: means and number of runs). A relaunch continues:
finished runs are read back, never rerun; an interrupted one is resumed from its checkpoint or restarted.
The folder's settings (steps, model, overrides) are fixed by its first launch (settings.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lods.eval.distill_table import GENERATION_PRIORS
from lods.prompts import open_variant
from lods.toyworld import grammar

NUM_PARTICLES = 4
VIEWS = ("front", "side", "back")  # view suffixes, as lods.toyworld.evaluate.evaluation_captions
LATENT_LR = 3e-2  # A.1, 2D: latent map lr
COMMON = ("backbone=image", "task=text_to_image", f"backbone.num_particles={NUM_PARTICLES}", f"backbone.lr={LATENT_LR}")
PRIORS: dict[str, tuple[str, ...]] = {  # label -> overrides
    "sds_ref": ("prior=sds_ref",),
    "sds@7.5": ("prior=sds", "prior.guidance_scale=7.5"),
    "sds@30": ("prior=sds", "prior.guidance_scale=30"),
    "sds@100": ("prior=sds", "prior.guidance_scale=100"),
    "lods_embedding": ("prior=lods_embedding", "prior.guidance_scale=inf", "prior.lr=1e-4"),  # A.1, 2D
    "lods_lora": ("prior=lods_lora", "prior.guidance_scale=inf", "prior.lr=1e-6"),  # A.1, 2D
    "vsd": ("prior=vsd",),
    "sdi": ("prior=sdi",),
}
FAMILIES = {"sds": ("sds@7.5", "sds@30", "sds@100")}  # --priors sds: every SDS guidance
KINDS = ("open", "full")
METRICS = ("psnr", "iou", "delta_e", "saturation_bias")
RECORD = "premise.json"
SETTINGS = "settings.json"
DEFAULT_BUDGET_MINUTES = 90.0
CALIBRATION_STEPS = 6
MIN_STEPS = 10

assert {o.split("=", 1)[1] for o, *_ in PRIORS.values()} <= set(GENERATION_PRIORS)


class PremiseError(ValueError):
    """Bad options, or a folder whose settings differ from the ones asked for."""


# ----------------------------------------------------------------------------------------------------------
# Captions.


@dataclass(frozen=True)
class Caption:
    text: str  # with a view suffix
    kind: str  # "open" | "full"
    category: str
    scene: str  # the full caption (no view) of the drawn scene: the caption's one scene, or a member of its set
    set_size: int

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.category}-{hashlib.sha1(self.text.encode()).hexdigest()[:10]}"


def select_captions(
    n_open: int, n_full: int, seed: int = 0, categories: Sequence[str] = grammar.CATEGORIES
) -> list[Caption]:
    """``n_open`` open and ``n_full`` full captions per category, deterministic in ``seed``.

    Per category, scenes (and view suffixes) are drawn one by one from ``random.Random(f"premise-{seed}-<cat>")``,
    skipping repeats; full caption i is scene i's caption, open caption i an open variant of scene i (its own
    seeded draw, redrawn until open, with at least NUM_PARTICLES scenes, and new). A larger count keeps the
    smaller one's captions as a prefix. Order: category, then kind (open, full), then draw.
    """
    _check_count("--open", n_open)
    _check_count("--full", n_full)
    for category in categories:
        if category not in grammar.CATEGORIES:
            raise PremiseError(f"unknown category '{category}'; choose from: {', '.join(grammar.CATEGORIES)}")
    out = []
    for category in categories:
        rng = random.Random(f"premise-{seed}-{category}")
        scenes, seen = [], set()
        while len(scenes) < max(n_open, n_full):
            scene = grammar.scene_at(category, rng.randrange(grammar.count_scenes(category)))
            view = rng.choice(VIEWS)
            if grammar.scene_caption(scene) not in seen:
                seen.add(grammar.scene_caption(scene))
                scenes.append((scene, view))
        taken: set[str] = set()
        for i, (scene, view) in enumerate(scenes[:n_open]):
            rng_i = random.Random(f"premise-{seed}-{category}-{i}")
            text = open_variant(scene, rng_i, taken, NUM_PARTICLES, view)
            taken.add(text)
            size = grammar.count_consistent(grammar.strip_view_suffix(text))
            out.append(Caption(text, "open", category, grammar.scene_caption(scene), size))
        for scene, view in scenes[:n_full]:
            full = grammar.scene_caption(scene)
            out.append(Caption(grammar.with_view_suffix(full, view), "full", category, full, 1))
    return out


def _check_count(option: str, value: int) -> None:
    if value < 0:
        raise PremiseError(f"{option} must be a count >= 0 (captions per category), got {value}")


def parse_priors(spec: str | Sequence[str]) -> list[str]:
    """Labels of :data:`PRIORS` from a comma-separated list (a family name such as ``sds`` gives all its labels)."""
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    labels = []
    for name in names:
        if name in PRIORS:
            labels.append(name)
        elif name in FAMILIES:
            labels += FAMILIES[name]
        else:
            allowed = ", ".join([*PRIORS, *FAMILIES])
            raise PremiseError(f"unknown prior '{name}'; choose from: {allowed}")
    if not labels:
        raise PremiseError(f"no prior given; choose from: {', '.join([*PRIORS, *FAMILIES])}")
    return list(dict.fromkeys(labels))


# ----------------------------------------------------------------------------------------------------------
# Movement of the learned parameters.


def embedding_movement(alpha_0: torch.Tensor, alpha_t: torch.Tensor) -> dict[str, float]:
    """How far a learned embedding moved: ``movement`` = ||alpha_T - alpha_0||_2 / ||alpha_0||_2, ``relative_l1``
    = |alpha_T - alpha_0|_1 / |alpha_0|_1, ``mean_abs_change`` = mean |alpha_T - alpha_0| (and ``initial_mean_abs``
    = mean |alpha_0| to compare it with)."""
    alpha_0, alpha_t = alpha_0.detach().double(), alpha_t.detach().double()
    delta = alpha_t - alpha_0
    return {
        "movement": (delta.norm() / alpha_0.norm()).item(),
        "relative_l1": (delta.abs().sum() / alpha_0.abs().sum()).item(),
        "mean_abs_change": delta.abs().mean().item(),
        "initial_mean_abs": alpha_0.abs().mean().item(),
    }


@dataclass
class LoraLayer:
    """One adapted layer: its frozen base weight, the LoRA factors at the start and the end (A [r, in], B [out, r]),
    and the factor the null branch applies to B A (lora_scale times peft's alpha / r)."""

    weight: torch.Tensor
    a_0: torch.Tensor
    b_0: torch.Tensor
    a_t: torch.Tensor
    b_t: torch.Tensor
    scale: float


def lora_movement(layers: Sequence[LoraLayer]) -> dict[str, float]:
    """How far a LoRA moved the weights it adapts: ``movement`` = sqrt(sum ||dW_l||_F^2) / sqrt(sum ||W_l||_F^2),
    dW_l = scale_l (B_T A_T - B_0 A_0); also ``parameter_change`` = ||psi_T - psi_0||_2 / ||psi_0||_2 over all A
    and B entries (dominated by A, whose random init sets ||psi_0||), and ``b_norm`` = ||B_T||_2 (B_0 = 0)."""
    if not layers:
        raise ValueError("no LoRA layers")
    delta_sq = weight_sq = change_sq = initial_sq = b_sq = 0.0
    for layer in layers:
        a_0, b_0, a_t, b_t = (x.detach().double().flatten(1) for x in (layer.a_0, layer.b_0, layer.a_t, layer.b_t))
        delta = layer.scale * (b_t @ a_t - b_0 @ a_0)
        delta_sq += delta.square().sum().item()
        weight_sq += layer.weight.detach().double().square().sum().item()
        change_sq += (a_t - a_0).square().sum().item() + (b_t - b_0).square().sum().item()
        initial_sq += a_0.square().sum().item() + b_0.square().sum().item()
        b_sq += b_t.square().sum().item()
    return {
        "movement": math.sqrt(delta_sq / weight_sq),
        "parameter_change": math.sqrt(change_sq / initial_sq),
        "b_norm": math.sqrt(b_sq),
        "layers": float(len(layers)),
    }


def measure_movement(run_dir: Path) -> dict[str, float] | None:
    """:func:`embedding_movement` or :func:`lora_movement` of a finished run (None for priors that learn neither):
    the initial values are those of the system rebuilt from config.yaml after ``seed_everything(cfg.seed)`` (as
    train() builds it: LoRA A is drawn from the global generator), the final ones those of checkpoints/last.ckpt."""
    import lightning.pytorch as pl

    from lods.priors.lods_embedding import LODSEmbedding
    from lods.priors.lods_lora import LODSLoRA
    from lods.runs import build_system, last_checkpoint, read_config

    cfg = read_config(run_dir)
    if str(cfg.prior._target_).rsplit(".", 1)[-1] not in (LODSEmbedding.__name__, LODSLoRA.__name__):
        return None
    checkpoint = last_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoints/last.ckpt to measure the movement from")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    system = build_system(cfg)
    prior = system.prior
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    final = {k.removeprefix("prior."): v for k, v in state.items() if k.startswith("prior.")}
    if isinstance(prior, LODSEmbedding):
        return embedding_movement(prior.alpha.detach().cpu().clone(), final["alpha"])
    name = prior.adapter_name
    modules = [m for m in system.model.unet.modules() if name in getattr(m, "lora_A", {})]
    start = [
        (m.lora_A[name].weight.detach().cpu().clone(), m.lora_B[name].weight.detach().cpu().clone()) for m in modules
    ]
    prior.load_state_dict(final)  # the ParameterList shares the U-Net's LoRA tensors: the modules now hold psi_T
    layers = [
        LoraLayer(
            m.base_layer.weight.detach().cpu(),
            a_0,
            b_0,
            m.lora_A[name].weight.detach().cpu(),
            m.lora_B[name].weight.detach().cpu(),
            prior.lora_scale * m.scaling[name],
        )
        for m, (a_0, b_0) in zip(modules, start)
    ]
    return lora_movement(layers)


# ----------------------------------------------------------------------------------------------------------
# Runs.


@dataclass(frozen=True)
class RunSpec:
    prior: str  # a label of PRIORS
    caption: Caption
    seed: int

    def directory(self, out: Path) -> Path:
        slug = self.prior.replace("@", "_s")
        return out / "runs" / slug / f"seed{self.seed}" / self.caption.key

    def overrides(self, model: str, extra: Sequence[str]) -> list[str]:
        return [
            f"model={model}",
            *COMMON,
            *PRIORS[self.prior],
            f"seed={self.seed}",
            f"prompt='{self.caption.text}'",
            *extra,
        ]


def _diversity_of_full(run_dir: Path, caption: str) -> dict[str, float]:
    """Diversity of a full caption's particles (1 distinct scene by construction; validity from the particles'
    IoUs against their best views, scored on images/final_<i>.png)."""
    from lods.runs import final_images

    return diversity_of_images(final_images(run_dir), caption)


def diversity_of_images(images: torch.Tensor, caption: str) -> dict[str, float]:
    """:func:`lods.toyworld.metrics.diversity` of ``images`` [K, 3, H, W], with validity from each image's IoU
    against its best match (any caption, full or open)."""
    from lods.toyworld.evaluate import best_matches
    from lods.toyworld.metrics import diversity, image_metrics

    matches = best_matches(images, caption)
    ious = [image_metrics(image[None], match.gt)["iou"] for image, match in zip(images, matches)]
    return diversity([m.scene for m in matches], grammar.strip_view_suffix(caption), ious)


def make_record(spec: RunSpec, metrics: dict, run_dir: Path, out: Path) -> dict:
    """The row of results.json of a finished run (its metrics.json, the diversity of its particles, the movement)."""
    from lods.runs import run_recipe
    from lods.toyworld.evaluate import METRIC_KEYS

    gt = {k[3:]: v for k, v in metrics.items() if k.startswith("gt/")}
    scores = {k: float(gt[k]) for k in METRIC_KEYS if k in gt}
    skip = {*METRIC_KEYS, "category", "matched", "azimuth", "elevation"}
    div = {k: float(v) for k, v in gt.items() if k not in skip and isinstance(v, (int, float))}
    if gt and spec.caption.kind == "full":
        div = {**_diversity_of_full(run_dir, spec.caption.text), "set_size": 1.0}
    return {
        "prior": spec.prior,
        "overrides": list(PRIORS[spec.prior]),
        "caption": spec.caption.text,
        "kind": spec.caption.kind,
        "category": spec.caption.category,
        "scene": spec.caption.scene,
        "seed": spec.seed,
        "steps": metrics.get("steps"),
        "metrics": scores,
        "diversity": div,
        "matched": gt.get("matched"),
        "movement": measure_movement(run_dir),
        "seconds_per_step": metrics.get("seconds_per_step"),
        "wall_seconds": metrics.get("wall_seconds"),
        "run_dir": str(run_dir.relative_to(out)),
        "recipe": run_recipe(run_dir),
    }


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def check_recipe(run_dir: Path, overrides: Sequence[str], steps: int | None, saved: dict | None = None) -> None:
    """Raise :class:`lods.runs.RunDirectoryError` where the run in ``run_dir`` was made with other settings than
    ``overrides`` (and ``steps``; None: the default) give now, e.g. after a default changed: its results must not
    be read back, or resumed, as this run's. ``saved``: the recipe its record keeps (else its config.yaml's)."""
    from lods.config import compose_config
    from lods.runs import require_recipe

    overrides = [*overrides, *([f"trainer.max_steps={steps}"] if steps is not None else [])]
    require_recipe(run_dir, compose_config(overrides), overrides, saved)


def train_or_resume(run_dir: Path, overrides: Sequence[str], steps: int, accelerator: str) -> dict:
    """The metrics.json of the run in ``run_dir``: read back when it finished, resumed from its last checkpoint
    when it stopped after one, else trained from the start (:func:`lods.training.run_quietly`). A finished or
    stopped run made with other settings raises :class:`lods.runs.RunDirectoryError` (:func:`check_recipe`)."""
    from lods.config import compose_config
    from lods.runs import RESULT_FILE, last_checkpoint, read_metrics
    from lods.training import run_quietly, train

    if (run_dir / RESULT_FILE).is_file() or last_checkpoint(run_dir) is not None:
        check_recipe(run_dir, overrides, steps)
    if (run_dir / RESULT_FILE).is_file():  # trained, stopped before its record was written
        return read_metrics(run_dir)
    if last_checkpoint(run_dir) is not None:  # stopped after its last checkpoint: train() resumes it
        return train(compose_config([f"resume='{run_dir}'"]))
    return run_quietly(list(overrides), steps, run_dir, accelerator)


def run_one(spec: RunSpec, steps: int, out: Path, model: str, extra: Sequence[str], accelerator: str) -> dict:
    """One run's record: read back when finished (premise.json), else trained (or resumed) and recorded."""
    run_dir = spec.directory(out)
    record_file = run_dir / RECORD
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        check_recipe(run_dir, spec.overrides(model, extra), steps, record.get("recipe"))
        return record
    metrics = train_or_resume(run_dir, spec.overrides(model, extra), steps, accelerator)
    record = make_record(spec, metrics, run_dir, out)
    write_json(record_file, record)
    return record


# ----------------------------------------------------------------------------------------------------------
# The table.


def flat(record: dict) -> dict[str, float]:
    """The numbers of a record the table averages."""
    div = record.get("diversity") or {}
    row = {k: record["metrics"].get(k, math.nan) for k in METRICS}
    row["distinct_scenes"] = div.get("distinct_scenes", math.nan)
    row["validity"] = next((v for k, v in div.items() if k.startswith("validity@")), math.nan)
    if record.get("movement"):
        row["movement"] = record["movement"]["movement"]
    return row


def summarize(records: Sequence[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """prior -> "open" / "full" -> means of :func:`flat` over its runs (NaNs left out) and "count" (runs)."""
    from lods.toyworld.metrics import aggregate

    table = {}
    for prior in _ordered(dict.fromkeys(r["prior"] for r in records)):
        mine = [r for r in records if r["prior"] == prior]
        groups = aggregate([flat(r) for r in mine], [r["kind"] for r in mine])
        table[prior] = {kind: groups[kind] for kind in KINDS if kind in groups}
    return table


def _ordered(labels) -> list[str]:
    """PRIORS order, then others (e.g. the prior's own samples, ``ddim@7.5``) by name and guidance."""
    order = list(PRIORS)

    def rank(label: str):
        name, _, value = label.partition("@")
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        return (order.index(label) if label in order else len(order), name, number, label)

    return sorted(labels, key=rank)


COLUMNS = (
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("iou", "IoU", "{:.3f}"),
    ("delta_e", "delta-E", "{:.1f}"),
    ("saturation_bias", "sat. bias", "{:+.3f}"),
    ("distinct_scenes", f"distinct scenes (of {NUM_PARTICLES})", "{:.2f}"),
    ("validity", "validity@0.5", "{:.2f}"),
    ("movement", "movement", "{:.2e}"),
)


def markdown(table: dict, settings: dict | None = None, title: str = "# The premise test in 2D") -> str:
    lines = [title, ""]
    if settings:
        lines += [
            f"{settings.get('steps')} steps, {NUM_PARTICLES} particles (backbone=image, latent lr {LATENT_LR:g}), "
            f"model={settings.get('model')}"
            + (f", overrides: {' '.join(settings['overrides'])}" if settings.get("overrides") else "")
            + ". Means over runs; n = runs.",
            "",
        ]
    header = ["prior", "captions", "n", *(title for _, title, _ in COLUMNS)]
    lines += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for prior, kinds in table.items():
        for kind, values in kinds.items():
            cells = [
                "–" if math.isnan(values.get(key, math.nan)) else fmt.format(values[key]) for key, _, fmt in COLUMNS
            ]
            lines.append(f"| {prior} | {kind} | {int(values['count'])} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "distinct scenes: distinct ground-truth scenes the particles matched best (1 for a full caption); "
        "validity@0.5: share of particles whose best match reaches IoU 0.5. movement (LODS): "
        "lods_embedding ||alpha_T - alpha_0||_2 / ||alpha_0||_2; lods_lora sqrt(sum ||dW||_F^2) / sqrt(sum ||W||_F^2) "
        "over the adapted layers, dW = lora_scale (alpha/r) (B_T A_T - B_0 A_0) (see lods/eval/premise.py).",
    ]
    return "\n".join(lines) + "\n"


PAIRED = (  # (key of flat(), title, direction for lods.stats.paired_difference)
    ("psnr", "PSNR", 1),
    ("iou", "IoU", 1),
    ("delta_e", "delta-E", -1),
    ("saturation_bias", "abs. sat. bias", "abs"),
    ("distinct_scenes", "distinct scenes", 1),
    ("validity", "validity@0.5", 1),
)
GAP_METRICS = ("psnr", "iou", "delta_e", "saturation_bias")  # diversity is 1 scene on a full caption by construction
DEFAULT_BASELINE = "sds_ref"


def _values(records: Sequence[dict], prior: str, kind: str) -> dict[tuple[str, int], dict[str, float]]:
    """(scene, seed) -> flat(record) of ``prior``'s runs on ``kind`` captions (open caption i and full caption i
    share their scene, so the key pairs across priors and across kinds)."""
    return {(r["scene"], r["seed"]): flat(r) for r in records if r["prior"] == prior and r["kind"] == kind}


def _paired(a: dict, b: dict, key: str, direction) -> dict:
    from lods.stats import paired_difference

    return paired_difference(
        {k: v.get(key, math.nan) for k, v in a.items()}, {k: v.get(key, math.nan) for k, v in b.items()}, direction
    ).as_dict()


def differences(records: Sequence[dict], baseline: str = DEFAULT_BASELINE) -> dict:
    """{kind: {"<prior> - <baseline>": {metric: PairedDifference.as_dict()}}}: each prior against ``baseline``
    on the same captions and seeds (bootstrap 95% intervals, win rates; :mod:`lods.stats`)."""
    priors = _ordered({r["prior"] for r in records})
    out: dict = {}
    if baseline not in priors:
        return out
    for kind in KINDS:
        base = _values(records, baseline, kind)
        rows = {}
        for prior in priors:
            mine = _values(records, prior, kind)
            if prior != baseline and mine and base:
                rows[f"{prior} - {baseline}"] = {key: _paired(mine, base, key, d) for key, _, d in PAIRED}
        if rows:
            out[kind] = rows
    return out


def open_gaps(records: Sequence[dict], baseline: str = DEFAULT_BASELINE) -> dict:
    """What leaving things unsaid costs each prior: {prior: {metric: open minus full}}, paired by scene and seed
    (open caption i names a set containing full caption i's scene; the open run scores against its best match);
    and, under "<prior> - <baseline>", the difference of those costs (a prior that copes with open captions
    better than the baseline has a positive PSNR / IoU entry)."""
    priors = _ordered({r["prior"] for r in records})
    gaps = {}
    for prior in priors:
        opened, full = _values(records, prior, "open"), _values(records, prior, "full")
        keys = [k for k in opened if k in full]
        if keys:
            gaps[prior] = {
                k: {m: opened[k].get(m, math.nan) - full[k].get(m, math.nan) for m in GAP_METRICS} for k in keys
            }
    out: dict = {}
    for prior, gap in gaps.items():
        out[prior] = {m: _paired(gap, {k: dict.fromkeys(GAP_METRICS, 0.0) for k in gap}, m, 1) for m in GAP_METRICS}
    if baseline in gaps:
        for prior, gap in gaps.items():
            if prior != baseline:
                directions = {key: d for key, _, d in PAIRED}
                out[f"{prior} - {baseline}"] = {
                    m: _paired(gap, gaps[baseline], m, directions[m] if directions[m] != "abs" else -1)
                    for m in GAP_METRICS
                }
    return out


def differences_markdown(diffs: dict, gaps: dict) -> str:
    from lods.stats import PairedDifference, format_difference

    def cell(d: dict) -> str:
        fields = {k: d[k] for k in ("n", "mean", "low", "high", "win_rate")}
        return format_difference(PairedDifference(**fields), "{:+.3f}" if abs(d["mean"]) < 10 else "{:+.1f}")

    def section(title: str, intro: str, columns: Sequence[tuple[str, str]], rows: dict, first: str) -> list[str]:
        out = ["", title, "", intro, "", f"| {first} | pairs | " + " | ".join(t for _, t in columns) + " |"]
        out.append("|---|---:|" + "---|" * len(columns))
        for name, cells in rows.items():
            n = max(c["n"] for c in cells.values())
            out.append(f"| {name} | {n} | " + " | ".join(cell(cells[k]) for k, _ in columns) + " |")
        return out

    lines = []
    for kind, rows in diffs.items():
        intro = (
            "A - B over the same captions and seeds: mean, bootstrap 95% interval, A's win rate (ties half); "
            "* = the interval excludes zero. abs. sat. bias compares distances from zero; delta-E is better lower."
        )
        lines += section(
            f"## {kind} captions: paired differences", intro, [(k, t) for k, t, _ in PAIRED], rows, "A - B"
        )
    if gaps:
        intro = (
            "Open caption i names a set of scenes that holds full caption i's scene, with the same view; a row "
            "`prior` is that prior's open-minus-full difference (its win rate: the share of scenes where the open "
            "caption scored higher), a row `A - B` the difference of two priors' costs (positive PSNR / IoU: A "
            "loses less than B; negative delta-E and sat. bias: A's rises less)."
        )
        title = "## what an open caption costs: open minus full, paired by scene"
        lines += section(title, intro, [(m, m) for m in GAP_METRICS], gaps, "prior")
    return "\n".join(lines) + "\n" if lines else ""


PRIOR_SAMPLE_STEPS = 50  # DDIM steps (as the model card)
PRIOR_SAMPLES = "prior_samples"  # <out>/prior_samples/cfg<g>.json


def prior_sample_records(
    model, captions: Sequence[Caption], guidance: float, steps: int = PRIOR_SAMPLE_STEPS, seed: int = 0
) -> list[dict]:
    """The prior's own DDIM samples (eta 0) of every caption, NUM_PARTICLES each at CFG ``guidance`` (caption i
    seeded ``seed + i``), scored as the distillation runs are; records shaped like the runs' (prior
    ``ddim@<guidance>``), so that :func:`summarize` and :func:`differences` take them."""
    from lods.toyworld.evaluate import ground_truth_metrics, sample

    records = []
    for i, caption in enumerate(captions):
        images = sample(model, [caption.text] * NUM_PARTICLES, steps, guidance, seed + i)
        metrics, _ = ground_truth_metrics(images, caption.text)
        records.append(
            {
                "prior": f"ddim@{guidance:g}",
                "caption": caption.text,
                "kind": caption.kind,
                "category": caption.category,
                "scene": caption.scene,
                "seed": seed,
                "metrics": {k: float(metrics[k]) for k in METRICS},
                "diversity": diversity_of_images(images, caption.text),
                "matched": metrics["matched"],
                "movement": None,
            }
        )
    return records


def run_prior_samples(out: Path, captions: Sequence[Caption], guidances: Sequence[float], device: str) -> list[dict]:
    """:func:`prior_sample_records` of the toyworld prior at each guidance, kept in <out>/prior_samples/ (a
    guidance already there is read back)."""
    from lods.toyworld.model import load_prior

    model, records = None, []
    for guidance in guidances:
        path = out / PRIOR_SAMPLES / f"cfg{guidance:g}.json"
        if not path.is_file():
            model = model or load_prior(device=device)
            started = time.perf_counter()
            rows = prior_sample_records(model, captions, guidance)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, rows)
            print(f"  DDIM at CFG {guidance:g}: {len(rows)} captions in {time.perf_counter() - started:.0f} s")
        records += json.loads(path.read_text())
    return records


def prior_samples_markdown(records: Sequence[dict]) -> str:
    """The prior's own samples on the premise captions, per guidance, open vs full, and against CFG 1."""
    if not records:
        return ""
    text = markdown(
        summarize(records),
        title=f"## The prior's own samples: DDIM ({PRIOR_SAMPLE_STEPS} steps), {NUM_PARTICLES} per caption, same captions",
    )
    baseline = _ordered({r["prior"] for r in records})[0]
    diffs = differences(records, baseline)
    return "\n" + text + differences_markdown(diffs, open_gaps(records, baseline)).replace("## ", "### ")


def finished_records(out: Path) -> list[dict]:
    """Every finished run's record in a folder, in table order."""
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"*/*/*/{RECORD}"))]
    order = {label: i for i, label in enumerate(_ordered({r["prior"] for r in records}))}
    return sorted(records, key=lambda r: (order[r["prior"]], r["seed"], KINDS.index(r["kind"]), r["run_dir"]))


def without_recipes(records: Sequence[dict]) -> list[dict]:
    """Records as results.json lists them: without their recipes (each run's own record keeps its recipe)."""
    return [{k: v for k, v in r.items() if k != "recipe"} for r in records]


def write_outputs(out: Path, settings: dict) -> dict:
    records = finished_records(out)
    table = summarize(records)
    diffs, gaps = differences(records), open_gaps(records)
    write_json(
        out / "results.json",
        {
            "settings": settings,
            "runs": without_recipes(records),
            "table": table,
            "differences": diffs,
            "open_minus_full": gaps,
        },
    )
    samples = [r for p in sorted((out / PRIOR_SAMPLES).glob("cfg*.json")) for r in json.loads(p.read_text())]
    (out / "table.md").write_text(
        markdown(table, settings) + differences_markdown(diffs, gaps) + prior_samples_markdown(samples)
    )
    return table


# ----------------------------------------------------------------------------------------------------------
# Steps: what fits the budget.


def estimate_steps(
    per_step: dict[str, float],
    overhead: dict[str, float],
    runs_per_prior: int,
    budget_seconds: float,
    extra_seconds: float = 0.0,
) -> tuple[int, float]:
    """(steps, predicted seconds): the most steps (a multiple of 10, at least MIN_STEPS) such that every prior's
    ``runs_per_prior`` runs, each ``overhead`` + steps x ``per_step`` seconds, plus ``extra_seconds`` fit
    ``budget_seconds``."""
    fixed = runs_per_prior * sum(overhead.values()) + extra_seconds
    rate = runs_per_prior * sum(per_step.values())
    steps = max(MIN_STEPS, int((budget_seconds - fixed) / rate) // 10 * 10) if rate > 0 else MIN_STEPS
    return steps, fixed + rate * steps


def calibrate(labels, captions: list[Caption], model, extra, accelerator) -> tuple[dict, dict, float]:
    """Measured per-step seconds and per-run overhead (start-up, evaluation, movement) of each prior, from a
    CALIBRATION_STEPS-step run on a full caption, and the extra seconds the open captions' ground-truth matching
    costs per prior (their matching of NUM_PARTICLES noise images, timed)."""
    from lods.toyworld.evaluate import ground_truth_metrics

    full = next((c for c in captions if c.kind == "full"), None) or Caption(
        grammar.with_view_suffix(captions[0].scene, VIEWS[0]), "full", captions[0].category, captions[0].scene, 1
    )
    per_step, overhead = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in labels:
            started = time.perf_counter()
            record = run_one(RunSpec(label, full, 0), CALIBRATION_STEPS, Path(tmp), model, extra, accelerator)
            wall = time.perf_counter() - started
            per_step[label] = record["seconds_per_step"]
            overhead[label] = max(0.0, wall - CALIBRATION_STEPS * per_step[label])
            print(f"  {label}: {per_step[label]:.3f} s/step, {overhead[label]:.1f} s per run besides the steps")
    matching = 0.0
    if model == "toyworld":
        noise = torch.rand(NUM_PARTICLES, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        for caption in captions:
            if caption.kind == "open":
                started = time.perf_counter()
                ground_truth_metrics(noise, caption.text)
                matching += time.perf_counter() - started
        print(
            f"  ground-truth matching of the {sum(c.kind == 'open' for c in captions)} open captions: {matching:.1f} s"
        )
    return per_step, overhead, matching


# ----------------------------------------------------------------------------------------------------------
# Command line.


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise PremiseError(f"--seeds takes comma-separated integers, got '{text}'") from None
    if not seeds:
        raise PremiseError(f"--seeds takes comma-separated integers, got '{text}'")
    return list(dict.fromkeys(seeds))


def _guidances(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or any(not v >= 1.0 for v in values):
        raise PremiseError(f"--prior-samples takes comma-separated guidance scales >= 1, got '{text}'")
    return list(dict.fromkeys(values))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lods.eval.premise", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: what fits --budget-minutes)")
    parser.add_argument("--budget-minutes", type=float, default=DEFAULT_BUDGET_MINUTES)
    parser.add_argument("--open", type=int, default=3, help="open captions per category (default 3)")
    parser.add_argument("--full", type=int, default=3, help="full captions per category (default 3)")
    parser.add_argument("--categories", default=",".join(grammar.CATEGORIES))
    parser.add_argument(
        "--priors", default=",".join(PRIORS), help=f"comma-separated: {', '.join([*PRIORS, *FAMILIES])}"
    )
    parser.add_argument("--seeds", default="0", help="run seeds, comma-separated (default 0)")
    parser.add_argument("--caption-seed", type=int, default=0, help="seed of the caption draw (default 0)")
    parser.add_argument("--model", default="toyworld", help="model config (tiny: tests; no ground truth)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override for every run")
    parser.add_argument("--accelerator", default="cpu", help="Lightning's accelerator: cpu (default), gpu, auto")
    parser.add_argument("--out", type=Path, default=Path("bench/premise"))
    parser.add_argument("--plan", action="store_true", help="print the captions and runs, run nothing")
    parser.add_argument("--estimate", action="store_true", help="measure the per-step times, print --steps, stop")
    parser.add_argument(
        "--prior-samples",
        default=None,
        metavar="CFGS",
        help="only the prior's own DDIM samples of the captions at these guidances (e.g. 1,7.5,30,100), "
        "kept in <out>/prior_samples/ and tabulated beside the runs",
    )
    args = parser.parse_args(argv)
    try:
        if args.steps is not None and args.steps < 1:
            raise PremiseError(f"--steps must be >= 1, got {args.steps}")
        if args.budget_minutes <= 0:
            raise PremiseError(f"--budget-minutes must be > 0, got {args.budget_minutes:g}")
        _check_count("--open", args.open)
        _check_count("--full", args.full)
        if args.open == 0 and args.full == 0:
            raise PremiseError("--open 0 --full 0: no caption to run; give at least one")
        args.priors = parse_priors(args.priors)
        if args.prior_samples is not None:
            args.prior_samples = _guidances(args.prior_samples)
        args.seeds = _seeds(args.seeds)
        args.categories = [c.strip() for c in args.categories.split(",") if c.strip()]
        args.captions = select_captions(args.open, args.full, args.caption_seed, args.categories)
    except PremiseError as error:
        parser.error(str(error))
    return args


def _settings(args, steps: int) -> dict:
    return {"steps": steps, "model": args.model, "overrides": list(args.override), "num_particles": NUM_PARTICLES}


def fixed_settings(out: Path, asked: dict, from_folder: Sequence[str] = ()) -> dict | None:
    """The folder's settings (``out``/settings.json, None before its first launch); PremiseError when ``asked``
    differs from them (keys in ``from_folder``, options the command line left unset, are the folder's)."""
    path = out / SETTINGS
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    asked = {**asked, **{k: saved.get(k) for k in from_folder}}
    differ = [f"{k}: {saved.get(k)!r} there, {v!r} asked" for k, v in asked.items() if saved.get(k) != v]
    if differ:
        raise PremiseError(
            f"'{out}' holds runs with other settings ({'; '.join(differ)}); relaunch with its settings "
            "(e.g. without --steps) or choose another --out"
        )
    return saved


def quiet_logs() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lods.training"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*weights_only.*")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    quiet_logs()
    specs = [RunSpec(p, c, s) for p in args.priors for s in args.seeds for c in args.captions]
    counts = {k: sum(c.kind == k for c in args.captions) for k in KINDS}
    print(
        f"{len(specs)} runs: {len(args.priors)} priors ({', '.join(args.priors)}) x {len(args.seeds)} seed(s) x "
        f"{len(args.captions)} captions ({counts['open']} open, {counts['full']} full; "
        f"{args.open} open + {args.full} full per category)"
    )
    if args.plan:
        for caption in args.captions:
            print(f"  {caption.kind:4} {caption.category:12} {caption.set_size:6d}  {caption.text}")
        return {"captions": [asdict(c) for c in args.captions]}
    out = args.out
    if args.prior_samples is not None:
        if args.model != "toyworld":
            raise SystemExit("error: --prior-samples scores against ground truth: it needs --model toyworld")
        device = "cpu" if args.accelerator == "cpu" else "auto"
        records = run_prior_samples(out, args.captions, args.prior_samples, device)
        saved = json.loads((out / SETTINGS).read_text()) if (out / SETTINGS).is_file() else None
        if saved:
            write_outputs(out, saved)
        text = prior_samples_markdown(records)
        print(text)
        return {"prior_samples": records}
    try:
        saved = fixed_settings(out, _settings(args, args.steps), () if args.steps is not None else ("steps",))
    except PremiseError as error:
        raise SystemExit(f"error: {error}") from None
    steps = saved["steps"] if saved else args.steps
    if steps is None or args.estimate:
        print(f"measuring per-step times ({CALIBRATION_STEPS} steps per prior; machine load {os.getloadavg()[0]:.1f})")
        per_step, overhead, matching = calibrate(
            args.priors, args.captions, args.model, args.override, args.accelerator
        )
        runs = len(args.captions) * len(args.seeds)
        budget = args.budget_minutes * 60
        steps, predicted = estimate_steps(
            per_step, overhead, runs, budget, matching * len(args.seeds) * len(args.priors)
        )
        print(
            f"estimate: --steps {steps} fits {args.budget_minutes:g} min: {len(specs)} runs predicted to take "
            f"{predicted / 60:.1f} min ({sum(per_step.values()) * runs * steps / 60:.1f} min of steps)"
        )
        if args.estimate:
            return {"steps": steps, "predicted_seconds": predicted, "seconds_per_step": per_step, "overhead": overhead}
    settings = _settings(args, steps)
    out.mkdir(parents=True, exist_ok=True)
    if saved is None:
        write_json(out / SETTINGS, settings)
    from lods.runs import RunDirectoryError

    started = time.perf_counter()
    for i, spec in enumerate(specs, 1):
        done = (spec.directory(out) / RECORD).is_file()
        t = time.perf_counter()
        try:
            record = run_one(spec, steps, out, args.model, args.override, args.accelerator)
        except RunDirectoryError as error:
            raise SystemExit(f"error: {error}") from None
        m = record["metrics"]
        scores = ", ".join(f"{k} {m[k]:.3g}" for k in METRICS if k in m)
        moved = f", movement {record['movement']['movement']:.2e}" if record.get("movement") else ""
        state = "finished before" if done else f"{time.perf_counter() - t:.0f} s"
        print(f"[{i}/{len(specs)}] {spec.prior} {spec.caption.kind} '{spec.caption.text}': {scores}{moved} ({state})")
        if not done:
            write_outputs(out, settings)
    table = write_outputs(out, settings)
    print(f"{len(specs)} runs in {time.perf_counter() - started:.0f} s; {out / 'results.json'}, {out / 'table.md'}")
    print((out / "table.md").read_text())
    return table


if __name__ == "__main__":
    main()

"""The fidelity table: how far text-to-3D sits below the prior's own 2D samples, per category.

    python -m lods.eval.fidelity                                  # 4 prompts per category, SDS and LODS-embedding,
                                                                  # Gaussians and NeRF, the default step count
    python -m lods.eval.fidelity --backbones gaussians --prompts 2 --steps 300 --out /tmp/fidelity
    python -m lods.eval.fidelity --plan                           # list the prompts and runs, run nothing
    python -m lods.eval.fidelity --out bench/fidelity_ft --against bench/fidelity   # two priors, paired by prompt
    python -m lods.eval.fidelity --backbones gaussians --priors sds@30,sds@10 \
        --variant "sds_noview=prior=sds,task.view_dependent=false"  # a study: variants beside the defaults

The LODS paper calls 2D generation the upper bound of 3D generation (Sec. 4.4). Here both are scored the same
way, against toyworld's ground truth at the evaluation orbit (``task.eval_views()``: 8 azimuths at 15 degrees):

- **the 2D bound**: for each evaluation view, the prior's own DDIM sample (``--bound-steps`` 50, CFG
  ``--bound-guidance`` 7.5, as the model card) of the prompt with that view's suffix (front / side / back, from
  ``lods.cameras.view_direction``), scored against the prompt's ground truth at the view of the suffix's range
  that matches it best (``lods.toyworld.evaluate.best_match``, as the card scores samples); the mean over the
  views and ``--bound-seeds`` seeds;
- **a 3D result**: the run's renders of the same evaluation views (``images/final_<i>.png``), each scored the
  same way (the best view within its view word's range: like with like), and also at its exact camera (the
  run's own ``gt/*`` metrics, which the bench reports).

Prompts: the first ``--prompts`` captions of the toyworld lists (``toyworld_single``, ``toyworld_surroundings``,
``toyworld_multiple``: the bench's prompts), fully specified (a 3D result commits to one scene; the premise
test covers open captions). Priors: ``--priors`` with their ``conf/prior`` defaults for ``model=toyworld``
(and ``--override`` for every run); a label ``<prior>@<s>`` runs that prior at guidance s, and
``--variant LABEL=OVERRIDES`` any other configuration: the table then also gives each variant minus its
prior's defaults, paired by prompt. Steps: ``--steps`` (default: the trainer's 3D default).

Output (``--out``, default bench/fidelity/): bound/<category>-<hash>/ (samples.png, bound.json),
runs/<backbone>/<prior>/seed<s>/<category>-<hash>/ (the train() run, fidelity.json written last),
results.json and table.md (per backbone, prior and category: the bound, the result, the gap with its bootstrap
95% interval over prompts), grid.png (per prompt: ground truth, bound and every result at the front, side and
back views). A relaunch continues where the last one stopped; the folder's settings are fixed by its first
launch (settings.json).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lods.eval.premise import check_recipe, fixed_settings, quiet_logs, train_or_resume, without_recipes, write_json
from lods.toyworld import grammar

PRIORS: dict[str, tuple[str, ...]] = {  # label -> overrides (conf/prior defaults)
    "sds": ("prior=sds",),
    "lods_embedding": ("prior=lods_embedding",),
    "lods_lora": ("prior=lods_lora",),
    "vsd": ("prior=vsd",),
    "sdi": ("prior=sdi",),
}
DEFAULT_PRIORS = ("sds", "lods_embedding")
BACKBONES = ("gaussians", "nerf")
ALLOWED_GAP = {"gaussians": (2.0, 0.05), "nerf": (3.0, 0.05)}  # the acceptance: dB PSNR, IoU
METRICS = ("psnr", "iou", "ssim", "delta_e", "saturation_bias")
EXACT = (*METRICS, "marker_missing", "marker_misplaced", "floater_mass")
GRID_VIEWS = (0.0, 90.0, 180.0)  # azimuths shown in grid.png (front, side, back at the evaluation elevation)
RECORD, BOUND_RECORD = "fidelity.json", "bound.json"
RUN_SETTINGS = ("export.frames=0", "export.assets=false")  # only the evaluation renders are needed


class FidelityError(ValueError):
    """Bad options."""


@dataclass(frozen=True)
class Prompt:
    text: str  # a full caption, no view suffix
    category: str

    @property
    def key(self) -> str:
        return f"{self.category}-{hashlib.sha1(self.text.encode()).hexdigest()[:10]}"


def select_prompts(per_category: int, categories: Sequence[str] = grammar.CATEGORIES) -> list[Prompt]:
    """The first ``per_category`` captions of each category's toyworld prompt list."""
    from lods.prompts import prompt_list

    if per_category < 1:
        raise FidelityError(f"--prompts must be >= 1 (prompts per category), got {per_category}")
    out = []
    for category in categories:
        if category not in grammar.CATEGORIES:
            raise FidelityError(f"unknown category '{category}'; choose from: {', '.join(grammar.CATEGORIES)}")
        out += [Prompt(text, category) for text in prompt_list(f"toyworld_{category}")[:per_category]]
    return out


def prior_overrides(label: str, variants: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """The Hydra overrides of a prior label: a name of :data:`PRIORS` (its conf/prior defaults), ``<name>@<s>``
    (that prior at guidance s, e.g. ``sds@30``), or a ``--variant`` label."""
    if variants and label in variants:
        return variants[label]
    name, at, guidance = label.partition("@")
    if name not in PRIORS:
        raise FidelityError(f"unknown prior '{label}' in --priors; choose from: {', '.join(PRIORS)} (or <name>@<s>)")
    if not at:
        return PRIORS[name]
    try:
        value = float(guidance)
    except ValueError:
        value = math.nan
    if not (value > 0):  # also rejects NaN; inf is a legal guidance
        raise FidelityError(f"guidance in '{label}' must be a positive number (or inf), got '{guidance}'")
    return (*PRIORS[name], f"prior.guidance_scale={guidance}")


def _top_level_split(text: str) -> list[str]:
    """``text`` split at the commas outside brackets (a Hydra list value, ``key=[300,600]``, stays whole)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[({") - (char in "])}")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def parse_variant(spec: str) -> tuple[str, tuple[str, ...]]:
    """``--variant LABEL=OVERRIDE[,OVERRIDE...]``, e.g. ``sds_tmax0.5=prior=sds,prior.timesteps.t_max=0.5``;
    a list value keeps its commas (``backbone.halo_fade_steps=[300,600]``)."""
    label, eq, rest = spec.partition("=")
    label = label.strip()
    overrides = tuple(o.strip() for o in _top_level_split(rest) if o.strip())
    if not eq or not label or not overrides or any("=" not in o for o in overrides):
        raise FidelityError(f"--variant takes LABEL=key=value[,key=value...], got '{spec}'")
    if label.partition("@")[0] in PRIORS or "/" in label:
        raise FidelityError(f"--variant label '{label}' must not be a prior name (or contain '/'); pick another")
    return label, overrides


def _choices(spec: str, allowed: Sequence[str], option: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        if name not in allowed:
            raise FidelityError(f"unknown {option[2:-1]} '{name}' in {option}; choose from: {', '.join(allowed)}")
    if not names:
        raise FidelityError(f"{option} is empty; choose from: {', '.join(allowed)}")
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------------------------------------
# Scoring like with like.


def view_captions(prompt: str, views: Sequence[tuple[float, float]]) -> list[str]:
    """The prompt with each view's suffix (``lods.cameras.view_direction`` of its azimuth and elevation)."""
    from lods.cameras import view_direction

    return [grammar.with_view_suffix(prompt, view_direction(a, e)) for a, e in views]


def score_views(images: torch.Tensor, prompt: str, views: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Mean metrics of ``images`` [V, 3, H, W], image i shown for ``views[i]``: each against the prompt's ground
    truth at the view that matches it best among ``views[i]`` itself and the views of its view word's range
    (``lods.toyworld.evaluate.candidate_views``, a grid that need not hold ``views[i]``): a 2D sample is
    scored as the model card scores it, and a perfect 3D render still scores perfectly."""
    from lods.toyworld.metrics import image_metrics

    if images.shape[0] != len(views):
        raise ValueError(f"{images.shape[0]} images for {len(views)} views")
    rows = []
    for image, view in zip(images.float().cpu(), views):
        gt = _candidates(prompt, (float(view[0]), float(view[1])), image.shape[-1])
        best = int(((gt.rgb - image[None]) ** 2).mean(dim=(1, 2, 3)).argmin())
        rows.append(image_metrics(image[None], type(gt)(**{k: v[best : best + 1] for k, v in vars(gt).items()})))
    return _mean(rows, METRICS)


@functools.lru_cache(maxsize=64)
def _candidates(prompt: str, view: tuple[float, float], size: int):
    """Ground truth of ``prompt`` at ``view`` and at every view of its view word's range (render-once cache)."""
    from lods.cameras import view_direction
    from lods.toyworld.evaluate import candidate_views
    from lods.toyworld.render import eval_cameras, render_scene

    views = [view, *(v for v in candidate_views(view_direction(*view)) if v != view)]
    return render_scene(grammar.parse_caption(prompt), eval_cameras(size, views))


def _mean(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


# ----------------------------------------------------------------------------------------------------------
# The 2D bound.


def bound_one(
    model,
    prompt: Prompt,
    views,
    seeds: Sequence[int],
    steps: int,
    guidance: float,
    out: Path,
    weights: str | None = None,
) -> dict:
    """The 2D bound of one prompt (read back from bound/<key>/bound.json when there). ``weights``: the digest of
    the prior's weights (``lods.runs.weights_digest``), kept in the record; a record made with other weights is
    refused rather than read back as this prior's bound."""
    from lods.toyworld.evaluate import sample
    from lods.utils.images import save_grid

    folder = out / "bound" / prompt.key
    record_file = folder / BOUND_RECORD
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        if weights is not None and record.get("weights", weights) != weights:
            raise FidelityError(
                f"'{record_file}' is the bound of other weights (model.weights: {record['weights']!r} -> "
                f"{weights!r}); move the folder away or choose another --out"
            )
        return record
    captions = view_captions(prompt.text, views)
    started = time.perf_counter()
    per_seed, images = [], []
    for seed in seeds:
        samples = sample(model, captions, num_steps=steps, guidance_scale=guidance, seed=seed)
        per_seed.append(score_views(samples, prompt.text, views))
        images.append(samples)
    save_grid(torch.cat(images), folder / "samples.png", columns=len(views))
    record = {
        "prompt": prompt.text,
        "category": prompt.category,
        "views": [list(v) for v in views],
        "captions": captions,
        "seeds": list(seeds),
        "weights": weights,
        "metrics": _mean(per_seed, METRICS),
        "per_seed": per_seed,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(record_file, record)
    return record


# ----------------------------------------------------------------------------------------------------------
# 3D runs.


@dataclass(frozen=True)
class RunSpec:
    backbone: str
    prior: str  # a label: a prior name, <name>@<guidance>, or a --variant label
    prompt: Prompt
    seed: int
    prior_overrides: tuple[str, ...] = ()  # the label's overrides (default: prior_overrides(prior))

    def directory(self, out: Path) -> Path:
        return out / "runs" / self.backbone / self.prior.replace("@", "_s") / f"seed{self.seed}" / self.prompt.key

    def overrides(self, model: str, extra: Sequence[str]) -> list[str]:
        """The run's Hydra overrides: where two set one key, the label's win over ``--override``'s."""
        return [
            f"model={model}",
            f"backbone={self.backbone}",
            f"seed={self.seed}",
            f"prompt='{self.prompt.text}'",
            *RUN_SETTINGS,
            *extra,
            *(self.prior_overrides or prior_overrides(self.prior)),
        ]


def run_views(run_dir: Path) -> list[tuple[float, float]]:
    """The evaluation views of a run (its config's task.eval_azimuths at task.eval_elevation)."""
    from lods.runs import read_config

    task = read_config(run_dir).task
    return [(float(a), float(task.eval_elevation)) for a in task.eval_azimuths]


def run_one(spec: RunSpec, steps: int | None, out: Path, model: str, extra: Sequence[str], accelerator: str) -> dict:
    """One 3D run's record (fidelity.json): read back when finished, else trained (or resumed) and scored."""
    from lods.runs import final_images, run_recipe

    run_dir = spec.directory(out)
    record_file = run_dir / RECORD
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        asked = list(spec.prior_overrides or prior_overrides(spec.prior))
        if record.get("prior_overrides", asked) != asked:
            raise FidelityError(
                f"{run_dir} ran '{spec.prior}' as {record['prior_overrides']}, not {asked}: give the variant "
                "another label (or --out another folder)"
            )
        check_recipe(run_dir, spec.overrides(model, extra), steps, record.get("recipe"))
        return record
    if steps is None:  # the trainer's default (3D) step count, or the one a variant sets (trainer.max_steps=300)
        from lods.config import compose_config

        steps = int(compose_config(spec.overrides(model, extra)).trainer.max_steps)
    metrics = train_or_resume(run_dir, spec.overrides(model, extra), steps, accelerator)
    views = run_views(run_dir)
    record = {
        "backbone": spec.backbone,
        "prior": spec.prior,
        "prompt": spec.prompt.text,
        "category": spec.prompt.category,
        "seed": spec.seed,
        "prior_overrides": list(spec.prior_overrides or prior_overrides(spec.prior)),
        "steps": metrics.get("steps"),
        "metrics": score_views(final_images(run_dir), spec.prompt.text, views),
        "exact": {k: metrics[f"gt/{k}"] for k in EXACT if isinstance(metrics.get(f"gt/{k}"), (int, float))},
        "seconds_per_step": metrics.get("seconds_per_step"),
        "wall_seconds": metrics.get("wall_seconds"),
        "run_dir": str(run_dir.relative_to(out)),
        "recipe": run_recipe(run_dir),
    }
    write_json(record_file, record)
    return record


# ----------------------------------------------------------------------------------------------------------
# The table.


def summarize(bounds: Sequence[dict], runs: Sequence[dict]) -> dict:
    """{category or "all": {"bound": means, "<backbone>/<prior>": {"result": means, "exact": means, "gap_psnr":
    interval, "gap_iou": interval, "n": prompts}}}: gaps are bound minus result over the prompts both have
    (a run's seeds averaged first), with bootstrap 95% intervals (lods.stats). A variant (``sds@30``, a
    ``--variant`` label) also gets ``vs_default_psnr`` / ``vs_default_iou``: variant minus its prior's default
    run, paired by prompt, when that default ran on the same backbone."""
    from lods.stats import paired_difference

    bound_of = {b["prompt"]: b for b in bounds}
    base_of = {f"{r['backbone']}/{r['prior']}": f"{r['backbone']}/{_base_prior(r)}" for r in runs}
    table: dict = {}
    for category in [*grammar.CATEGORIES, "all"]:
        mine = [b for b in bounds if category in ("all", b["category"])]
        if not mine:
            continue
        cell: dict = {"bound": {**_mean([b["metrics"] for b in mine], METRICS), "n": len(mine)}}
        results: dict[str, dict[str, dict]] = {}
        for name in _ordered_runs(runs):
            backbone, prior = name.split("/")
            per_prompt: dict[str, list[dict]] = {}
            for r in runs:
                if (r["backbone"], r["prior"]) == (backbone, prior) and category in ("all", r["category"]):
                    per_prompt.setdefault(r["prompt"], []).append(r)
            if not per_prompt:
                continue
            result = {p: _mean([r["metrics"] for r in rs], METRICS) for p, rs in per_prompt.items()}
            exact_keys = [k for k in EXACT if all(k in r["exact"] for rs in per_prompt.values() for r in rs)]
            exact = [_mean([r["exact"] for r in rs], exact_keys) for rs in per_prompt.values()]
            entry = {
                "result": _mean(list(result.values()), METRICS),
                "exact": _mean(exact, exact_keys),
                "n": len(per_prompt),
            }
            for key in ("psnr", "iou"):
                bound_values = {p: b["metrics"][key] for p, b in bound_of.items()}
                entry[f"gap_{key}"] = paired_difference(bound_values, {p: m[key] for p, m in result.items()}).as_dict()
            results[name] = result
            cell[name] = entry
        for name, result in results.items():
            base = results.get(base_of[name]) if base_of[name] != name else None
            for key in ("psnr", "iou") if base else ():
                mine_, theirs = {p: m[key] for p, m in result.items()}, {p: m[key] for p, m in base.items()}
                cell[name][f"vs_default_{key}"] = paired_difference(mine_, theirs).as_dict()
        table[category] = cell
    return table


def _base_prior(record: dict) -> str:
    """The conf/prior name a run's label stands on (``sds@30`` -> ``sds``; a --variant: its ``prior=`` override)."""
    for override in record.get("prior_overrides", ()):
        if override.startswith("prior="):
            return override.split("=", 1)[1]
    return record["prior"].partition("@")[0]


def _ordered_runs(runs: Sequence[dict]) -> list[str]:
    """Backbone, then prior in PRIORS order, its default first, then its variants by guidance and name."""
    keys = {}
    for r in runs:
        base, label = _base_prior(r), r["prior"]
        guidance = label.partition("@")[2]
        rank = (
            BACKBONES.index(r["backbone"]) if r["backbone"] in BACKBONES else len(BACKBONES),
            list(PRIORS).index(base) if base in PRIORS else len(PRIORS),
            label != base,
            float(guidance) if guidance else math.inf,
            label,
        )
        keys[f"{r['backbone']}/{label}"] = rank
    return sorted(keys, key=keys.get)


def _interval(d: dict, fmt: str) -> str:
    if not d["n"]:
        return "–"
    if d["n"] < 2:
        return fmt.format(d["mean"])
    return f"{fmt.format(d['mean'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def markdown(table: dict, settings: dict) -> str:
    lines = [
        "# Fidelity: text-to-3D against the prior's own 2D samples",
        "",
        f"3D: {settings.get('steps') or 'default'} steps, model={settings['model']}"
        + (f" (weights: {settings['model_path']})" if settings.get("model_path") else "")
        + (f", overrides: {' '.join(settings['overrides'])}" if settings.get("overrides") else "")
        + f"; 2D bound: DDIM {settings['bound_steps']} steps, CFG {settings['bound_guidance']:g}, seeds "
        f"{settings['bound_seeds']}. Every image is scored against the ground truth at the best view among its own and those of its view "
        "word's range (front / side / back), 8 evaluation views; `exact` scores the 3D renders at their own "
        "cameras (the bench's gt/ metrics). gap = bound - result, mean over prompts with a bootstrap 95% interval; "
        "ok: the gap is within the issue's allowance (Gaussians 2 dB, NeRF 3 dB, both 0.05 IoU) on the means.",
        "",
        "| category | result | n | PSNR | IoU | SSIM | ΔE | gap PSNR (dB) | gap IoU | ok | exact PSNR | exact IoU |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|",
    ]
    for category, cell in table.items():
        b = cell["bound"]
        lines.append(
            f"| {category} | 2D bound | {b['n']} | {b['psnr']:.2f} | {b['iou']:.3f} | {b['ssim']:.3f} | "
            f"{b['delta_e']:.1f} | | | | | |"
        )
        for name, entry in cell.items():
            if name == "bound":
                continue
            r, e = entry["result"], entry["exact"]
            allowed_db, allowed_iou = ALLOWED_GAP.get(name.split("/")[0], (math.inf, math.inf))
            ok = entry["gap_psnr"]["mean"] <= allowed_db and entry["gap_iou"]["mean"] <= allowed_iou
            lines.append(
                f"| {category} | {name} | {entry['n']} | {r['psnr']:.2f} | {r['iou']:.3f} | {r['ssim']:.3f} | "
                f"{r['delta_e']:.1f} | {_interval(entry['gap_psnr'], '{:+.2f}')} | "
                f"{_interval(entry['gap_iou'], '{:+.3f}')} | {'yes' if ok else 'no'} | "
                f"{e.get('psnr', math.nan):.2f} | {e.get('iou', math.nan):.3f} |"
            )
    variants = [
        (category, name, entry)
        for category, cell in table.items()
        for name, entry in cell.items()
        if "vs_default_psnr" in entry
    ]
    if variants:
        lines += [
            "",
            "## Variants against their prior's defaults",
            "",
            "Variant minus the same prior with its conf/prior defaults, same backbone, paired by prompt (bootstrap "
            "95% interval; * excludes zero).",
            "",
            "| category | variant | n | Δ PSNR (dB) | Δ IoU |",
            "|---|---|---:|---|---|",
        ]
        for category, name, entry in variants:
            cells = [
                _interval(entry[f"vs_default_{key}"], fmt)
                + ("*" if entry[f"vs_default_{key}"]["excludes_zero"] else "")
                for key, fmt in (("psnr", "{:+.2f}"), ("iou", "{:+.3f}"))
            ]
            lines.append(f"| {category} | {name} | {entry['vs_default_psnr']['n']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def compare_folders(mine: Path, theirs: Path) -> dict:
    """This folder's bound and results minus another's (e.g. the same prompts with another prior's weights),
    paired by prompt (a run's seeds averaged first): {category or "all": {"bound" or "<backbone>/<prior>": {
    "psnr", "iou" (and for results "gap_psnr", "gap_iou"): paired difference}}}, bootstrap 95% intervals."""
    from lods.stats import paired_difference

    def per_prompt(out: Path) -> tuple[dict, dict]:
        bounds, runs = finished(out)
        results: dict[str, dict[str, list[dict]]] = {}
        for r in runs:
            results.setdefault(f"{r['backbone']}/{r['prior']}", {}).setdefault(r["prompt"], []).append(r["metrics"])
        means = {name: {p: _mean(ms, METRICS) for p, ms in by.items()} for name, by in results.items()}
        return {b["prompt"]: b for b in bounds}, means

    (bounds_a, runs_a), (bounds_b, runs_b) = per_prompt(mine), per_prompt(theirs)
    category_of = {p: b["category"] for p, b in {**bounds_b, **bounds_a}.items()}
    table: dict = {}
    for category in [*grammar.CATEGORIES, "all"]:

        def pick(values: dict, category: str = category) -> dict:
            return {p: v for p, v in values.items() if category in ("all", category_of.get(p))}

        cell: dict = {}
        a, b = (
            pick({p: r["metrics"] for p, r in bounds_a.items()}),
            pick({p: r["metrics"] for p, r in bounds_b.items()}),
        )
        if set(a) & set(b):
            cell["bound"] = {k: paired_difference(_key(a, k), _key(b, k)).as_dict() for k in ("psnr", "iou")}
        for name in _ordered_runs([{"backbone": n.split("/")[0], "prior": n.split("/")[1]} for n in runs_a]):
            ra, rb = pick(runs_a[name]), pick(runs_b.get(name, {}))
            if not set(ra) & set(rb):
                continue
            entry = {k: paired_difference(_key(ra, k), _key(rb, k)).as_dict() for k in ("psnr", "iou")}
            for k in ("psnr", "iou"):  # gap = bound - result, so (bound_a - result_a) - (bound_b - result_b)
                ga = {p: a[p][k] - m[k] for p, m in ra.items() if p in a}
                gb = {p: b[p][k] - m[k] for p, m in rb.items() if p in b}
                entry[f"gap_{k}"] = paired_difference(ga, gb).as_dict()
            cell[name] = entry
        if cell:
            table[category] = cell
    return table


def _key(per_prompt: dict[str, dict], key: str) -> dict[str, float]:
    return {p: m[key] for p, m in per_prompt.items()}


def against_markdown(table: dict, mine: Path, theirs: Path) -> str:
    def cell(d: dict, fmt: str) -> str:
        return _interval(d, fmt) + ("*" if d["excludes_zero"] else "")

    lines = [
        f"# Fidelity: {mine} minus {theirs}",
        "",
        "Paired by prompt (seeds averaged first), bootstrap 95% interval over prompts; * excludes zero. The gap "
        "is bound - result, so a negative Δ gap means this folder's 3D result sits closer to its own bound.",
        "",
        "| category | what | n | Δ PSNR (dB) | Δ IoU | Δ gap PSNR (dB) | Δ gap IoU |",
        "|---|---|---:|---|---|---|---|",
    ]
    for category, entries in table.items():
        for name, entry in entries.items():
            gaps = [
                cell(entry[k], f) if k in entry else "" for k, f in (("gap_psnr", "{:+.2f}"), ("gap_iou", "{:+.3f}"))
            ]
            lines.append(
                f"| {category} | {'2D bound' if name == 'bound' else name} | {entry['psnr']['n']} | "
                f"{cell(entry['psnr'], '{:+.2f}')} | {cell(entry['iou'], '{:+.3f}')} | {gaps[0]} | {gaps[1]} |"
            )
    return "\n".join(lines) + "\n"


def finished(out: Path) -> tuple[list[dict], list[dict]]:
    bounds = [json.loads(p.read_text()) for p in sorted((out / "bound").glob(f"*/{BOUND_RECORD}"))]
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"*/*/*/*/{RECORD}"))]
    return bounds, runs


def write_grid(out: Path, prompts: Sequence[Prompt], runs: Sequence[dict]) -> Path | None:
    """grid.png: one row per prompt; per grid view (front, side, back) the ground truth, the bound's first seed
    and every finished result (in table order; blank where the run's images/final_*.png are missing), at the
    evaluation elevation."""
    import numpy as np
    from PIL import Image

    from lods.runs import final_images
    from lods.toyworld.render import render_caption
    from lods.utils.images import save_grid

    names = _ordered_runs(runs)
    rows, picks = [], []
    for prompt in prompts:
        samples_file = out / "bound" / prompt.key / "samples.png"
        bound_file = out / "bound" / prompt.key / BOUND_RECORD
        if not samples_file.is_file():
            continue
        views = [tuple(v) for v in json.loads(bound_file.read_text())["views"]]
        picks = [i for i, (a, _) in enumerate(views) if a in GRID_VIEWS]
        array = np.asarray(Image.open(samples_file).convert("RGB"), dtype=np.float32) / 255
        size = array.shape[1] // len(views)
        bound = torch.from_numpy(array[:size]).permute(2, 0, 1)  # the first seed's row
        gt = render_caption(prompt.text, [views[i][0] for i in picks], [views[i][1] for i in picks], size).rgb
        mine = {}
        for r in runs:
            if r["prompt"] == prompt.text and r["seed"] == 0:
                try:  # a run whose images are not on this machine (only its record was committed) stays blank
                    mine[f"{r['backbone']}/{r['prior']}"] = final_images(out / r["run_dir"])
                except FileNotFoundError:
                    pass
        for j, i in enumerate(picks):
            rows.append(gt[j])
            rows.append(bound[:, :, i * size : (i + 1) * size])
            for name in names:
                if name in mine:
                    rows.append(mine[name][i])
                else:
                    rows.append(torch.ones(3, size, size))
    if not rows:
        return None
    columns = len(picks) * (2 + len(names))
    return save_grid(torch.stack(rows), out / "grid.png", columns=columns)


def write_outputs(out: Path, settings: dict, prompts: Sequence[Prompt]) -> dict:
    bounds, runs = finished(out)
    table = summarize(bounds, runs)
    write_json(
        out / "results.json", {"settings": settings, "table": table, "bounds": bounds, "runs": without_recipes(runs)}
    )
    (out / "table.md").write_text(
        markdown(table, settings)
        + "\ngrid.png: one row per prompt; for the front, side and back views: ground truth, 2D bound, then "
        + ", ".join(_ordered_runs(runs))
        + ".\n"
    )
    write_grid(out, prompts, runs)
    return table


# ----------------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lods.eval.fidelity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=4, help="prompts per category (default 4)")
    parser.add_argument("--categories", default=",".join(grammar.CATEGORIES))
    parser.add_argument("--priors", default=",".join(DEFAULT_PRIORS), help=f"comma-separated: {', '.join(PRIORS)}")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help=f"comma-separated: {', '.join(BACKBONES)}")
    parser.add_argument("--seeds", default="0", help="3D run seeds, comma-separated (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="3D steps (default: the trainer's 3D default)")
    parser.add_argument("--bound-steps", type=int, default=50, help="DDIM steps of the 2D bound (default 50)")
    parser.add_argument("--bound-guidance", type=float, default=7.5, help="CFG of the 2D bound (default 7.5)")
    parser.add_argument("--bound-seeds", default="0,1", help="sample seeds of the 2D bound (default 0,1)")
    parser.add_argument("--model", default="toyworld")
    parser.add_argument(
        "--model-path",
        type=Path,
        default=None,
        help="with --model toyworld: the prior's folder (default: the shipped one), e.g. one trained on from it "
        "(python -m lods.toyworld.prior init=...); its bound and 3D runs use it (model.path=...)",
    )
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override for every 3D run")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=OVERRIDES",
        help="one more prior configuration, e.g. sds_tmax0.5=prior=sds,prior.timesteps.t_max=0.5 (repeatable); "
        "tabulated beside, and against, its prior's defaults",
    )
    parser.add_argument("--accelerator", default="cpu", help="Lightning's accelerator: cpu (default), gpu, auto")
    parser.add_argument("--out", type=Path, default=Path("bench/fidelity"))
    parser.add_argument("--plan", action="store_true", help="print the prompts and runs, run nothing")
    parser.add_argument("--bound-only", action="store_true", help="compute the 2D bound, no 3D runs")
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: compare --out's finished bound and runs with another fidelity folder's (e.g. another "
        "prior's weights), paired by prompt; writes <out>/against.md and against.json",
    )
    args = parser.parse_args(argv)
    try:
        args.prompt_list = select_prompts(args.prompts, [c.strip() for c in args.categories.split(",") if c.strip()])
        args.variants = dict(parse_variant(v) for v in args.variant)
        args.priors = _labels(args.priors, args.variants)
        args.backbones = _choices(args.backbones, BACKBONES, "--backbones")
        args.seeds = _integers(args.seeds, "--seeds")
        args.bound_seeds = _integers(args.bound_seeds, "--bound-seeds")
        if args.steps is not None and args.steps < 1:
            raise FidelityError(f"--steps must be >= 1, got {args.steps}")
        if args.bound_steps < 1:
            raise FidelityError(f"--bound-steps must be >= 1, got {args.bound_steps}")
        if args.model_path is not None:
            if args.model != "toyworld":
                raise FidelityError(f"--model-path is for --model toyworld, not '{args.model}'")
            if not (args.model_path / "model_index.json").is_file():
                raise FidelityError(f"--model-path '{args.model_path}' holds no SD-format model (model_index.json)")
            args.model_path = args.model_path.resolve()
    except FidelityError as error:
        parser.error(str(error))
    return args


def _labels(spec: str, variants: dict[str, tuple[str, ...]]) -> list[str]:
    """--priors' labels (each checked by prior_overrides), then the --variant labels."""
    labels = [n.strip() for n in spec.split(",") if n.strip()]
    for label in labels:
        prior_overrides(label)
    if not labels and not variants:
        raise FidelityError(f"--priors is empty; choose from: {', '.join(PRIORS)} (or <name>@<s>)")
    return list(dict.fromkeys([*labels, *variants]))


def _integers(text: str, option: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values:
        raise FidelityError(f"{option} takes comma-separated integers, got '{text}'")
    return list(dict.fromkeys(values))


def main(argv: list[str] | None = None) -> dict:
    from lods.toyworld.render import EVAL_VIEWS

    args = parse_args(argv)
    quiet_logs()
    if args.against is not None:
        for folder in (args.out, args.against):
            if not (folder / "settings.json").is_file():
                raise SystemExit(f"error: '{folder}' is not a fidelity folder (no settings.json)")
        table = compare_folders(args.out, args.against)
        text = against_markdown(table, args.out, args.against)
        write_json(args.out / "against.json", {"against": str(args.against), "table": table})
        (args.out / "against.md").write_text(text)
        print(text)
        return table
    specs = [
        RunSpec(b, p, prompt, s, prior_overrides(p, args.variants))
        for b in args.backbones
        for p in args.priors
        for prompt in args.prompt_list
        for s in args.seeds
    ]
    print(
        f"{len(args.prompt_list)} prompts (2D bound: {len(args.bound_seeds)} seed(s) x {len(EVAL_VIEWS)} views), "
        f"{len(specs)} 3D runs: {', '.join(args.backbones)} x {', '.join(args.priors)} x seeds {args.seeds}"
    )
    if args.plan:
        for prompt in args.prompt_list:
            print(f"  {prompt.category:12} {prompt.text}")
        return {}
    settings = {
        "steps": args.steps,
        "model": args.model,
        "model_path": None if args.model_path is None else str(args.model_path),
        "overrides": list(args.override),
        "bound_steps": args.bound_steps,
        "bound_guidance": args.bound_guidance,
        "bound_seeds": args.bound_seeds,
    }
    out = args.out
    try:
        fixed_settings(out, settings)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "settings.json", settings)
    started = time.perf_counter()
    if args.model == "toyworld":
        from lods.runs import weights_digest
        from lods.toyworld.model import PRIOR_DIR, load_prior

        path = None if args.model_path is None else str(args.model_path)
        model = load_prior(path, device="cpu" if args.accelerator == "cpu" else "auto")
        weights = weights_digest(PRIOR_DIR if path is None else Path(path).expanduser())
        for i, prompt in enumerate(args.prompt_list, 1):
            try:
                record = bound_one(
                    model, prompt, EVAL_VIEWS, args.bound_seeds, args.bound_steps, args.bound_guidance, out, weights
                )
            except FidelityError as error:
                raise SystemExit(f"error: {error}") from None
            m = record["metrics"]
            print(f"[bound {i}/{len(args.prompt_list)}] '{prompt.text}': psnr {m['psnr']:.2f}, iou {m['iou']:.3f}")
        del model
    if not args.bound_only:
        from lods.runs import RunDirectoryError

        extra = [*args.override, *([] if args.model_path is None else [f"model.path={args.model_path}"])]
        for i, spec in enumerate(specs, 1):
            t = time.perf_counter()
            done = (spec.directory(out) / RECORD).is_file()
            try:
                record = run_one(spec, args.steps, out, args.model, extra, args.accelerator)
            except (FidelityError, RunDirectoryError) as error:
                raise SystemExit(f"error: {error}") from None
            m, e = record["metrics"], record["exact"]
            state = "finished before" if done else f"{time.perf_counter() - t:.0f} s"
            print(
                f"[{i}/{len(specs)}] {spec.backbone} {spec.prior} '{spec.prompt.text}': psnr {m['psnr']:.2f}, "
                f"iou {m['iou']:.3f} (exact {e.get('psnr', math.nan):.2f} / {e.get('iou', math.nan):.3f}) ({state})"
            )
            if not done:
                write_outputs(out, settings, args.prompt_list)
    table = write_outputs(out, settings, args.prompt_list)
    print(f"done in {time.perf_counter() - started:.0f} s: {out / 'table.md'}, {out / 'results.json'}")
    print((out / "table.md").read_text())
    return table


if __name__ == "__main__":
    main()

"""The toyworld bench (a T3Bench analogue): aggregate a multirun of prompts x priors x backbones.

    python train.py -m sweep=bench_mini       # the runs (make bench-mini does both steps)
    python -m lods.bench bench/mini           # -> bench/mini/results.json, table.md, grid.png
    python -m lods.bench multirun/<date>/<time> --by prior.guidance_scale   # e.g. the CFG ablation

Each run of the sweep (any directory below the given one holding metrics.json) is one prompt, prior and
backbone scored against ground truth at the evaluation orbit. The table is laid out like the LODS paper's
Table 1 (per category, per prior), with ground-truth metrics in place of ImageReward / GPT-4 judgements,
and carries each configuration's wall time and peak memory. The grid shows every run's front view under
the ground truth of its prompt.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from lods.runs import CONFIG_FILE, read_config, read_metrics
from lods.stats import PairedDifference, format_difference, paired_difference
from lods.toyworld.grammar import CATEGORIES
from lods.toyworld.metrics import aggregate as aggregate_metrics

# (metrics.json key, column title, format); arrows say which way is better.
PER_CATEGORY = (("gt/iou", "IoU ↑", "{:.2f}"), ("gt/psnr", "PSNR ↑", "{:.1f}"), ("gt/delta_e", "ΔE ↓", "{:.1f}"))
OVERALL = (
    ("gt/iou", "IoU ↑", "{:.3f}"),
    ("gt/psnr", "PSNR ↑", "{:.2f}"),
    ("gt/ssim", "SSIM ↑", "{:.3f}"),
    ("gt/delta_e", "ΔE ↓", "{:.1f}"),
    ("gt/saturation_bias", "sat. bias", "{:+.3f}"),
    ("gt/floater_mass", "floaters ↓", "{:.3f}"),
    ("gt/marker_missing", "marker missing ↓", "{:.2f}"),
    ("gt/marker_misplaced", "Janus ↓", "{:.2f}"),
    ("clip/score", "CLIP ↑", "{:.1f}"),
    ("seconds_per_step", "s/step", "{:.3f}"),
    ("wall_seconds", "wall s", "{:.0f}"),
    ("peak_memory_mb", "peak MiB", "{:.0f}"),
)
# (metrics.json key, title, which way is better: 1 higher, -1 lower, "abs" closer to zero) for paired differences.
COMPARED = (
    ("gt/iou", "IoU", 1),
    ("gt/psnr", "PSNR", 1),
    ("gt/ssim", "SSIM", 1),
    ("gt/delta_e", "ΔE", -1),
    ("gt/saturation_bias", "abs. sat. bias", "abs"),
    ("gt/floater_mass", "floaters", -1),
    ("gt/marker_missing", "marker missing", -1),
    ("gt/marker_misplaced", "Janus", -1),
    ("gt/distinct_scenes", "distinct scenes", 1),
    ("gt/validity@0.5", "validity", 1),
    ("clip/score", "CLIP", 1),
)
# Open captions, per prompt over its seeds (see over_seeds): (key, title, better higher).
OVER_SEEDS = (
    ("seeds/distinct_scenes", "distinct scenes over seeds", 1),
    ("seeds/validity@0.5", "validity over seeds", 1),
)
KINDS = ("full", "open")
DEFAULT_BASELINE = "sds"
LABEL_WIDTH = 168  # pixels of the grid's row labels
PRIOR_ORDER = ("sds", "sds_ref", "vsd", "sdi", "lods_embedding", "lods_lora", "dds")


def collect(sweep_dir: Path, by: str | None = None) -> list[dict]:
    """One row per finished run below ``sweep_dir``: its prompt, prior, backbone, category and metrics.

    ``by`` (a config key, e.g. ``prior.guidance_scale``) splits each prior's rows by that key's value
    (``sds @ 100``), for sweeps over a setting rather than over priors.
    """
    rows = []
    for metrics_file in sorted(sweep_dir.rglob("metrics.json"), key=lambda p: str(p)):
        run_dir = metrics_file.parent
        metrics = read_metrics(run_dir)
        choices = {}
        hydra_file = run_dir / ".hydra" / "hydra.yaml"
        if hydra_file.is_file():
            choices = OmegaConf.to_container(OmegaConf.load(hydra_file).hydra.runtime.choices)
        prior = choices.get("prior") or metrics.get("prior")
        # A folder holding only metrics.json (results copied without their run) still counts, without a seed.
        config = read_config(run_dir) if by or (run_dir / CONFIG_FILE).is_file() else OmegaConf.create()
        if by:
            prior = f"{prior} @ {OmegaConf.select(config, by)}"
        rows.append(
            {
                "run_dir": os.path.relpath(run_dir),
                "prompt": metrics.get("prompt"),
                "seed": config.get("seed"),
                "category": metrics.get("gt/category", "other"),
                "kind": "open" if "gt/set_size" in metrics else "full",  # an open caption names a set of scenes
                "matched": metrics.get("gt/matched"),
                "prior": prior,
                "backbone": choices.get("backbone") or metrics.get("backbone", "image"),
                "image": os.path.relpath(run_dir / metrics["image"]) if metrics.get("image") else None,
                "metrics": {
                    k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                },
            }
        )
    return rows


def summarize(rows: list[dict]) -> dict:
    """{backbone: {prior: {category or "all": {metric: mean over prompts, "count": n}}}} (means as in
    :func:`lods.toyworld.metrics.aggregate`: NaN values, e.g. marker rates without a marker, left out)."""
    grouped: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row["backbone"]][row["prior"]].append(row)

    def by_group(runs: list[dict]) -> dict:
        metrics = [r["metrics"] for r in runs]
        kinds = aggregate_metrics(metrics, [r.get("kind", "full") for r in runs])
        return {
            **aggregate_metrics(metrics, [r["category"] for r in runs]),
            **{k: kinds[k] for k in KINDS if k in kinds},
        }

    return {backbone: {prior: by_group(runs) for prior, runs in priors.items()} for backbone, priors in grouped.items()}


def over_seeds(rows: list[dict]) -> list[dict]:
    """One row per open-caption prompt, prior and backbone, with what its seeds did together:
    seeds/distinct_scenes (how many different members of the caption's set its runs matched; a 2D run
    matches one per particle) and seeds/validity@0.5 (the share of its results whose best match reaches IoU
    0.5, as :data:`lods.toyworld.metrics.VALIDITY_IOU`). Only prompts that ran with every seed the backbone's bench
    has are counted, so that the counts compare (a partial bench leaves the rest out), and none of a backbone
    that ran one seed only (one 3D run matches one scene: nothing to count)."""
    from lods.toyworld.metrics import VALIDITY_IOU

    seeds = defaultdict(set)
    groups: dict = defaultdict(list)
    for row in rows:
        seeds[row["backbone"]].add(row.get("seed"))
        if row.get("kind") == "open" and row.get("matched"):
            groups[row["backbone"], row["prior"], row["prompt"]].append(row)
    out = []
    for (backbone, prior, prompt), runs in groups.items():
        if len(seeds[backbone]) < 2 or {r.get("seed") for r in runs} != seeds[backbone]:
            continue
        valid = f"gt/validity@{VALIDITY_IOU:g}"  # a 2D run's share of valid particles; else its one result
        validity = [r["metrics"].get(valid, float(r["metrics"].get("gt/iou", math.nan) >= VALIDITY_IOU)) for r in runs]
        scenes = {m for r in runs for m in (r["matched"] if isinstance(r["matched"], list) else [r["matched"]])}
        out.append(
            {
                "prompt": prompt,
                "seed": None,
                "category": runs[0]["category"],
                "kind": "open",
                "prior": prior,
                "backbone": backbone,
                "metrics": {
                    "seeds/distinct_scenes": float(len(scenes)),
                    f"seeds/validity@{VALIDITY_IOU:g}": sum(validity) / len(validity),
                    "seeds/runs": float(len(runs)),
                },
            }
        )
    return out


def compare(rows: list[dict], a: str, b: str, metrics=COMPARED, seed: int = 0) -> dict:
    """Prior ``a`` minus prior ``b`` over the runs they share (same backbone, prompt and seed), per backbone
    and category (and "all"): {backbone: {category: {metric: PairedDifference.as_dict()}}}, only where
    both priors ran. The bootstrap of every cell is seeded with ``seed`` (see :mod:`lods.stats`)."""
    values: dict = defaultdict(lambda: defaultdict(dict))  # (backbone, prior) -> category -> (prompt, seed) -> metrics
    for row in rows:
        if row["prior"] in (a, b):
            key = (row["prompt"], row.get("seed"))
            for category in (row["category"], row.get("kind", "full"), "all"):
                values[row["backbone"], row["prior"]][category][key] = row["metrics"]
    out: dict = {}
    for backbone in sorted({backbone for backbone, _ in values}):
        if (backbone, a) not in values or (backbone, b) not in values:
            continue
        runs_a, runs_b = values[backbone, a], values[backbone, b]
        out[backbone] = {
            category: {
                key: paired_difference(
                    {k: m.get(key, math.nan) for k, m in runs_a[category].items()},
                    {k: m.get(key, math.nan) for k, m in runs_b[category].items()},
                    direction,
                    seed=seed,
                ).as_dict()
                for key, _, direction in metrics
            }
            for category in [*CATEGORIES, "other", *KINDS, "all"]
            if category in runs_a and category in runs_b
        }
    return out


def comparisons(rows: list[dict], baseline: str | None, pairs: list[tuple[str, str]], metrics=COMPARED) -> dict:
    """{"A - B": compare(rows, A, B)} for every other prior against ``baseline`` and every pair given."""
    priors = _ordered({row["prior"] for row in rows})
    wanted = [(p, baseline) for p in priors if baseline and p != baseline] + list(pairs)
    for a, b in wanted:
        for name in (a, b):
            if name not in priors:
                raise ValueError(f"prior '{name}' has no runs here; the priors are: {', '.join(priors)}")
    return {f"{a} - {b}": compare(rows, a, b, metrics) for a, b in dict.fromkeys(wanted)}


PAIRED_INTRO = (
    "A - B over the runs both priors made (same backbone, prompt and seed): mean difference, bootstrap 95% "
    "interval of the mean, and the share of pairs A wins (ties half). * = the interval excludes zero. "
    "abs. sat. bias compares distances from zero (lower is better), as ΔE, floaters and the marker rates; the "
    "others are better higher. Rows: each category, each caption kind (full, open) and all prompts."
)
OVER_SEEDS_INTRO = (
    "Open captions only, one pair per prompt: what a prior's runs of one prompt over all the seeds did "
    "together. distinct scenes over seeds: how many different members of the caption's set the runs matched "
    "(at most the number of seeds); validity: the share of the runs whose best match reaches IoU 0.5."
)


def comparison_markdown(
    diffs: dict, metrics=COMPARED, title: str = "paired differences", intro: str = PAIRED_INTRO
) -> str:
    """Per backbone, one row per pair and category: each metric's mean paired difference, its 95% interval
    and A's win rate; a star marks an interval that excludes zero."""
    lines = [f"## {title}", "", intro]
    backbones = sorted({backbone for pair in diffs.values() for backbone in pair})
    for backbone in backbones:
        present = [
            (k, t)
            for k, t, _ in metrics
            if any(c.get(k, {}).get("n", 0) for p in diffs.values() for c in p.get(backbone, {}).values())
        ]
        header = ["A - B", "category", "pairs"] + [t for _, t in present]
        lines += ["", f"### backbone = {backbone}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, pair in diffs.items():
            for category, cells in pair.get(backbone, {}).items():
                n = max((cells[k]["n"] for k, _ in present), default=0)
                values = [_format_cell(cells[k]) for k, _ in present]
                lines.append(f"| {name} | {category} | {n} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def over_seeds_markdown(table: dict, diffs: dict) -> str:
    """The open captions' means over seeds per backbone and prior, then their paired differences."""
    lines = ["## open captions over seeds", "", OVER_SEEDS_INTRO]
    header = ["backbone", "prior", "prompts"] + [title for _, title, _ in OVER_SEEDS]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for backbone in sorted(table):
        for prior in _ordered(table[backbone]):
            values = table[backbone][prior]["all"]
            cells = [f"{values['count']:.0f}"] + [_cell(values, key, "{:.2f}") for key, _, _ in OVER_SEEDS]
            lines.append(f"| {backbone} | {prior} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if diffs:
        text += "\n" + comparison_markdown(diffs, OVER_SEEDS, "open captions over seeds: paired differences", "")
    return text


def _format_cell(cell: dict) -> str:
    fields = {k: cell[k] for k in ("n", "mean", "low", "high", "win_rate")}
    return format_difference(PairedDifference(**fields), "{:+.3f}" if abs(cell["mean"]) < 10 else "{:+.1f}")


def _prior_rank(name: str) -> tuple[int, float, str]:
    """Priors in PRIOR_ORDER, then others by name; a prior's variants (``sds @ 30``) by their value."""
    base, _, variant = name.partition(" @ ")
    try:
        value = float(variant)
    except ValueError:
        value = 0.0
    return (PRIOR_ORDER.index(base) if base in PRIOR_ORDER else len(PRIOR_ORDER), value, name)


def _ordered(names) -> list[str]:
    return sorted(names, key=_prior_rank)


def _cell(values: dict, key: str, fmt: str) -> str:
    value = values.get(key, math.nan)
    return "–" if value is None or math.isnan(value) else fmt.format(value)


def markdown(table: dict, title: str) -> str:
    """Per backbone: a Table-1 layout (categories x metrics per prior), then every metric over all prompts."""
    lines = [f"# {title}", ""]
    for backbone in sorted(table):
        priors = table[backbone]
        categories = [c for c in CATEGORIES if any(c in p for p in priors.values())]
        lines += [f"## backbone = {backbone}", ""]
        header = ["prior"] + [f"{c} {name}" for c in categories for _, name, _ in PER_CATEGORY]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for prior in _ordered(priors):
            cells = [_cell(priors[prior].get(c, {}), key, fmt) for c in categories for key, _, fmt in PER_CATEGORY]
            lines.append(f"| {prior} | " + " | ".join(cells) + " |")
        present = [(k, n, f) for k, n, f in OVERALL if any(k in p.get("all", {}) for p in priors.values())]
        header = ["prior (all prompts)", "runs"] + [name for _, name, _ in present]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for prior in _ordered(priors):
            values = priors[prior]["all"]
            cells = [f"{values['count']:.0f}"] + [_cell(values, key, fmt) for key, _, fmt in present]
            lines.append(f"| {prior} | " + " | ".join(cells) + " |")
        kinds = [k for k in KINDS if any(k in p for p in priors.values())]
        if len(kinds) > 1:  # full and open captions side by side
            header = ["prior"] + [f"{k} {name}" for k in kinds for _, name, _ in (*PER_CATEGORY, ("count", "runs", ""))]
            lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for prior in _ordered(priors):
                cells = [
                    _cell(priors[prior].get(k, {}), key, fmt or "{:.0f}")
                    for k in kinds
                    for key, _, fmt in (*PER_CATEGORY, ("count", "runs", ""))
                ]
                lines.append(f"| {prior} | " + " | ".join(cells) + " |")
        runs = sum(p["all"]["count"] for p in priors.values())
        seconds = sum(p["all"].get("wall_seconds", math.nan) * p["all"]["count"] for p in priors.values())
        if math.isfinite(seconds):  # what the backbone's runs cost, one after another
            lines += ["", f"{runs:.0f} runs, {seconds / 3600:.2f} h of run wall time in all."]
        lines.append("")
    lines.append(
        "Means over prompts. wall s: a run's wall time (its steps, evaluation and exports); peak MiB: its peak "
        "resident memory (CPU) or allocated CUDA memory. Ground truth: lods.toyworld at the evaluation orbit."
    )
    return "\n".join(lines) + "\n"


def _label(text: str, width: int, height: int = 14) -> np.ndarray:
    canvas = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(canvas).text((2, 1), text, fill="black")
    return np.asarray(canvas)


def _front(run: dict, name: str, cell: int) -> np.ndarray:
    """The first tile of one of a run's image grids (square tiles of final_0.png's size), ``cell`` pixels."""
    side = Image.open(Path(run["run_dir"], "images", "final_0.png")).width
    image = Image.open(Path(run["run_dir"], "images", name)).convert("RGB").crop((0, 0, side, side))
    return np.asarray(image.resize((cell, cell), Image.BILINEAR))


def _with_inset(tile: np.ndarray, inset: np.ndarray) -> np.ndarray:
    """``tile`` with ``inset`` (framed in black) in its bottom-right corner."""
    out = tile.copy()
    size = inset.shape[0]
    out[-size - 2 :, -size - 2 :] = 0
    out[-size - 1 : -1, -size - 1 : -1] = inset
    return out


def image_grid(rows: list[dict], path: Path, cell: int = 64) -> Path | None:
    """Rows: the ground truth, then every backbone/prior; columns: the prompts by category (full captions
    first). Front views of each prompt's lowest seed. A full caption's ground truth heads its column; an open
    caption names a set of scenes, so its column is headed by the size of the set and every result carries,
    in its corner, the member of the set it matched."""
    runs = [r for r in rows if Path(r["run_dir"], "images", "final_0.png").is_file()]
    if not runs:
        return None
    category_rank = {c: i for i, c in enumerate(CATEGORIES)}
    runs.sort(key=lambda r: (category_rank.get(r["category"], len(CATEGORIES)), r.get("kind") == "open", r["prompt"]))
    prompts = list(dict.fromkeys(r["prompt"] for r in runs))
    keys = sorted({(r["backbone"], r["prior"]) for r in runs}, key=lambda k: (k[0], _prior_rank(k[1])))
    by_key: dict = {}
    for run in sorted(runs, key=lambda r: (r.get("seed") is None, r.get("seed") or 0), reverse=True):
        by_key[run["backbone"], run["prior"], run["prompt"]] = run  # the lowest seed is written last
    blank = np.full((cell, cell, 3), 255, np.uint8)

    def has_truth(run: dict) -> bool:
        return Path(run["run_dir"], "images", "ground_truth.png").is_file()

    first = {p: next(r for r in runs if r["prompt"] == p) for p in prompts}
    truth = []
    for p in prompts:
        run = first[p]
        if run.get("kind") == "open":
            size = run["metrics"].get("gt/set_size")
            truth.append(_label(f"open: {size:.0f}" if size else "open", cell, cell))
        else:
            truth.append(_front(run, "ground_truth.png", cell) if has_truth(run) else blank)
    grid_rows = [np.concatenate([_label("ground truth", LABEL_WIDTH, cell), *truth], axis=1)]
    for backbone, prior in keys:
        cells = []
        for p in prompts:
            run = by_key.get((backbone, prior, p))
            if run is None:
                cells.append(blank)
                continue
            tile = _front(run, "final_0.png", cell)
            if run.get("kind") == "open" and has_truth(run):
                tile = _with_inset(tile, _front(run, "ground_truth.png", cell // 3))
            cells.append(tile)
        grid_rows.append(np.concatenate([_label(f"{backbone} / {prior}", LABEL_WIDTH, cell), *cells], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(grid_rows, axis=0)).save(path)
    return path


def aggregate(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    by: str | None = None,
    baseline: str | None = DEFAULT_BASELINE,
    pairs: list[tuple[str, str]] = (),
) -> dict:
    """Write results.json, table.md and grid.png for the runs below ``sweep_dir`` (into ``out_dir``), with
    the paired differences of every prior against ``baseline`` (None: none; the default is skipped where it
    did not run, any other missing prior is an error) and of ``pairs``."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    rows = collect(sweep_dir, by)
    if not rows:
        raise FileNotFoundError(f"no finished runs (metrics.json) below '{sweep_dir}'")
    table = summarize(rows)
    if baseline == DEFAULT_BASELINE and baseline not in {row["prior"] for row in rows}:
        baseline = None
    diffs = comparisons(rows, baseline, list(pairs))
    seed_rows = over_seeds(rows)
    seed_priors = {row["prior"] for row in seed_rows}
    seed_diffs = comparisons(
        seed_rows,
        baseline if baseline in seed_priors else None,
        [(a, b) for a, b in pairs if {a, b} <= seed_priors],
        OVER_SEEDS,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "sweep_dir": str(sweep_dir),
        "runs": rows,
        "table": table,
        "paired_differences": diffs,
        "over_seeds": {"prompts": seed_rows, "table": summarize(seed_rows), "paired_differences": seed_diffs},
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(table, f"toyworld bench: {sweep_dir}")
    if diffs:
        text += "\n" + comparison_markdown(diffs)
    if seed_rows:
        text += "\n" + over_seeds_markdown(results["over_seeds"]["table"], seed_diffs)
    (out_dir / "table.md").write_text(text)
    image_grid(rows, out_dir / "grid.png")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (e.g. bench/mini)")
    parser.add_argument("--out", type=Path, default=None, help="where the results go (default: sweep_dir)")
    parser.add_argument("--by", default=None, help="also split rows by this config key (e.g. prior.guidance_scale)")
    parser.add_argument(
        "--baseline",
        default=DEFAULT_BASELINE,
        help=f"paired differences of every prior against this one (default {DEFAULT_BASELINE}, if it ran; none)",
    )
    parser.add_argument("--pair", action="append", default=[], help="also A,B: prior A minus prior B (repeatable)")
    args = parser.parse_args(argv)
    pairs = []
    for spec in args.pair:
        names = [n.strip() for n in spec.split(",")]
        if len(names) != 2 or not all(names):
            parser.error(f"--pair takes two priors as A,B; got '{spec}'")
        pairs.append((names[0], names[1]))
    baseline = None if args.baseline.lower() == "none" else args.baseline
    results = aggregate(args.sweep_dir, args.out, args.by, baseline, pairs)
    out = args.out or args.sweep_dir
    print((out / "table.md").read_text())
    print(f"{len(results['runs'])} runs -> {out}/results.json, table.md, grid.png")


if __name__ == "__main__":
    main()

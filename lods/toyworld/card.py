"""Measure the toyworld prior against ground truth and write its model card (README.md beside the weights).

    python -m lods.toyworld.card                 # the shipped prior, lods/models/toyworld
    python -m lods.toyworld.card --model DIR     # another training's output
    python -m lods.toyworld.card --model DIR --previous OLD   # ... with OLD's measurements as "before"

Every number in the card is measured here, from the files beside it: training.json (written by the
training) and evaluation.json (written by this command). ``--previous`` names the folder of the weights
these replace (its evaluation.json and training.json, measured by this same command with the same captions
and seeds): its tables are copied into evaluation.json under "previous" and shown beside the new ones.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from lods.toyworld import grammar, view_check
from lods.toyworld.evaluate import METRIC_KEYS, OPEN_KEYS, evaluate_open, evaluate_prior, markdown_table
from lods.toyworld.model import PRIOR_DIR, load_prior
from lods.utils.images import save_grid

EVAL_STEPS, EVAL_GUIDANCE, PER_CATEGORY = 50, 7.5, 8
OPEN_PER_CATEGORY, OPEN_SAMPLES = 4, 8  # open captions per category, DDIM samples of each (mode coverage)
VIEW_PER_CATEGORY = 4  # scenes per category, each sampled once per view word

# The floors tests/toyworld/test_prior_quality.py holds the shipped prior to: FLOOR_PER_CATEGORY seeded
# captions per category (evaluate_prior's, seed 0), DDIM as in the card. The card reports what the weights
# measured on them (seeds 0 and 1), so the margin under each floor is visible.
FLOOR_PER_CATEGORY = 3
QUALITY_FLOORS = {"iou": 0.65, "psnr": 15.0, "ssim": 0.70}
SINGLE_IOU_FLOOR = 0.75
FLOOR_SEEDS = (0, 1)


def floor_measurement(model, seed: int) -> dict[str, float]:
    """Mean iou, psnr, ssim and single-object iou of the floor captions' samples (seeded)."""
    per_category = evaluate_prior(model, FLOOR_PER_CATEGORY, seed=seed)["per_category"]
    return {**{k: per_category["all"][k] for k in QUALITY_FLOORS}, "single_iou": per_category["single"]["iou"]}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=PRIOR_DIR)
    parser.add_argument("--per-category", type=int, default=PER_CATEGORY)
    parser.add_argument("--previous", type=Path, default=None, help="folder of the weights these replace")
    args = parser.parse_args(argv)
    previous = previous_record(args.previous) if args.previous else None
    torch.set_grad_enabled(False)
    model = load_prior(str(args.model), device="cpu")
    started = time.perf_counter()
    result = evaluate_prior(model, args.per_category, num_steps=EVAL_STEPS, guidance_scale=EVAL_GUIDANCE)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    open_result = evaluate_open(
        model, OPEN_PER_CATEGORY, OPEN_SAMPLES, num_steps=EVAL_STEPS, guidance_scale=EVAL_GUIDANCE
    )
    open_seconds = time.perf_counter() - started
    started = time.perf_counter()
    views = view_check.evaluate_view_words(model, VIEW_PER_CATEGORY, 0, EVAL_STEPS, EVAL_GUIDANCE)
    view_seconds = time.perf_counter() - started
    floors = {str(seed): floor_measurement(model, seed) for seed in FLOOR_SEEDS}
    save_grid(result["images"], args.model / "samples.png", columns=args.per_category)
    evaluation = {
        "sampler": f"DDIM, {EVAL_STEPS} steps, eta 0, CFG {EVAL_GUIDANCE}",
        "per_category": result["per_category"],
        "per_caption": result["per_caption"],
        "seconds": round(seconds, 1),
        "open": {**open_result, "per_category_captions": OPEN_PER_CATEGORY, "samples_per_caption": OPEN_SAMPLES},
        "open_seconds": round(open_seconds, 1),
        "view_words": {**views, "per_category": VIEW_PER_CATEGORY},
        "view_seconds": round(view_seconds, 1),
        "floors": floors,
    }
    if previous:
        evaluation["previous"] = previous
    (args.model / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    write_card(args.model, model, evaluation, args.per_category)
    print(markdown_table(result["per_category"]))
    return args.model / "README.md"


def previous_record(folder: Path) -> dict:
    """The tables of the weights in ``folder`` (their evaluation.json, and how they were trained)."""
    path = folder / "evaluation.json"
    if not path.is_file():
        raise SystemExit(f"--previous {folder}: no evaluation.json there (measure it with --model {folder} first)")
    evaluation = json.loads(path.read_text())
    training_file = folder / "training.json"
    training = json.loads(training_file.read_text()) if training_file.is_file() else {}
    kept = ("sampler", "per_category", "open", "view_words")
    return {"training": _caption_mix(training), **{k: evaluation[k] for k in kept if k in evaluation}}


def write_card(folder: Path, model, evaluation: dict, per_category: int) -> None:
    training = json.loads((folder / "training.json").read_text())
    training["parameters"] = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in (("U-Net", model.unet), ("VAE", model.vae), ("text encoder", model.text_encoder))
    }
    (folder / "README.md").write_text(card(training, evaluation, per_category))


def card(training: dict, evaluation: dict, per_category: int) -> str:
    params = training.get("parameters", {})
    size = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in params.items())
    return f"""# toyworld prior (model card)

A small Stable-Diffusion-format latent diffusion model of the procedural toyworld (`lods/toyworld`),
the embedded default prior of lods (`model=toyworld`). Load it with `lods.toyworld.model.load_prior()`
or any diffusers SD-format loader.

## Architecture
- VAE (`AutoencoderKL`): 64x64x3 images <-> 16x16x4 latents, latent scaling factor
  {training["latent_scaling_factor"]:.4f} (1 / std of the training latents).
- Text encoder: `CLIPTextModel` with a word-level tokenizer over the grammar's vocabulary.
- `UNet2DConditionModel`, epsilon prediction, SD 2.1-base DDPM schedule (scaled_linear 0.00085 -> 0.012, 1000 steps).
- Parameters: {size or "see the component configs"}.

## Data and training
{_training_section(training)}

## Sample quality against ground truth
{evaluation["sampler"]}; {per_category} captions per category (fixed, seeded; each with a front, side or back
view suffix); each sample is scored at the ground-truth view, within its caption's view range, that it
matches best (`lods.toyworld.evaluate`). Measured in {evaluation["seconds"]} s on CPU.

{markdown_table(evaluation["per_category"])}{_before(evaluation, "per_category")}
Metrics: {", ".join(METRIC_KEYS)} (PSNR in dB; IoU of foreground masks; CIE76 delta-E on the ground-truth
foreground; saturation bias = result minus ground truth; floater mass = opacity outside the dilated
silhouette). The samples are in `samples.png` (one row per category), every number in `evaluation.json`.

{_open_section(evaluation)}{_view_section(evaluation)}{_floor_section(evaluation)}
## Limits
Trained for about an hour on CPU: it knows the toyworld's colours and shapes far better than its
compositions; read the table above before trusting a category.
"""


def _training_section(training: dict) -> str:
    """What the weights were trained on and how long it took; a continued prior (``init``, its start's record
    under "continued_from") first says how its start was trained, then what it was trained on after that."""
    base = training.get("continued_from")
    if base is None:
        return _stages(training) + (
            "\n- Reproduce: `python -m lods.toyworld.prior` (then `make toyworld-card` rewrites this card from new"
            " measurements)."
        )
    shares = {
        c: training["categories"].count(c) / len(training["categories"]) for c in dict.fromkeys(training["categories"])
    }
    mix = ", ".join(f"{c} {share:.0%}" for c, share in shares.items())
    return f"""Trained in two runs: the first from scratch, the second going on from its weights.

{_stages(base)}

Then, from those weights (`python -m lods.toyworld.prior init=<first run's folder> ...`):
- {training["views"]} renders of {training["scenes"]} new scenes (seed {training["seed"]}; categories {mix}), the same
  cameras and caption mix; the VAE and latent scaling factor kept.
- Text encoder + U-Net {training["diffusion_steps"]} more steps at learning rate {training["diffusion_lr"]:g} (a
  fresh AdamW; the EMA restarted from the first run's EMA weights, which are where training went on from).
- Wall time: {training["wall_seconds_this_invocation"] / 60:.0f} min ({training["wall_seconds_this_invocation"]} s) on
  {training["hardware"]}.{_wall_note(training)}
- Reproduce (`make toyworld-prior` runs both): `python -m lods.toyworld.prior output=FIRST` (the first run), then
  `python -m lods.toyworld.prior init=FIRST output=DIR seed={training["seed"]} data.num_scenes={training["scenes"]}
  'data.categories=[{",".join(training["categories"])}]' unet.steps={training["diffusion_steps"]} unet.lr={training["diffusion_lr"]:g}`,
  then `python -m lods.toyworld.card --model DIR`."""


def _stages(training: dict) -> str:
    return f"""- {training["views"]} renders of {training["scenes"]} scenes (the three categories in equal shares), random
  cameras (full azimuth circle, elevation -10..80 degrees), captions with DreamFusion view suffixes by the
  thresholds of `lods.cameras.view_direction`. {_caption_mix(training)}
- VAE {training["vae_steps"]} steps, then text encoder + U-Net {training["diffusion_steps"]} steps (EMA of the
  U-Net ships); seed {training["seed"]}.
- Wall time: {training["wall_seconds_this_invocation"] / 60:.0f} min ({training["wall_seconds_this_invocation"]} s, all
  stages in one invocation) on {training["hardware"]}.{_wall_note(training)}"""


def _wall_note(training: dict) -> str:
    """training.json's "wall_note", when whoever ran the training recorded what the wall time includes."""
    return f" {training['wall_note']}" if training.get("wall_note") else ""


def _caption_mix(training: dict) -> str:
    """How training captions were varied (older trainings recorded no open share: they had none)."""
    view = training.get("view_dropout", 0.2)
    empty = training.get("caption_dropout", 0.1)
    share = training.get("open_share", 0.0)
    opened = (
        f"{share:.0%} of captions are open variants of the view's caption (each said attribute dropped with "
        f"probability {training.get('open_drop_prob', 0.0):g}: the caption then names a set of scenes, "
        "`lods.toyworld.grammar`); "
        if share
        else "Every caption names its scene fully (trained before open captions); "
    )
    cameras = (
        f"Each scene is seen from {training.get('views_per_scene', 4)} cameras going round the view words "
        "(front, side, back, overhead: 25% each, `lods.toyworld.data`); "
        if training.get("balanced_views")
        else "Cameras uniform (view words in the 3D tasks' shares: side 39%, overhead 22%, front and back 19.5%); "
    )
    return cameras + opened + f'{view:.0%} of captions drop the suffix ("any view"), {empty:.0%} are empty.'


def _open_section(evaluation: dict) -> str:
    if "open" not in evaluation:
        return ""
    result = evaluation["open"]
    return f"""## Open captions: sample quality and mode coverage
{result["per_category_captions"]} open captions per category (fixed, seeded, each with a view suffix), {result["samples_per_caption"]}
DDIM samples of each ({evaluation["sampler"]}); each sample is scored against the member of the caption's
set, and the view, that it matches best (`lods.toyworld.evaluate.evaluate_open`). Mode coverage of the
{result["samples_per_caption"]} samples of a caption: distinct matched scenes, entropy (bits) of the matched
open attributes (its maximum, log2 of the set size, averages {_mean_max(result):.1f} bits here, and {result["samples_per_caption"]} samples
can show at most {math.log2(result["samples_per_caption"]):.0f}), and validity, the share of samples whose best match reaches IoU 0.5. This is the
upper bound for what a distillation run of the same captions can reach. Measured in {evaluation["open_seconds"]} s.

{markdown_table(result["per_category"], OPEN_KEYS)}{_before(evaluation, "open")}
"""


def _mean_max(result: dict) -> float:
    return result["per_category"]["all"].get("attribute_entropy_max", math.nan)


def _view_section(evaluation: dict) -> str:
    if "view_words" not in evaluation:
        return ""
    views = evaluation["view_words"]
    return f"""## Does it follow its view words?
{views["per_category"]} scenes per category, each sampled once with every view word ("<caption>, front view", side,
back, overhead); each sample is scored at the best ground-truth view within the named range and at the best
view anywhere (`python -m lods.toyworld.view_check`). Cells: view accuracy (share of samples whose in-range
PSNR is within {view_check.GAP_DB} dB of the best anywhere) / mean gap (dB) / PSNR in range. A scene that looks the same
from every side cannot fail this, so accuracy is an upper bound. Measured in {evaluation["view_seconds"]} s.

{view_check.markdown(views["table"])}{_before(evaluation, "view_words")}
"""


def _before(evaluation: dict, section: str) -> str:
    """The previous weights' table of ``section``, when the card was written with --previous."""
    previous = evaluation.get("previous", {})
    if section not in previous:
        return ""
    if section == "per_category":
        table = markdown_table(previous[section])
    elif section == "open":
        table = markdown_table(previous[section]["per_category"], OPEN_KEYS)
    else:
        table = view_check.markdown(previous[section]["table"])
    how = previous["training"]
    return f"""
Before (the weights these replace, same captions and seeds; {how[:1].lower() + how[1:]}):

{table}"""


def _floor_section(evaluation: dict) -> str:
    floors = evaluation.get("floors")
    if not floors:
        return ""
    measured = "; ".join(
        f"seed {seed}: {m['iou']:.3f}, {m['psnr']:.1f} dB, {m['ssim']:.2f}, {m['single_iou']:.3f}"
        for seed, m in floors.items()
    )
    return f"""## Floors checked by the tests
`tests/toyworld/test_prior_quality.py` samples {len(grammar.CATEGORIES) * FLOOR_PER_CATEGORY} other seeded captions ({FLOOR_PER_CATEGORY} per category) the same way and
requires mean IoU >= {QUALITY_FLOORS["iou"]}, PSNR >= {QUALITY_FLOORS["psnr"]:g} dB, SSIM >= {QUALITY_FLOORS["ssim"]} and single-object IoU >= {SINGLE_IOU_FLOOR}
(measured on these weights, mean IoU, PSNR, SSIM, single-object IoU: {measured}), and that scoring the
samples against the wrong captions costs more than 2 dB.

"""


if __name__ == "__main__":
    main()

"""The model card is written from its measurements: every table, the "before" tables and the floors."""

import json

import pytest

from lods.toyworld import card as card_module
from lods.toyworld.evaluate import METRIC_KEYS, OPEN_KEYS


def _per_category(keys, value):
    return {c: {k: value for k in keys} for c in ("single", "surroundings", "multiple", "all")}


def _views(accuracy):
    row = {"psnr": 20.0, "iou": 0.8, "view_gap": 0.25, "view_accuracy": accuracy, "count": 4.0}
    return {"table": {"all": {v: row for v in ("front", "side", "back", "overhead")}}, "per_category": 4}


def _evaluation(value, accuracy):
    return {
        "sampler": "DDIM, 50 steps, eta 0, CFG 7.5",
        "per_category": _per_category(METRIC_KEYS, value),
        "seconds": 1.0,
        "open": {
            "per_category": _per_category([*OPEN_KEYS, "attribute_entropy_max"], value),
            "per_category_captions": 4,
            "samples_per_caption": 8,
        },
        "open_seconds": 2.0,
        "view_words": _views(accuracy),
        "view_seconds": 3.0,
    }


TRAINING = {
    "views": 24000,
    "scenes": 6000,
    "views_per_scene": 4,
    "balanced_views": True,
    "open_share": 0.5,
    "open_drop_prob": 0.5,
    "view_dropout": 0.1,
    "caption_dropout": 0.1,
    "vae_steps": 10,
    "diffusion_steps": 20,
    "seed": 0,
    "latent_scaling_factor": 0.5,
    "wall_seconds_this_invocation": 60.0,
    "hardware": "CPU",
}


def test_card_shows_previous_tables_and_measured_floors(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "evaluation.json").write_text(json.dumps(_evaluation(0.111, 0.25)))
    (old / "training.json").write_text(json.dumps({"view_dropout": 0.2}))  # trained before open captions
    evaluation = {
        **_evaluation(0.999, 0.75),
        "floors": {"0": {"iou": 0.7777, "psnr": 18.31, "ssim": 0.81, "single_iou": 0.8888}},
        "previous": card_module.previous_record(old),
    }
    text = card_module.card(TRAINING, evaluation, per_category=8)
    assert text.count("Before (the weights these replace") == 3  # sample quality, open captions, view words
    assert "0.111" in text and "0.999" in text
    assert "0.25 / 0.2 / 20.0" in text and "0.75 / 0.2 / 20.0" in text  # view accuracy before and after
    assert "Every caption names its scene fully" in text  # how the previous weights were trained
    assert "going round the view words" in text and "50% of captions are open variants" in text
    assert "seed 0: 0.778, 18.3 dB, 0.81, 0.889" in text
    assert f"mean IoU >= {card_module.QUALITY_FLOORS['iou']}" in text


def test_card_without_previous_or_floors_has_no_such_sections():
    text = card_module.card(TRAINING, _evaluation(0.5, 0.5), per_category=8)
    assert "Before (" not in text and "## Floors" not in text


def test_previous_folder_without_evaluation_is_named(tmp_path):
    with pytest.raises(SystemExit, match=str(tmp_path)):
        card_module.previous_record(tmp_path)


def test_a_continued_prior_card_says_how_its_start_was_trained_and_what_came_after():
    continued = {
        **TRAINING,
        "views": 16000,
        "scenes": 4000,
        "seed": 1,
        "vae_steps": 0,
        "diffusion_steps": 2000,
        "diffusion_lr": 2e-4,
        "categories": ["surroundings", "surroundings", "single", "multiple"],
        "wall_seconds_this_invocation": 3428.3,
        "continued_from": TRAINING,
    }
    text = card_module.card(continued, _evaluation(0.5, 0.5), per_category=8)
    assert "Trained in two runs" in text
    assert "24000 renders of 6000 scenes" in text and "VAE 10 steps" in text  # the start
    assert "16000 renders of 4000 new scenes (seed 1; categories surroundings 50%, single 25%, multiple 25%)" in text
    assert "2000 more steps at learning rate 0.0002" in text and "57 min (3428.3 s)" in text
    assert "seed=1 data.num_scenes=4000\n  'data.categories=[surroundings,surroundings,single,multiple]'" in text
    assert "unet.steps=2000 unet.lr=0.0002" in text
    assert "Trained in two runs" not in card_module.card(TRAINING, _evaluation(0.5, 0.5), per_category=8)

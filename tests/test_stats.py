"""Paired differences and their bootstrap intervals (lods.stats) and the bench's comparison tables."""

import json
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from lods import bench
from lods.stats import PairedDifference, format_difference, paired_difference


def _pairs(values) -> dict:
    return {(f"p{i}", 0): float(v) for i, v in enumerate(values)}


def test_a_known_difference_is_found():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.7, 24)
    noise = rng.uniform(-0.02, 0.02, 24)  # |noise| < shift: A wins every pair
    diff = paired_difference(_pairs(base + 0.1 + noise), _pairs(base))
    assert diff.n == 24 and diff.win_rate == 1.0
    assert diff.mean == pytest.approx(0.1 + noise.mean(), abs=1e-12)
    # Every resampled mean lies within the range of the differences, so the interval does too.
    assert 0.08 <= diff.low < diff.mean < diff.high <= 0.12
    assert diff.excludes_zero and "*" in format_difference(diff)


def test_no_difference_is_not_found():
    # Differences +e and -e for each of 12 magnitudes: mean exactly 0, half the pairs won.
    magnitudes = np.linspace(0.01, 0.12, 12)
    a = np.concatenate([0.5 + magnitudes, 0.5 - magnitudes])
    diff = paired_difference(_pairs(a), _pairs(np.full(24, 0.5)))
    assert diff.mean == pytest.approx(0.0, abs=1e-12) and diff.win_rate == 0.5
    assert diff.low < 0.0 < diff.high and not diff.excludes_zero
    assert "*" not in format_difference(diff)


def test_identical_results_tie():
    values = _pairs(np.linspace(0, 1, 5))
    diff = paired_difference(values, values)
    assert (diff.mean, diff.low, diff.high, diff.win_rate) == (0.0, 0.0, 0.0, 0.5)
    assert not diff.excludes_zero


def test_direction_decides_who_wins():
    a, b = _pairs([1.0, 2.0, -0.1]), _pairs([2.0, 1.0, 0.3])
    assert paired_difference(a, b, 1).win_rate == pytest.approx(1 / 3)
    assert paired_difference(a, b, -1).win_rate == pytest.approx(2 / 3)
    closer = paired_difference(a, b, "abs")  # |a| vs |b|: 1<2 wins, 2>1 loses, 0.1<0.3 wins
    assert closer.win_rate == pytest.approx(2 / 3) and closer.mean == pytest.approx((-1 + 1 - 0.2) / 3)
    with pytest.raises(ValueError, match="direction 'up'"):
        paired_difference(a, b, "up")


def test_only_shared_finite_pairs_count():
    a = {"x": 1.0, "y": math.nan, "z": 3.0, "only_a": 9.0}
    b = {"x": 0.5, "y": 1.0, "z": 2.0, "only_b": 9.0}
    diff = paired_difference(a, b)
    assert diff.n == 2 and diff.mean == pytest.approx(0.75)
    one = paired_difference({"x": 1.0}, {"x": 0.0})
    assert one.n == 1 and math.isnan(one.low) and not one.excludes_zero
    none = paired_difference({"x": 1.0}, {"y": 0.0})
    assert none.n == 0 and format_difference(none) == "–"


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    a, b = _pairs(rng.normal(size=10)), _pairs(rng.normal(size=10))
    assert paired_difference(a, b, seed=3) == paired_difference(a, b, seed=3)
    assert isinstance(paired_difference(a, b), PairedDifference)


def _fake_run(root, name, prior, prompt, seed, category, metrics):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    choices = {"hydra": {"runtime": {"choices": {"prior": prior, "backbone": "gaussians"}}}}
    OmegaConf.save(OmegaConf.create(choices), run / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create({"seed": seed}), run / "config.yaml")
    (run / "metrics.json").write_text(json.dumps({"prompt": prompt, "gt/category": category, **metrics}))


def test_bench_compares_priors_over_prompts_and_seeds(tmp_path):
    """lods_embedding is better than sds on IoU in every (prompt, seed) and equal on PSNR; vsd equals sds."""
    rng = np.random.default_rng(0)
    for i in range(6):
        for seed in (0, 1):
            iou, psnr = rng.uniform(0.3, 0.7), rng.uniform(12, 20)
            prompt, category = f"prompt {i}", ("single", "multiple")[i % 2]
            for prior, shift in (("sds", 0.0), ("lods_embedding", 0.05), ("vsd", 0.0)):
                metrics = {"gt/iou": iou + shift, "gt/psnr": psnr}
                _fake_run(tmp_path, f"{prior}-{i}-{seed}", prior, prompt, seed, category, metrics)
    results = bench.aggregate(tmp_path, tmp_path / "out")
    diffs = results["paired_differences"]
    assert set(diffs) == {"vsd - sds", "lods_embedding - sds"}
    lods = diffs["lods_embedding - sds"]["gaussians"]
    assert lods["all"]["gt/iou"]["n"] == 12 and lods["single"]["gt/iou"]["n"] == 6
    assert lods["all"]["gt/iou"]["excludes_zero"] and lods["all"]["gt/iou"]["win_rate"] == 1.0
    assert lods["all"]["gt/iou"]["mean"] == pytest.approx(0.05)
    assert not lods["all"]["gt/psnr"]["excludes_zero"] and lods["all"]["gt/psnr"]["win_rate"] == 0.5
    assert not diffs["vsd - sds"]["gaussians"]["all"]["gt/iou"]["excludes_zero"]
    text = (tmp_path / "out" / "table.md").read_text()
    assert "## paired differences" in text and "| lods_embedding - sds | all | 12 | +0.050* [" in text
    # Any pair; a prior that did not run is named.
    pair = bench.comparisons(bench.collect(tmp_path), None, [("lods_embedding", "vsd")])
    assert pair["lods_embedding - vsd"]["gaussians"]["all"]["gt/iou"]["excludes_zero"]
    with pytest.raises(ValueError, match="prior 'sdi' has no runs here; the priors are: sds, vsd, lods_embedding"):
        bench.aggregate(tmp_path, tmp_path / "out", baseline="sdi")


def test_open_captions_over_seeds_kinds_and_the_grid(tmp_path):
    """Open captions: sds matches one member in both seeds, lods_embedding two; the grid shows each open result
    with the member it matched in its corner, and the full captions' ground truth above them."""
    from PIL import Image

    colours = {"final_0.png": (255, 0, 0), "open_truth": (0, 255, 0), "full_truth": (0, 0, 255)}

    def images(run, truth):
        (run / "images").mkdir()
        for name, colour in (("final_0.png", colours["final_0.png"]), ("ground_truth.png", colours[truth])):
            Image.new("RGB", (16, 16), colour).save(run / "images" / name)

    for i in range(4):
        for seed in (0, 1):
            for prior in ("sds", "lods_embedding"):
                matched = f"scene {i}" if prior == "sds" or seed == 0 else f"scene {i}b"
                metrics = {"gt/iou": 0.6 if seed == 0 else 0.4, "gt/set_size": 6.0, "gt/matched": matched}
                name = f"{prior}-open{i}-{seed}"
                _fake_run(tmp_path, name, prior, f"open {i}", seed, "single", metrics)
                images(tmp_path / name, "open_truth")
                name = f"{prior}-full{i}-{seed}"
                full = {"gt/iou": 0.5 + 0.1 * (prior == "sds"), "gt/matched": f"full {i}"}
                _fake_run(tmp_path, name, prior, f"full {i}", seed, "single", full)
                images(tmp_path / name, "full_truth")
    _fake_run(tmp_path, "sds-open9-0", "sds", "open 9", 0, "single", {"gt/set_size": 4.0, "gt/matched": "x"})
    results = bench.aggregate(tmp_path, tmp_path / "out")

    seeds = results["over_seeds"]
    assert len(seeds["prompts"]) == 8  # 4 open prompts x 2 priors; "open 9" ran with one seed of two: left out
    diff = seeds["paired_differences"]["lods_embedding - sds"]["gaussians"]["all"]
    assert diff["seeds/distinct_scenes"]["mean"] == 1.0 and diff["seeds/distinct_scenes"]["excludes_zero"]
    assert diff["seeds/validity@0.5"]["mean"] == 0.0 and not diff["seeds/validity@0.5"]["excludes_zero"]
    assert seeds["table"]["gaussians"]["lods_embedding"]["all"]["seeds/validity@0.5"] == 0.5
    kinds = results["paired_differences"]["lods_embedding - sds"]["gaussians"]
    assert kinds["full"]["gt/iou"]["mean"] == pytest.approx(-0.1) and kinds["full"]["gt/iou"]["n"] == 8
    assert kinds["open"]["gt/iou"]["mean"] == pytest.approx(0.0) and kinds["all"]["gt/iou"]["n"] == 16
    assert results["table"]["gaussians"]["sds"]["open"]["count"] == 9
    text = (tmp_path / "out" / "table.md").read_text()
    assert "## open captions over seeds" in text and "| gaussians | lods_embedding | 4 | 2.00 | 0.50 |" in text

    grid = np.asarray(Image.open(tmp_path / "out" / "grid.png").convert("RGB"))
    cell = 64
    assert grid.shape == (3 * cell, bench.LABEL_WIDTH + 8 * cell, 3)  # truth + 2 priors; 4 full + 4 open (with images)
    first_open = bench.LABEL_WIDTH + 4 * cell  # full captions come first
    row = cell  # the first prior's row
    assert tuple(grid[cell // 2, bench.LABEL_WIDTH + cell // 2]) == colours["full_truth"]
    assert tuple(grid[row + 5, first_open + 5]) == colours["final_0.png"]
    assert tuple(grid[row + cell - 5, first_open + cell - 5]) == colours["open_truth"]  # the matched member
    assert tuple(grid[row + cell - 5, bench.LABEL_WIDTH + cell - 5]) == colours["final_0.png"]  # no inset
    assert grid[:cell, first_open : first_open + cell].min() < 128  # "open: 6" written above the column


def test_over_seeds_counts_every_particle_of_a_2d_run():
    """A 2D run matches one member per particle (a list) and reports its share of valid particles itself."""

    def row(seed, matched, validity):
        metrics = {"gt/iou": 0.9, "gt/validity@0.5": validity}  # the run's own share wins over its mean IoU
        return {"backbone": "image", "prior": "sds", "prompt": "open", "seed": seed, "category": "single",
                "kind": "open", "matched": matched, "metrics": metrics}  # fmt: skip

    rows = [row(0, ["a", "b"], 0.5), row(1, ["b", "c"], 0.0)]
    (out,) = bench.over_seeds(rows)
    assert out["metrics"]["seeds/distinct_scenes"] == 3.0 and out["metrics"]["seeds/validity@0.5"] == 0.25
    assert bench.over_seeds(rows[:1]) == []  # one seed: no diversity over seeds to measure

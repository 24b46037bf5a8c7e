"""python -m lods.eval.fidelity: like-with-like scoring, the gap table, options, a relaunch (fast: model=tiny)."""

import json
import math

import pytest
import torch

from lods.eval import fidelity
from lods.toyworld.render import EVAL_VIEWS, render_caption

CAPTION = "a red cube"


def _renders(caption: str) -> torch.Tensor:
    return render_caption(caption, [a for a, _ in EVAL_VIEWS], [e for _, e in EVAL_VIEWS], 32).rgb


def test_ground_truth_at_the_evaluation_views_scores_perfectly_and_another_scene_does_not():
    perfect = fidelity.score_views(_renders(CAPTION), CAPTION, EVAL_VIEWS)
    assert perfect["psnr"] == 100.0 and perfect["iou"] == 1.0 and perfect["delta_e"] == 0.0
    other = fidelity.score_views(_renders("a blue sphere"), CAPTION, EVAL_VIEWS)
    assert other["psnr"] < 30.0 and other["iou"] < 1.0 and other["delta_e"] > 10.0
    with pytest.raises(ValueError, match="3 images for 8 views"):
        fidelity.score_views(_renders(CAPTION)[:3], CAPTION, EVAL_VIEWS)


def test_view_captions_follow_the_view_words():
    captions = fidelity.view_captions(CAPTION, [(0.0, 15.0), (90.0, 15.0), (180.0, 15.0), (0.0, 80.0)])
    assert captions == [f"{CAPTION}, {w} view" for w in ("front", "side", "back", "overhead")]


def _bound(prompt, category, psnr, iou):
    return {"prompt": prompt, "category": category, "metrics": _metrics(psnr, iou)}


def _metrics(psnr, iou):
    return {"psnr": psnr, "iou": iou, "ssim": 0.8, "delta_e": 10.0, "saturation_bias": 0.0}


def _run(backbone, prior, prompt, category, psnr, iou, seed=0, overrides=None):
    return {
        **({"prior_overrides": overrides} if overrides else {}),
        "backbone": backbone,
        "prior": prior,
        "prompt": prompt,
        "category": category,
        "seed": seed,
        "metrics": _metrics(psnr, iou),
        "exact": {"psnr": psnr - 1, "iou": iou},
    }


def test_the_gap_is_bound_minus_result_paired_by_prompt_with_seeds_averaged_first():
    bounds = [_bound(f"p{i}", "single", 20.0 + i, 0.9) for i in range(4)]
    bounds.append(_bound("q", "multiple", 18.0, 0.8))
    runs = [_run("gaussians", "sds", f"p{i}", "single", 19.0 + i, 0.88) for i in range(4)]  # 1 dB, 0.02 below
    runs += [_run("gaussians", "sds", "p0", "single", 17.0, 0.88, seed=1)]  # p0: seeds average to 18 dB
    runs += [_run("nerf", "sds", f"p{i}", "single", 15.0 + i, 0.5) for i in range(4)]  # 5 dB, 0.4 below
    table = fidelity.summarize(bounds, runs)
    cell = table["single"]
    assert cell["bound"]["n"] == 4 and cell["bound"]["psnr"] == pytest.approx(21.5)
    gaussians = cell["gaussians/sds"]
    assert gaussians["n"] == 4
    assert gaussians["gap_psnr"]["mean"] == pytest.approx((2.0 + 1 + 1 + 1) / 4)
    assert gaussians["gap_iou"]["mean"] == pytest.approx(0.02)
    assert cell["nerf/sds"]["gap_psnr"]["mean"] == pytest.approx(5.0)
    assert "multiple" in table and "gaussians/sds" not in table["multiple"]  # no run there: bound only
    assert table["all"]["gaussians/sds"]["n"] == 4
    text = fidelity.markdown(
        table, {"steps": 1000, "model": "toyworld", "bound_steps": 50, "bound_guidance": 7.5, "bound_seeds": [0]}
    )
    single = [line for line in text.splitlines() if line.startswith("| single |")]
    assert [line.split(" | ")[1] for line in single] == ["2D bound", "gaussians/sds", "nerf/sds"]
    assert single[1].split(" | ")[9] == "yes" and single[2].split(" | ")[9] == "no"  # 1.25 dB <= 2; 5 dB > 3


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--priors", "sds,dreamfusion"], ["'dreamfusion'", "lods_embedding"]),
        (["--backbones", "mesh"], ["'mesh'", "gaussians, nerf"]),
        (["--categories", "animals"], ["'animals'", "single, surroundings, multiple"]),
        (["--prompts", "0"], ["got 0"]),
        (["--seeds", "a"], ["'a'"]),
        (["--steps", "0"], ["got 0"]),
        (["--priors", "sds@loud"], ["'loud'", "positive"]),
        (["--priors", "sds@0"], ["'0'", "positive"]),
        (["--priors", "dds@30"], ["'dds@30'", "lods_embedding"]),
        (["--variant", "low"], ["'low'", "LABEL=key=value"]),
        (["--variant", "sds=prior=sds"], ["'sds'", "another"]),
        (["--model", "tiny", "--model-path", "lods/models/toyworld"], ["--model-path", "'tiny'"]),
        (["--model-path", "no/such/folder"], ["'no/such/folder'", "model_index.json"]),
    ],
)
def test_bad_options_fail_naming_the_bad_value_and_the_allowed_ones(argv, named, capsys):
    with pytest.raises(SystemExit):
        fidelity.parse_args(argv)
    err = capsys.readouterr().err
    for text in named:
        assert text in err


def test_runs_are_recorded_and_a_relaunch_reads_them_back_unless_their_settings_changed(tmp_path):
    argv = ["--model", "tiny", "--prompts", "1", "--categories", "single", "--backbones", "gaussians"]
    argv += ["--priors", "sds", "--steps", "2", "--out", str(tmp_path)]
    fidelity.main(argv)
    (record_file,) = tmp_path.glob("runs/gaussians/sds/seed0/*/fidelity.json")
    record = json.loads(record_file.read_text())
    assert record["steps"] == 2 and record["prompt"] == fidelity.select_prompts(1, ["single"])[0].text
    assert set(record["metrics"]) == set(fidelity.METRICS) and all(math.isfinite(v) for v in record["metrics"].values())
    assert (tmp_path / "results.json").is_file() and (tmp_path / "table.md").is_file()
    stamp = record_file.stat().st_mtime_ns
    fidelity.main(argv)
    assert record_file.stat().st_mtime_ns == stamp
    for image in record_file.parent.glob("images/*.png"):  # a fresh clone holds the record, not the images
        image.unlink()
    fidelity.main(argv)  # the table is rebuilt from the records; nothing is rerun
    assert record_file.stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="other settings"):
        fidelity.main([*argv[:-4], "--steps", "3", "--out", str(tmp_path)])
    # A record made before a default changed is refused, not read back under the new default's label.
    radius = record["recipe"]["backbone.init_radius"]
    (listed,) = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert "recipe" not in listed and listed["prompt"] == record["prompt"]  # the record alone keeps it
    assert record["recipe"]["prior.guidance_scale"] == 100 and record["recipe"]["trainer.max_steps"] == 2
    (record_file.parent / "config.yaml").unlink()  # a fresh clone: the record alone says how the run was made
    record["recipe"]["backbone.init_radius"] = radius * 2  # as if the default had been twice as large then
    record_file.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=rf"backbone.init_radius: {radius * 2} -> {radius}"):
        fidelity.main(argv)
    del record["recipe"]  # a record from before recipes were kept, without its config.yaml: read back unchecked
    record_file.write_text(json.dumps(record))
    stamp = record_file.stat().st_mtime_ns
    fidelity.main(argv)
    assert record_file.stat().st_mtime_ns == stamp


def test_a_variant_can_set_its_own_step_count(tmp_path):
    argv = ["--model", "tiny", "--prompts", "1", "--categories", "single", "--backbones", "gaussians"]
    argv += ["--priors", "sds", "--variant", "sds_short=prior=sds,trainer.max_steps=2", "--out", str(tmp_path)]
    argv += ["--override", "trainer.max_steps=3"]  # every run's default here: 3 steps
    fidelity.main(argv)  # model=tiny: no 2D bound, so no table; the records are what counts here
    steps = {
        json.loads(f.read_text())["prior"]: json.loads(f.read_text())["steps"]
        for f in tmp_path.glob("runs/gaussians/*/seed0/*/fidelity.json")
    }
    assert steps == {"sds": 3, "sds_short": 2}


def test_a_variant_is_tabulated_against_its_priors_defaults_paired_by_prompt():
    bounds = [_bound(f"p{i}", "single", 20.0, 0.9) for i in range(4)]
    runs = [_run("gaussians", "sds", f"p{i}", "single", 17.0 + i, 0.80) for i in range(4)]
    runs += [_run("gaussians", "sds@30", f"p{i}", "single", 18.0 + i, 0.85) for i in range(4)]  # +1 dB each
    tmax = ["prior=sds", "prior.timesteps.t_max=0.5"]
    runs += [
        _run("gaussians", "sds_tmax", f"p{i}", "single", 17.0 + i, 0.80 + 0.01 * (-1) ** i, overrides=tmax)
        for i in range(4)
    ]  # no PSNR difference
    runs += [_run("nerf", "sds@7.5", "p0", "single", 10.0, 0.5)]  # no nerf/sds default: no comparison
    table = fidelity.summarize(bounds, runs)
    assert list(table["single"]) == ["bound", "gaussians/sds", "gaussians/sds@30", "gaussians/sds_tmax", "nerf/sds@7.5"]
    cell = table["single"]
    assert "vs_default_psnr" not in cell["gaussians/sds"] and "vs_default_psnr" not in cell["nerf/sds@7.5"]
    better = cell["gaussians/sds@30"]["vs_default_psnr"]
    assert better["mean"] == pytest.approx(1.0) and better["excludes_zero"] and better["win_rate"] == 1.0
    same = cell["gaussians/sds_tmax"]["vs_default_psnr"]
    assert same["mean"] == pytest.approx(0.0) and not same["excludes_zero"]
    text = fidelity.markdown(
        table, {"steps": 1000, "model": "toyworld", "bound_steps": 50, "bound_guidance": 7.5, "bound_seeds": [0]}
    )
    rows = text.split("## Variants")[1].splitlines()
    assert any(r.startswith("| single | gaussians/sds@30 | 4 | +1.00 [+1.00, +1.00]* |") for r in rows)


def test_labels_map_to_overrides_and_a_reused_label_with_other_overrides_is_refused(tmp_path):
    assert fidelity.prior_overrides("sds") == ("prior=sds",)
    assert fidelity.prior_overrides("sds@inf") == ("prior=sds", "prior.guidance_scale=inf")
    label, overrides = fidelity.parse_variant("sds_t=prior=sds, prior.timesteps.t_max=0.5")
    assert (label, overrides) == ("sds_t", ("prior=sds", "prior.timesteps.t_max=0.5"))
    listed = fidelity.parse_variant("fade=prior=sds,backbone.halo_fade_steps=[300, 600],trainer.max_steps=9")[1]
    assert listed == ("prior=sds", "backbone.halo_fade_steps=[300, 600]", "trainer.max_steps=9")
    prompt = fidelity.select_prompts(1, ["single"])[0]
    spec = fidelity.RunSpec("gaussians", "sds@30", prompt, 0)
    assert spec.directory(tmp_path).parts[-3] == "sds_s30"
    record = spec.directory(tmp_path) / fidelity.RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"prior_overrides": ["prior=sds", "prior.guidance_scale=30"]}))
    assert fidelity.run_one(spec, 2, tmp_path, "tiny", [], "cpu")["prior_overrides"][1].endswith("=30")
    other = fidelity.RunSpec("gaussians", "sds@30", prompt, 0, ("prior=sds", "prior.guidance_scale=31"))
    with pytest.raises(fidelity.FidelityError, match="another label"):
        fidelity.run_one(other, 2, tmp_path, "tiny", [], "cpu")


def test_another_toyworld_prior_is_used_for_the_bound_and_the_3d_runs_alike(tmp_path):
    from lods.toyworld.model import PRIOR_DIR

    argv = ["--prompts", "1", "--categories", "single", "--backbones", "gaussians", "--priors", "sds"]
    argv += ["--steps", "2", "--bound-steps", "1", "--bound-seeds", "0", "--out", str(tmp_path)]
    fidelity.main([*argv, "--model-path", str(PRIOR_DIR)])
    (record_file,) = tmp_path.glob("runs/gaussians/sds/seed0/*/fidelity.json")
    assert json.loads(record_file.read_text())["recipe"]["model.path"] == str(PRIOR_DIR)
    assert json.loads((tmp_path / "settings.json").read_text())["model_path"] == str(PRIOR_DIR)
    assert f"(weights: {PRIOR_DIR})" in (tmp_path / "table.md").read_text()
    with pytest.raises(SystemExit, match="model_path"):  # the folder's runs are of that prior: no mixing
        fidelity.main(argv)


def test_two_folders_are_compared_prompt_by_prompt_bound_result_and_gap(tmp_path, capsys):
    def folder(name: str, bounds: list[float], results: list[list[float]]):
        out = tmp_path / name
        (out / "settings.json").parent.mkdir(parents=True)
        (out / "settings.json").write_text("{}")
        for i, (bound, seeds) in enumerate(zip(bounds, results)):
            prompt = {"prompt": f"prompt {i}", "category": "single"}
            metrics = dict.fromkeys(fidelity.METRICS, 0.5)
            (out / "bound" / f"p{i}").mkdir(parents=True)
            (out / "bound" / f"p{i}" / "bound.json").write_text(
                json.dumps({**prompt, "metrics": {**metrics, "psnr": bound}})
            )
            for seed, psnr in enumerate(seeds):
                run = out / "runs" / "gaussians" / "sds" / f"seed{seed}" / f"p{i}"
                run.mkdir(parents=True)
                record = {**prompt, "backbone": "gaussians", "prior": "sds", "metrics": {**metrics, "psnr": psnr}}
                (run / "fidelity.json").write_text(json.dumps(record))
        return out

    mine = folder("mine", [20.0, 22.0], [[17.0, 19.0], [21.0, 21.0]])  # seeds averaged first: 18, 21
    theirs = folder("theirs", [19.0, 20.0], [[15.0], [19.0]])
    table = fidelity.main(["--out", str(mine), "--against", str(theirs)])
    single = table["single"]
    assert single["bound"]["psnr"]["mean"] == pytest.approx(1.5) and single["bound"]["psnr"]["n"] == 2
    assert single["gaussians/sds"]["psnr"]["mean"] == pytest.approx(2.5)  # (18 - 15 + 21 - 19) / 2
    assert single["gaussians/sds"]["gap_psnr"]["mean"] == pytest.approx(-1.0)  # gaps (2, 1) minus (4, 1)
    assert single["gaussians/sds"]["iou"]["mean"] == 0.0 and table["all"] == single
    assert "| single | gaussians/sds | 2 | +2.50" in (mine / "against.md").read_text()
    assert json.loads((mine / "against.json").read_text())["against"] == str(theirs)
    with pytest.raises(SystemExit, match="not a fidelity folder"):
        fidelity.main(["--out", str(tmp_path / "nowhere"), "--against", str(theirs)])


def test_a_bound_made_with_other_weights_is_refused_not_read_back(tmp_path):
    prompt = fidelity.Prompt(CAPTION, "single")
    record = {"prompt": CAPTION, "category": "single", "weights": "aaaa", "metrics": _metrics(20.0, 0.9)}
    (tmp_path / "bound" / prompt.key).mkdir(parents=True)
    fidelity.write_json(tmp_path / "bound" / prompt.key / fidelity.BOUND_RECORD, record)
    args = (None, prompt, EVAL_VIEWS, [0], 50, 7.5, tmp_path)  # no model: a record is read back, nothing sampled
    assert fidelity.bound_one(*args, weights="aaaa") == record
    with pytest.raises(fidelity.FidelityError, match=r"other weights \(model.weights: 'aaaa' -> 'bbbb'\)"):
        fidelity.bound_one(*args, weights="bbbb")
    del record["weights"]  # a record from before bounds kept their weights: read back as before
    fidelity.write_json(tmp_path / "bound" / prompt.key / fidelity.BOUND_RECORD, record)
    assert fidelity.bound_one(*args, weights="bbbb") == record

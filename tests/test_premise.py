"""python -m lods.eval.premise: caption selection, the table, the movement measure, options (fast: model=tiny)."""

import json
import math

import pytest
import torch

from lods.eval import premise
from lods.toyworld import grammar


def test_caption_selection_is_deterministic_with_the_requested_counts_and_both_kinds_per_category():
    captions = premise.select_captions(2, 3, seed=0)
    assert captions == premise.select_captions(2, 3, seed=0)
    assert captions != premise.select_captions(2, 3, seed=1)
    assert len({c.text for c in captions}) == len(captions) == 3 * (2 + 3)
    for category in grammar.CATEGORIES:
        mine = [c for c in captions if c.category == category]
        assert [c.kind for c in mine] == ["open"] * 2 + ["full"] * 3
        for caption in mine:
            base, view = grammar.split_view_suffix(caption.text)
            assert view in premise.VIEWS
            assert grammar.parse_open_caption(base).category == category
            scene = grammar.parse_caption(caption.scene)
            assert grammar.is_consistent(scene, base)  # the drawn scene is a member of the caption's set
            assert caption.set_size == grammar.count_consistent(base)
            if caption.kind == "open":
                assert grammar.is_open(base) and caption.set_size >= premise.NUM_PARTICLES
            else:
                assert base == caption.scene and caption.set_size == 1
        # open caption i is an open variant of full caption i's scene, with the same view
        for o, f in zip(mine[:2], mine[2:]):
            assert o.scene == f.scene and grammar.split_view_suffix(o.text)[1] == grammar.split_view_suffix(f.text)[1]
    # more captions keep the fewer as a prefix (a relaunch with larger counts reuses the finished runs)
    smaller = premise.select_captions(1, 1, seed=0)
    for category in grammar.CATEGORIES:
        for kind in premise.KINDS:
            big = [c for c in captions if (c.category, c.kind) == (category, kind)]
            assert [c for c in smaller if (c.category, c.kind) == (category, kind)] == big[:1]


def test_the_default_selection_has_at_least_8_open_and_8_full_captions():
    args = premise.parse_args([])
    kinds = [c.kind for c in args.captions]
    assert kinds.count("open") >= 8 and kinds.count("full") >= 8
    assert args.priors == list(premise.PRIORS) and args.seeds == [0]
    assert premise.parse_priors("sds,lods_lora") == ["sds@7.5", "sds@30", "sds@100", "lods_lora"]


def _record(prior, kind, psnr, iou, distinct, validity, movement=None):
    return {
        "prior": prior,
        "kind": kind,
        "metrics": {"psnr": psnr, "iou": iou, "delta_e": 10.0, "saturation_bias": 0.1},
        "diversity": {"distinct_scenes": distinct, "validity@0.5": validity},
        "movement": None if movement is None else {"movement": movement},
    }


def test_table_splits_open_from_full_and_averages():
    records = [
        _record("lods_embedding", "open", 10.0, 0.2, 3.0, 0.5, movement=0.01),
        _record("sds@7.5", "open", 12.0, 0.4, 2.0, 0.25),
        _record("sds@7.5", "full", 20.0, 0.8, 1.0, 1.0),
        _record("sds@7.5", "open", 14.0, 0.6, 4.0, 0.75),
        _record("lods_embedding", "open", 11.0, 0.3, 1.0, math.nan, movement=0.03),
    ]
    table = premise.summarize(records)
    assert list(table) == ["sds@7.5", "lods_embedding"]  # PRIORS order
    assert list(table["sds@7.5"]) == ["open", "full"]
    sds_open = table["sds@7.5"]["open"]
    assert sds_open["count"] == 2 and sds_open["psnr"] == pytest.approx(13.0) and sds_open["iou"] == pytest.approx(0.5)
    assert sds_open["distinct_scenes"] == pytest.approx(3.0) and sds_open["validity"] == pytest.approx(0.5)
    assert math.isnan(sds_open.get("movement", math.nan))
    assert table["sds@7.5"]["full"]["count"] == 1 and table["sds@7.5"]["full"]["psnr"] == 20.0
    lods = table["lods_embedding"]
    assert list(lods) == ["open"] and lods["open"]["movement"] == pytest.approx(0.02)
    assert lods["open"]["validity"] == pytest.approx(0.5)  # NaN left out
    text = premise.markdown(table, {"steps": 20, "model": "toyworld", "overrides": []})
    assert "| sds@7.5 | open | 2 | 13.00 | 0.500 | 10.0 | +0.100 | 3.00 | 0.50 | – |" in text
    assert "| lods_embedding | open | 2 | 10.50 | 0.250 |" in text and "2.00e-02 |" in text


def _paired_record(prior, kind, scene, psnr, iou):
    return {**_record(prior, kind, psnr, iou, 1.0, 1.0), "scene": scene, "seed": 0}


def test_paired_differences_and_open_caption_costs_of_known_values():
    records = []
    for i in range(5):
        scene = f"scene {i}"
        records += [
            _paired_record("sds_ref", "open", scene, 10.0 + i, 0.5),  # unguided: loses 5 dB on open captions
            _paired_record("sds_ref", "full", scene, 15.0 + i, 0.5),
            _paired_record("sds@30", "open", scene, 13.0 + i, 0.5),  # guided: loses 1 dB
            _paired_record("sds@30", "full", scene, 14.0 + i, 0.5),
        ]
    diffs = premise.differences(records)
    opened, full = diffs["open"]["sds@30 - sds_ref"], diffs["full"]["sds@30 - sds_ref"]
    assert opened["psnr"]["n"] == 5 and opened["psnr"]["mean"] == pytest.approx(3.0) and opened["psnr"]["excludes_zero"]
    assert opened["psnr"]["win_rate"] == 1.0
    assert full["psnr"]["mean"] == pytest.approx(-1.0) and full["psnr"]["win_rate"] == 0.0
    assert opened["iou"]["mean"] == 0.0 and not opened["iou"]["excludes_zero"]  # no difference, no star
    gaps = premise.open_gaps(records)
    assert gaps["sds_ref"]["psnr"]["mean"] == pytest.approx(-5.0) and gaps["sds@30"]["psnr"]["mean"] == pytest.approx(
        -1.0
    )
    assert gaps["sds@30 - sds_ref"]["psnr"]["mean"] == pytest.approx(4.0)  # guidance copes better with open captions
    text = premise.differences_markdown(diffs, gaps)
    assert "| sds@30 - sds_ref | 5 | +3.000* [+3.000, +3.000] 100% |" in text
    assert premise.differences([r for r in records if r["prior"] != "sds_ref"]) == {}  # no baseline: no rows


def test_embedding_movement_of_a_known_change():
    alpha_0 = torch.tensor([[3.0, 4.0]])
    moved = premise.embedding_movement(alpha_0, alpha_0 + torch.tensor([[0.3, -0.4]]))
    assert moved["movement"] == pytest.approx(0.1)  # ||(0.3, -0.4)|| / ||(3, 4)|| = 0.5 / 5
    assert moved["relative_l1"] == pytest.approx(0.1)  # 0.7 / 7
    assert moved["mean_abs_change"] == pytest.approx(0.35)
    assert premise.embedding_movement(alpha_0, alpha_0.clone())["movement"] == 0.0


def test_lora_movement_of_a_known_change():
    weight = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # ||W||_F = 5
    a = torch.tensor([[1.0, 2.0]])  # rank 1, A [1, 2]
    layer = premise.LoraLayer(weight, a, torch.zeros(2, 1), a, torch.tensor([[0.5], [0.0]]), scale=0.5)
    moved = premise.lora_movement([layer])
    # dW = 0.5 * B A = 0.5 * [[0.5, 1], [0, 0]]: ||dW|| = 0.5 * sqrt(1.25)
    assert moved["movement"] == pytest.approx(0.5 * math.sqrt(1.25) / 5)
    assert moved["parameter_change"] == pytest.approx(0.5 / math.sqrt(5))  # ||B_T - 0|| / ||(A_0, B_0)||
    assert moved["b_norm"] == pytest.approx(0.5)
    two = premise.lora_movement([layer, premise.LoraLayer(weight, a, torch.zeros(2, 1), a, torch.zeros(2, 1), 0.5)])
    assert two["movement"] == pytest.approx(0.5 * math.sqrt(1.25) / math.sqrt(50))  # pooled over layers


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--priors", "sds,nope"], ["'nope'", "sds_ref", "lods_embedding", "lods_lora", "vsd", "sdi"]),
        (["--open", "-1"], ["--open", "-1", ">= 0"]),
        (["--full", "-2"], ["--full", "-2", ">= 0"]),
        (["--categories", "single,crowd"], ["'crowd'", "single", "surroundings", "multiple"]),
        (["--seeds", "0,x"], ["--seeds", "0,x"]),
        (["--steps", "0"], ["--steps", "0"]),
        (["--prior-samples", "7.5,0.5"], ["--prior-samples", "7.5,0.5", ">= 1"]),
    ],
)
def test_bad_options_fail_naming_the_bad_value_and_the_allowed_ones(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_:
        premise.parse_args([*argv, "--plan"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for text in named:
        assert text in err


def _main(out, *extra):
    common = ["--model", "tiny", "--open", "1", "--full", "1", "--categories", "single", "--out", str(out)]
    return premise.main([*common, *extra])


def test_runs_are_recorded_and_a_relaunch_continues_without_rerunning(tmp_path):
    out = tmp_path / "premise"
    _main(out, "--steps", "2", "--priors", "lods_lora,sds_ref")
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["steps"] == 2 and len(results["runs"]) == 4
    by_prior = {(r["prior"], r["kind"]): r for r in results["runs"]}
    assert by_prior[("sds_ref", "full")]["movement"] is None
    lora = by_prior[("lods_lora", "open")]
    assert lora["movement"]["movement"] > 0 and lora["movement"]["layers"] > 0
    assert lora["steps"] == 2 and lora["category"] == "single"
    assert "| lods_lora | open | 1 |" in (out / "table.md").read_text()

    records = sorted(out.glob("runs/*/*/*/premise.json"))
    stamps = [p.stat().st_mtime_ns for p in records]
    _main(out, "--priors", "lods_lora")  # the folder's steps; finished runs are read back, not rerun
    assert [p.stat().st_mtime_ns for p in records] == stamps
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4  # the table keeps every finished run

    with pytest.raises(SystemExit, match="steps: 2 there, 3 asked"):
        _main(out, "--steps", "3", "--priors", "sds_ref")


def test_movement_is_zero_when_nothing_is_learned(tmp_path):
    """The initial LoRA is rebuilt exactly (seeded as train() seeds it): with lr 0 the change is 0."""
    _main(tmp_path, "--steps", "2", "--priors", "lods_lora", "--full", "0", "--override", "prior.lr=0")
    (record,) = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert record["movement"]["movement"] == 0.0 and record["movement"]["parameter_change"] == 0.0


def test_the_priors_own_samples_are_scored_like_the_runs_and_tabulated(model):
    captions = premise.select_captions(1, 1, categories=["single"])
    records = premise.prior_sample_records(model, captions, 7.5, steps=2)
    assert [r["prior"] for r in records] == ["ddim@7.5", "ddim@7.5"]
    assert [r["kind"] for r in records] == ["open", "full"] and records[0]["scene"] == records[1]["scene"]
    for record in records:
        assert set(record["metrics"]) == set(premise.METRICS) and len(record["matched"]) == premise.NUM_PARTICLES
        assert 1 <= record["diversity"]["distinct_scenes"] <= premise.NUM_PARTICLES
    assert records[1]["diversity"]["distinct_scenes"] == 1.0  # a full caption names one scene
    again = premise.prior_sample_records(model, captions, 100.0, steps=2)
    text = premise.prior_samples_markdown(records + again)
    assert "| ddim@7.5 | open | 1 |" in text and "| ddim@100 - ddim@7.5 | 1 |" in text

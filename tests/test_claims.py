"""python -m lods.eval.claims: verdicts from paired differences on synthetic results with known answers."""

import pytest

from lods.eval import claims, fidelity


def _row(prior, prompt, seed, psnr, backbone="gaussians", floaters=0.01):
    return {
        "prior": prior,
        "prompt": prompt,
        "seed": seed,
        "backbone": backbone,
        "category": "single",
        "metrics": {"gt/psnr": psnr, "gt/floater_mass": floaters},
    }


def _bench(offset):
    """SDS and SDI on 4 prompts x 2 seeds; SDI = SDS + offset(i) dB."""
    rows = []
    for i in range(4):
        for seed in (0, 1):
            base = 15.0 + i + 0.1 * seed
            rows += [_row("sds", f"p{i}", seed, base), _row("sdi", f"p{i}", seed, base + offset(i, seed))]
    return claims.Sources(bench={"runs": rows}, premise=None, fidelity=None, perf={})


@pytest.mark.parametrize(
    "offset, expected",
    [
        (lambda i, s: 1.0 + 0.1 * i, claims.HOLDS),
        (lambda i, s: -1.0 - 0.1 * s, claims.FAILS),
        (lambda i, s: (-1.0) ** (i + s), claims.OPEN),  # +1 and -1 in equal numbers: mean 0
    ],
)
def test_a_bench_claim_holds_fails_or_is_inconclusive_by_its_interval(offset, expected):
    finding = claims.sdi_quality(_bench(offset))
    assert finding.verdict == expected
    assert "gaussians: sdi - sds PSNR (dB)" in finding.measurement and "(n=8)" in finding.measurement


def test_the_diversity_claim_reads_the_bench_over_seeds():
    """LODS matches 2 members of each open caption's set over 2 seeds, SDS one: the bench part holds."""
    prompts = []
    for i in range(4):
        for prior, distinct in (("sds", 1.0), ("lods_embedding", 2.0), ("lods_lora", 2.0 - (i == 0))):
            row = _row(prior, f"open {i}", None, 0.0)
            row["metrics"] = {"seeds/distinct_scenes": distinct}
            prompts.append(row)
    bench = {"runs": [], "over_seeds": {"prompts": prompts}}
    finding = claims.diversity(claims.Sources(bench, None, None, {}))
    assert (
        "gaussians: lods_embedding - sds distinct scenes over seeds +1.00 [+1.00, +1.00] (n=4)" in finding.measurement
    )
    assert "lods_lora - sds distinct scenes over seeds +0.75" in finding.measurement
    assert "no premise test yet" in finding.measurement and finding.verdict == claims.OPEN  # one part missing
    assert claims.diversity(claims.Sources(None, None, None, {})).verdict == claims.MISSING


def test_verdict_and_combine_rules():
    up = {"n": 8, "mean": 1.0, "low": 0.5, "high": 1.5, "excludes_zero": True}
    down = {"n": 8, "mean": -1.0, "low": -1.5, "high": -0.5, "excludes_zero": True}
    flat = {"n": 8, "mean": 0.1, "low": -0.5, "high": 0.7, "excludes_zero": False}
    assert claims.verdict(up, 1) == claims.HOLDS and claims.verdict(up, -1) == claims.FAILS
    assert claims.verdict(down, -1) == claims.HOLDS and claims.verdict(flat, 1) == claims.OPEN
    assert claims.verdict({"n": 0, "mean": float("nan")}) == claims.MISSING
    assert claims.combine([claims.HOLDS, claims.HOLDS]) == claims.HOLDS
    assert claims.combine([claims.HOLDS, claims.OPEN]) == claims.OPEN
    assert claims.combine([claims.HOLDS, claims.MISSING]) == claims.OPEN  # a part not measured: not "holds"
    assert claims.combine([claims.OPEN, claims.FAILS]) == claims.FAILS
    assert claims.combine([claims.MISSING]) == claims.MISSING


def test_the_upper_bound_claim_reads_the_fidelity_table_per_backbone_and_skips_incomplete_runs():
    bounds = [{"prompt": f"p{i}", "category": "single", "metrics": _metrics(20.0)} for i in range(4)]
    runs = [_run("gaussians", "sds", f"p{i}", 18.0 + 0.1 * i) for i in range(4)]  # about 2 dB below: holds
    runs += [_run("gaussians", "sds@100", f"p{i}", 25.0) for i in range(4)]  # a variant: not a default
    runs += [_run("nerf", "sds", "p0", 30.0)]  # one prompt of four: incomplete, left out
    table = fidelity.summarize(bounds, runs)
    finding = claims.upper_bound(claims.Sources(None, None, {"table": table}, {}))
    assert finding.verdict == claims.HOLDS
    assert "gaussians/sds" in finding.measurement and "nerf" not in finding.measurement


def _metrics(psnr):
    return {"psnr": psnr, "iou": 0.8, "ssim": 0.8, "delta_e": 10.0, "saturation_bias": 0.0}


def _run(backbone, prior, prompt, psnr):
    return {
        "backbone": backbone,
        "prior": prior,
        "prompt": prompt,
        "category": "single",
        "seed": 0,
        "metrics": _metrics(psnr),
        "exact": {"psnr": psnr},
    }


def test_time_claims_compare_the_benchmarks_ratios():
    perf = {"gaussians": {"sds": {"seconds_per_step": 0.1}, "sdi": {"seconds_per_step": 0.17}}}
    assert claims.sdi_time(claims.Sources(None, None, None, perf)).verdict == claims.HOLDS
    perf["nerf"] = {"sds": {"seconds_per_step": 0.1}, "sdi": {"seconds_per_step": 0.4}}
    finding = claims.sdi_time(claims.Sources(None, None, None, perf))
    assert finding.verdict == claims.FAILS and "nerf: SDI 4.00x" in finding.measurement


def test_nothing_measured_names_the_command_and_the_report_has_a_row_per_claim(tmp_path):
    rows = claims.main(
        ["--bench", str(tmp_path / "b"), "--premise", str(tmp_path / "p"), "--fidelity", str(tmp_path / "f")]
        + ["--perf", str(tmp_path / "perf"), "--out", str(tmp_path / "claims.md")]
    )
    assert [r["key"] for r in rows] == [c.key for c in claims.CLAIMS]
    assert all(r["verdict"] == claims.MISSING for r in rows)
    text = (tmp_path / "claims.md").read_text()
    assert "`python -m lods.bench <sweep dir> --out bench/standard`" in text and "`python -m lods.eval.premise`" in text
    assert (tmp_path / "claims.json").is_file()


def test_the_floater_claim_pairs_guidance_100_with_the_same_configuration_at_its_default():
    def run(prior, prompt, floaters):
        return {**_run("gaussians", prior, prompt, 15.0), "exact": {"psnr": 15.0, "floater_mass": floaters}}

    # runs kept from before a default changed: sds_r06 and sds_r06@100; the new default 'sds' has no @100 partner
    runs = [run("sds", f"p{i}", 0.5) for i in range(4)]
    runs += [run("sds_r06", f"p{i}", 0.01) for i in range(4)] + [run("sds_r06@100", f"p{i}", 0.03) for i in range(4)]
    finding = claims.cfg_detail_and_floaters(claims.Sources(None, None, {"runs": runs}, {}))
    assert "SDS guidance 100 - the same configuration at the default (sds_r06), floater mass +0.0200" in (
        finding.measurement
    )
    runs += [{**run("sds_r06", f"p{i}", 0.9), "backbone": "nerf"} for i in range(4)]  # another backbone: not paired
    finding = claims.cfg_detail_and_floaters(claims.Sources(None, None, {"runs": runs}, {}))
    assert "(sds_r06), floater mass +0.0200" in finding.measurement and "(n=4)" in finding.measurement
    runs += [run("sds@100", f"p{i}", 0.4) for i in range(4)]  # a pair at the current default wins
    finding = claims.cfg_detail_and_floaters(claims.Sources(None, None, {"runs": runs}, {}))
    assert "SDS guidance 100 - the default, floater mass -0.1000" in finding.measurement

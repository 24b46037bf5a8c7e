"""``python -m lods.eval.fullscale``: its options, table and merging of reruns; one full-size step (slow)."""

import json

import pytest

from lods.eval import fullscale


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--priors", "sds", "magic"], r"unknown prior 'magic'; choose from: sds, sds_ref"),
        (["--backbones", "mesh"], r"unknown backbone 'mesh'; choose from: image, gaussians, nerf, nerf512"),
        (["--model", "sdxl"], r"unknown model 'sdxl'; choose from: sd15, sd21, sd21_base, tiny, toyworld"),
        (["--device", "tpu"], r"unknown device 'tpu'; choose from: cpu, cuda"),
        (["--dtype", "fp8"], r"unknown dtype 'fp8'; choose from: auto, fp32, fp16, bf16"),
        (["--weights", "trained"], r"unknown weights 'trained'; choose from: random, pretrained"),
        (["--steps", "0"], r"--steps 0: at least 1"),
    ],
)
def test_bad_options_name_the_value_and_the_choices(argv, message):
    with pytest.raises(SystemExit, match=message):
        fullscale.parse_args(argv)


def test_model_overrides():
    assert fullscale.overrides("sd21_base", "random", "cuda", "fp16", ["seed=1"]) == [
        *("model=sd21_base", "model.device=cuda", "model.dtype=fp16", "model.weights=random", "seed=1")
    ]
    assert fullscale.overrides("tiny", "random", "cpu", "auto", []) == ["model=tiny", "model.device=cpu"]
    assert (
        fullscale.parse_args([]).memory_limit_gb > 0 and fullscale.parse_args(["--device", "cuda"]).memory_limit_gb == 0
    )


def _row(prior, backbone, seconds, **extra):
    settings = {"model": "sd21_base", "weights": "random", "device": "cpu", "dtype": "auto"}
    return {**settings, "prior": prior, "backbone": backbone, "steps": 3, "seconds_per_step": seconds,
            "peak_memory_mb": 8192.0, "status": "ok", "model_name": "sd21_base (random weights)", **extra}  # fmt: skip


def test_table_and_rerun_merge(tmp_path):
    results = tmp_path / "results.json"
    rows = [_row("sds", "image", 10.0), _row("vsd", "image", 30.0), _row("sdi", "nerf", 80.0)]
    results.write_text(json.dumps({"rows": rows}))
    merged = fullscale._merge(results, [_row("vsd", "image", 25.0, status="ok (rerun)")])
    assert [(r["prior"], r["seconds_per_step"]) for r in merged] == [("sds", 10.0), ("sdi", 80.0), ("vsd", 25.0)]
    table = fullscale.markdown(merged)
    assert "## sd21_base (random weights), cpu, dtype auto" in table
    assert "| image | sds | 10 | 1.00 | – | – | – | 8.00 | 6.2 | ok |" in table
    assert "| image | vsd | 25 | 2.50 | – | – | – | 8.00 | 47.9 | ok (rerun) |" in table
    assert "| nerf | sdi | 80 | – |" in table  # no SDS row on that backbone: no ratio


@pytest.mark.slow
def test_one_full_size_step(tmp_path):
    """SDS, one step on the 2D latent of sd21_base with random weights (512x512: a 4x64x64 latent), in a subprocess."""
    rows = fullscale.main(["--priors", "sds", "--backbones", "image", "--steps", "1", "--out", str(tmp_path)])
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows
    row = rows[0]
    assert row["model_name"] == "sd21_base (random weights)" and row["model/random_weights"] is True
    assert row["seconds_per_step"] > 0 and row["unet_calls_per_step"] == 1
    assert row["peak_memory_mb"] > 5000  # 1.29 billion fp32 weights alone are 4.8 GiB
    assert "## sd21_base (random weights), cpu" in (tmp_path / "table.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows

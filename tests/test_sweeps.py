"""Sweeps through the CLI: W&B groups, relaunching, the Ray launcher, Optuna, the bench and its table."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lods import bench
from lods.training import objective_value

from .helpers import ROOT, make_config

SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
QUIET = ["model=tiny", "logger=csv", "trainer.max_steps=2", "checkpoint_every=2", "image_every=0"]


def cli(*args, env=None):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.rglob("metrics.json"))


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes(name):
    cfg = make_config([f"sweep={name}"])
    assert cfg.prior._target_ and cfg.backbone._target_
    params = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
    for key in params:  # every swept key exists in the composed config (or is a config group)
        assert key in ("backbone", "prior") or OmegaConf.select(cfg, key, default="missing") != "missing", key


def test_objective_is_a_metric_or_a_clear_error():
    cfg = OmegaConf.create({"objective": "gt/iou"})
    assert objective_value(cfg, {"gt/iou": 0.5, "loss": 1.0}) == 0.5
    assert objective_value(OmegaConf.create({"objective": None}), {"loss": 1.0}) is None
    with pytest.raises(KeyError, match="'gt/iou' is not among this run's metrics; choose one of: loss"):
        objective_value(cfg, {"loss": 1.0, "prompt": "a red cube"})


@pytest.mark.slow
def test_multirun_shares_a_wandb_group_and_a_relaunch_continues(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [*QUIET, "logger=wandb", "prior.guidance_scale=7.5,100", f"hydra.sweep.dir={sweep_dir}", "-m"]
    cli(*args)
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2
    groups = {OmegaConf.load(job / "config.yaml").logger.wandb.group for job in jobs}
    assert groups == {f"multirun-{sweep_dir.name}"}
    assert all(list((job / "wandb").glob("offline-run-*")) for job in jobs)  # W&B ran, offline
    finished = [(job / "metrics.json").read_text() for job in jobs]

    cli(*args)  # relaunching the same sweep keeps the finished runs as they are
    assert [(job / "metrics.json").read_text() for job in jobs] == finished
    for job in jobs:  # ... also when only their small results are left (a bench committed without checkpoints)
        shutil.rmtree(job / "checkpoints")
    cli(*args)
    assert [(job / "metrics.json").read_text() for job in jobs] == finished
    assert not any((job / "checkpoints").exists() for job in jobs)  # nothing ran again

    changed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "seed=1", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert changed.returncode != 0 and "refusing to overwrite" in changed.stderr
    assert "seed: 0 -> 1" in changed.stderr  # what differs is named


def _scores(job: Path) -> dict:
    """A run's metrics without its costs (time and memory differ from run to run)."""
    metrics = json.loads((job / "metrics.json").read_text())
    costs = ("wall_seconds", "peak_memory_mb", "seconds_per_step")
    return {k: v for k, v in metrics.items() if k not in costs and not k.startswith("time/")}


@pytest.mark.slow
def test_ray_and_basic_launchers_give_identical_metrics(tmp_path):
    """Two jobs of the standard bench (toyworld, Gaussians, 5 steps) under the basic launcher and a local Ray
    cluster. lods_ray gives each job one CPU, and Ray sets its OMP_NUM_THREADS to 1; the basic launcher runs
    with the same thread count, since float32 sums reorder with the number of threads."""
    args = [
        "sweep=bench_standard",
        "backbone=gaussians",
        "prompt_index=3",
        "seed=0",
        "prior=sds,lods_embedding",
        "trainer.max_steps=5",
    ]
    args += ["task.eval_azimuths=[0,180]"]
    cli(*args, f"hydra.sweep.dir={tmp_path / 'basic'}", "-m", env={"OMP_NUM_THREADS": "1"})
    cli(*args, "hydra/launcher=lods_ray", f"hydra.sweep.dir={tmp_path / 'ray'}", "-m")
    basic, ray = job_dirs(tmp_path / "basic"), job_dirs(tmp_path / "ray")
    assert [job.name for job in basic] == [job.name for job in ray] and len(basic) == 2
    for a, b in zip(basic, ray):
        scores = _scores(a)
        assert scores["prior"] in ("SDS", "LODSEmbedding") and "gt/psnr" in scores
        assert scores == _scores(b), a.name


@pytest.mark.slow
def test_optuna_sweep_optimises_the_returned_objective(tmp_path):
    sweep_dir = tmp_path / "optuna"
    cli(*QUIET, "sweep=optuna", "objective=loss", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}")
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"prior.guidance_scale", "prior.lr"}
    assert len(job_dirs(sweep_dir)) == 2


@pytest.mark.slow
def test_bench_sweep_and_table(tmp_path):
    """A cut-down bench_mini (2 priors x 2 categories on Gaussians, 3 steps, toyworld) aggregated."""
    sweep_dir = tmp_path / "bench"
    cli(
        "sweep=bench_mini",
        "backbone=gaussians",
        "prior=sds,lods_embedding",
        "prompt_list=toyworld_single,toyworld_multiple",
        "trainer.max_steps=3",
        "task.eval_azimuths=[0,180]",
        f"hydra.sweep.dir={sweep_dir}",
    )
    results = bench.aggregate(sweep_dir, tmp_path / "out")
    assert len(results["runs"]) == 4
    table = results["table"]["gaussians"]
    assert set(table) == {"sds", "lods_embedding"}
    for prior in table.values():
        assert set(prior) == {"single", "multiple", "full", "all"}  # both prompts are full captions
        assert prior["all"]["count"] == prior["full"]["count"] == 2
        assert 0 <= prior["all"]["gt/iou"] <= 1 and prior["all"]["peak_memory_mb"] > 0
    text = (tmp_path / "out" / "table.md").read_text()
    assert "| lods_embedding |" in text and "single IoU ↑" in text and "peak MiB" in text
    from PIL import Image

    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.size == (bench.LABEL_WIDTH + 2 * 64, 3 * 64)  # label + 2 prompts; ground truth + 2 priors


def test_bench_aggregates_fake_runs(tmp_path):
    """Grouping and means without running anything: 2 prompts of one category, one prior."""
    for i, iou in enumerate((0.5, 0.7)):
        run = tmp_path / f"run{i}"
        (run / ".hydra").mkdir(parents=True)
        OmegaConf.save(
            OmegaConf.create({"hydra": {"runtime": {"choices": {"prior": "sds", "backbone": "nerf"}}}}),
            run / ".hydra" / "hydra.yaml",
        )
        metrics = {"prompt": f"p{i}", "gt/category": "single", "gt/iou": iou, "gt/marker_misplaced": float("nan")}
        metrics["wall_seconds"] = 1800.0 * (i + 1)
        (run / "metrics.json").write_text(json.dumps(metrics))
        OmegaConf.save(OmegaConf.create({"prior": {"guidance_scale": [1000, 30][i]}}), run / "config.yaml")
    table = bench.summarize(bench.collect(tmp_path))
    assert table["nerf"]["sds"]["single"]["gt/iou"] == pytest.approx(0.6)
    assert table["nerf"]["sds"]["all"]["count"] == 2
    assert "| sds | 0.60 |" in bench.markdown(table, "t")
    assert "2 runs, 1.50 h of run wall time in all." in bench.markdown(table, "t")
    by_cfg = bench.markdown(bench.summarize(bench.collect(tmp_path, by="prior.guidance_scale")), "t")
    assert by_cfg.index("| sds @ 30 | 0.70 |") < by_cfg.index("| sds @ 1000 | 0.50 |")  # ordered by value
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        bench.aggregate(tmp_path / "empty")


@pytest.mark.slow
def test_profiled_step_split(tmp_path):
    from lods.eval.prior_speed import SPLIT, measure

    results = measure(3, ["model=tiny"], priors=("sds", "lods_embedding"))
    assert results["sds"]["unet_calls_per_step"] == 1  # one batched cond+uncond pass
    assert results["lods_embedding"]["unet_calls_per_step"] == 2  # + Eq. 8's pass for the embedding
    for r in results.values():
        parts = sum(r[f"time/{s}"] for s in SPLIT)
        assert 0.5 * r["seconds_per_step"] < parts < 1.5 * r["seconds_per_step"] and r["peak_memory_mb"] > 0

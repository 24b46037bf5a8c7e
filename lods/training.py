"""``train(cfg)``: the one function the CLI, the tests and the sweepers run."""

from __future__ import annotations

import itertools
import json
import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import lods.config  # noqa: F401  (registers the config resolvers)
from lods.eval.ground_truth import ground_truth_report, ground_truth_report_3d
from lods.export import export_assets
from lods.runs import (
    CHECKPOINT,
    CONFIG_FILE,
    RESULT_FILE,
    RunDirectoryError,
    build_system,
    config_changes,
    last_checkpoint,
    weights_change,
    write_recipe,
)
from lods.system import ScoreDistillationSystem
from lods.utils.images import save_grid
from lods.utils.logging import CSVLogger, drop_rows_from
from lods.utils.memory import peak_memory_mb, reset_peak_memory

log = logging.getLogger(__name__)

__all__ = ["RunDirectoryError", "RunInterruptedError", "objective_value", "run_quietly", "train"]


class RunInterruptedError(RuntimeError):
    """The run stopped before max_steps (e.g. Ctrl-C); its checkpoints are kept for resuming."""


class _Steps(torch.utils.data.IterableDataset):
    """An endless stream of step indices; the trainer's max_steps ends the run."""

    def __iter__(self):
        return iter(itertools.count())


def _loggers(cfg: DictConfig) -> list:
    if not cfg.get("logger"):
        return []
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    for logger in loggers:  # the whole resolved config, so W&B can filter and group runs by any key
        if not isinstance(logger, CSVLogger):  # (its hparams.yaml would repeat config.yaml)
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


@contextmanager
def _finishing(loggers: list):
    """Close the run's W&B run when it ends (else the next job of a multirun would log into it)."""
    try:
        yield
    except BaseException:
        _finish(loggers, exit_code=1)
        raise
    _finish(loggers, exit_code=0)


def _finish(loggers: list, exit_code: int) -> None:
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish(exit_code=exit_code)


def _sweep() -> tuple[str, Path] | None:
    """(name, directory) of the Hydra multirun this job belongs to; None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    name = hydra_cfg.runtime.choices.get("sweep") or "multirun"
    return str(name), Path(hydra_cfg.sweep.dir)


def _group_multirun(cfg: DictConfig) -> None:
    """The jobs of one multirun share a W&B group named after the sweep (and its directory's timestamp)."""
    sweep = _sweep()
    wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
    if sweep is None or wandb_cfg is None or wandb_cfg.get("group"):
        return
    name, sweep_dir = sweep
    with open_dict(cfg):
        cfg.logger.wandb.group = f"{name}-{sweep_dir.name}"


def _same_run(saved: Path, resolved: dict) -> bool:
    return saved.is_file() and OmegaConf.to_container(OmegaConf.load(saved)) == resolved


def _changes(saved: Path, resolved: dict) -> str:
    if not saved.is_file():
        return ""
    return ": " + "; ".join(config_changes(OmegaConf.to_container(OmegaConf.load(saved)), resolved))


def _prepare_run_dir(cfg: DictConfig) -> tuple[DictConfig, Path, Path | None]:
    """(config to run, its directory, checkpoint to resume from)."""
    if cfg.get("resume"):
        run_dir = Path(cfg.resume).expanduser().resolve()
        saved = run_dir / CONFIG_FILE
        if not saved.is_file():
            raise RunDirectoryError(
                f"cannot resume '{cfg.resume}': it has no config.yaml (is it a lods run directory?)"
            )
        run_cfg = OmegaConf.load(saved)
        changed = weights_change(run_dir, run_cfg)
        if changed:
            raise RunDirectoryError(
                f"cannot resume '{cfg.resume}': its model's weights are not the ones it started with ({changed}; "
                "the prior was retrained or replaced in the same folder); resuming would mix two priors in one run"
            )
        with open_dict(run_cfg):
            run_cfg.resume = str(run_dir)
        return run_cfg, run_dir, last_checkpoint(run_dir)
    run_dir = Path(cfg.run_dir).resolve()
    if cfg.get("prompt_list"):  # the saved config names the prompt itself (a resume needs no list)
        from lods.prompts import prompt_at

        with open_dict(cfg):
            cfg.prompt = prompt_at(cfg.prompt_list, cfg.get("prompt_index", 0))
    _group_multirun(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    finished = [p.name for p in (run_dir / RESULT_FILE, run_dir / "checkpoints") if p.exists()]
    # A relaunched sweep (a killed `make bench`, a job SLURM requeued) continues its own jobs: the same config
    # and the same weights (a prior retrained in the same folder leaves the config as it was).
    changed = weights_change(run_dir, cfg) if finished else None
    if finished and _sweep() is not None and _same_run(run_dir / CONFIG_FILE, resolved) and not changed:
        log.info("continuing the run in %s (same config)", run_dir)
        return cfg, run_dir, last_checkpoint(run_dir)
    if finished:
        differences = f": {changed}" if changed else _changes(run_dir / CONFIG_FILE, resolved)
        where = (
            "a run with another config (a changed override, other weights, or configs changed since"
            f"{differences}); choose another hydra.sweep.dir or move the old runs away"
            if _sweep() is not None
            else f"a run; resume it with resume={run_dir} or choose another hydra.run.dir"
        )
        raise RunDirectoryError(
            f"run directory '{run_dir}' already holds {', '.join(finished)} of {where}; refusing to overwrite it."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved), run_dir / CONFIG_FILE)
    write_recipe(run_dir, cfg)
    return cfg, run_dir, None


def _interrupted(trainer, cfg: DictConfig, run_dir: Path) -> RunInterruptedError:
    return RunInterruptedError(
        f"run stopped at step {trainer.global_step} of {cfg.trainer.max_steps}; "
        f"continue it with: python train.py resume={run_dir}"
    )


def _clip_report(cfg: DictConfig, system: ScoreDistillationSystem, images: torch.Tensor) -> dict:
    """CLIP metrics of the final images where CLIP weights are configured: clip/* (eval.clip / $LODS_CLIP, through
    transformers) and open_clip/* (eval.open_clip / $LODS_OPEN_CLIP; R-precision over eval.r_precision_captions)."""
    source, spec = OmegaConf.select(cfg, "eval.clip"), OmegaConf.select(cfg, "eval.open_clip")
    if not source and not spec:
        from lods.toyworld.model import is_toyworld

        # Real checkpoints are where CLIP metrics matter: say why there are none (not for toyworld or tiny).
        if not is_toyworld(system.model) and not str(system.model.name).startswith("tiny("):
            log.info(
                "CLIP metrics skipped: no CLIP weights configured (eval.clip=<folder> or LODS_CLIP=<folder>, "
                "eval.open_clip=<architecture>:<weights> or LODS_OPEN_CLIP)"
            )
        return {}
    from lods.eval.clip import clip_metrics, open_clip_metrics

    out = {}
    if source:
        metrics, reason = clip_metrics(images, system.task.prompt, source)
        if metrics is None:
            log.warning("CLIP metrics skipped: %s", reason)
        out.update(metrics or {})
    if spec:
        from lods.prompts import prompt_list

        name, captions = OmegaConf.select(cfg, "eval.r_precision_captions"), []
        try:
            captions = prompt_list(name) if name else []
        except (FileNotFoundError, ValueError) as error:  # e.g. a T3Bench list without T3BENCH_ROOT
            log.warning("open_clip/r_precision skipped: %s", error)
        metrics, reason = open_clip_metrics(images, system.task.prompt, spec, captions)
        if metrics is None:
            log.warning("open_clip metrics skipped: %s", reason)
        out.update(metrics or {})
    return out


def train(cfg: DictConfig) -> dict:
    """Run one optimisation; returns its final metrics (also written to ``<run_dir>/metrics.json``)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg, run_dir, checkpoint = _prepare_run_dir(cfg)
    result_file = run_dir / RESULT_FILE
    if result_file.is_file():  # _prepare_run_dir lets a finished run through only when it is this run
        log.info("run %s already finished; nothing to do", run_dir)
        return json.loads(result_file.read_text())

    if checkpoint is not None:  # the steps after the checkpoint are run, and logged, again
        drop_rows_from(run_dir / "metrics.csv", torch.load(checkpoint, weights_only=False)["global_step"])
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    device = "cuda" if torch.cuda.is_available() and cfg.trainer.get("accelerator") != "cpu" else None
    reset_peak_memory(device)
    system = build_system(cfg, run_dir)
    model = system.model
    if model.random_weights:
        log.warning("model %s: untrained weights; this run measures time and memory, not quality", model.name)
    checkpointing = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint_every,
        save_last=True,
        save_top_k=1,
        save_on_exception=False,  # a failing step (e.g. NaN) must not replace the last good checkpoint
    )
    loggers = _loggers(cfg)
    trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=[checkpointing], default_root_dir=str(run_dir)
    )
    with _finishing(loggers):
        started = time.perf_counter()
        with warnings.catch_warnings():
            # Checkpoints after the optimiser step are what resuming needs; Lightning warns about exactly that.
            warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            try:
                steps = torch.utils.data.DataLoader(_Steps(), batch_size=None)
                trainer.fit(system, train_dataloaders=steps, ckpt_path=checkpoint)
            except SystemExit as exit_:  # Lightning exits after a graceful Ctrl-C shutdown
                raise _interrupted(trainer, cfg, run_dir) from exit_
        if trainer.interrupted or trainer.global_step < cfg.trainer.max_steps:
            raise _interrupted(trainer, cfg, run_dir)
        trainer.save_checkpoint(run_dir / CHECKPOINT)  # the final state (exports redo from it)

        if system.task.dims == 3:  # one render of the evaluation views gives the images and their opacity
            evaluation = system.backbone.evaluate(system.task.eval_cameras())
            images = evaluation.rgb.clamp(0, 1).cpu()
        else:
            images = system.images().cpu()
        final = system.save_images("final", images)
        for i, image in enumerate(images):
            save_grid(image[None], run_dir / "images" / f"final_{i}.png")
        exports = []
        if system.task.dims == 3:
            exports = export_assets(system, run_dir / "export", **cfg.get("export", {}))
            alpha = None if evaluation.alpha is None else evaluation.alpha.cpu()
            report = ground_truth_report_3d(model, system.task, images, alpha)
        else:
            report = ground_truth_report(model, system.task.prompt, images)
        if report is not None:
            gt_metrics, references = report
            save_grid(references, run_dir / "images" / "ground_truth.png")
            for logger in trainer.loggers:
                logger.log_metrics(
                    {k: v for k, v in gt_metrics.items() if isinstance(v, float)}, step=trainer.global_step
                )
        clip = _clip_report(cfg, system, images)
        cost = {
            "wall_seconds": round(time.perf_counter() - started, 3),
            "peak_memory_mb": round(peak_memory_mb(device), 1),
            **system.timing(),
        }
        for logger in trainer.loggers:
            logger.log_metrics({**clip, **cost}, step=trainer.global_step)
            logger.save()  # after fit Lightning saves no more: without this the CSV never gets these columns
        metrics = {
            "steps": int(trainer.global_step),
            "model": model.name,
            "model/random_weights": model.random_weights,  # true: an untrained architecture, its outputs are noise
            **cost,
            **{k: float(v) for k, v in trainer.callback_metrics.items()},
            **system.task.describe(),
            "prior": type(system.prior).__name__,
            "backbone": type(system.backbone).__name__,
            "image": str(final.relative_to(run_dir)) if final else None,
            "exports": [str(p.relative_to(run_dir)) for p in exports],
            **(report[0] if report else {}),
            **clip,
        }
        result_file.write_text(json.dumps(metrics, indent=2) + "\n")
    if model.random_weights:
        log.warning(
            "finished: %s, with %s: its images and scores are noise (time and memory only)", run_dir, model.name
        )
    else:
        log.info("finished: %s", run_dir)
    return metrics


def run_quietly(overrides: list[str], steps: int, run_dir: str | Path, accelerator: str = "cpu") -> dict:
    """Compose ``train.py <overrides>`` for ``steps`` steps and run it in-process without loggers, progress bar or
    intermediate images (benchmarks); returns its metrics.json. ``accelerator``: Lightning's (cpu, gpu, auto)."""
    from lods.config import compose_config

    quiet = [
        "logger=none",
        f"trainer.max_steps={steps}",
        f"trainer.accelerator={accelerator}",
        "+trainer.enable_progress_bar=false",
        f"checkpoint_every={steps}",
        "image_every=0",
    ]
    return train(compose_config([*quiet, *overrides], run_dir=str(run_dir)))


def objective_value(cfg: DictConfig, metrics: dict) -> float | None:
    """The metric a sweeper optimises (``objective=<key of metrics.json>``), or None without one."""
    objective = cfg.get("objective")
    if not objective:
        return None
    if objective not in metrics:
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise KeyError(
            f"objective '{objective}' is not among this run's metrics; choose one of: {', '.join(numeric)} "
            "(gt/* need model=toyworld and a toyworld prompt)"
        )
    return float(metrics[objective])

"""``train(cfg)``: the one function the CLI, the tests and the sweepers run."""

from __future__ import annotations

import itertools
import json
import logging
import time
import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import lods.config  # noqa: F401  (registers the config resolvers)
from lods.eval.ground_truth import ground_truth_report, ground_truth_report_3d
from lods.export import export_assets
from lods.system import ScoreDistillationSystem
from lods.utils.images import save_grid
from lods.utils.logging import drop_rows_from

log = logging.getLogger(__name__)

RESULT_FILE = "metrics.json"


class RunDirectoryError(RuntimeError):
    """A run would overwrite finished work, or a resume has nothing to resume."""


class RunInterruptedError(RuntimeError):
    """The run stopped before max_steps (e.g. Ctrl-C); its checkpoints are kept for resuming."""


class _Steps(torch.utils.data.IterableDataset):
    """An endless stream of step indices; the trainer's max_steps ends the run."""

    def __iter__(self):
        return iter(itertools.count())


def _loggers(cfg: DictConfig) -> list:
    if not cfg.get("logger"):
        return []
    return [instantiate(c) for c in cfg.logger.values() if c is not None]


def _prepare_run_dir(cfg: DictConfig) -> tuple[DictConfig, Path, Path | None]:
    """(config to run, its directory, checkpoint to resume from)."""
    if cfg.get("resume"):
        run_dir = Path(cfg.resume).expanduser().resolve()
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise RunDirectoryError(
                f"cannot resume '{cfg.resume}': it has no config.yaml (is it a lods run directory?)"
            )
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        run_cfg = OmegaConf.load(saved)
        with open_dict(run_cfg):
            run_cfg.resume = str(run_dir)
        return run_cfg, run_dir, checkpoint if checkpoint.is_file() else None
    run_dir = Path(cfg.run_dir).resolve()
    finished = [p.name for p in (run_dir / RESULT_FILE, run_dir / "checkpoints") if p.exists()]
    if finished:
        raise RunDirectoryError(
            f"run directory '{run_dir}' already holds {', '.join(finished)}; refusing to overwrite it. "
            f"Resume it with resume={run_dir} or choose another hydra.run.dir."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    OmegaConf.save(OmegaConf.create(resolved), run_dir / "config.yaml")
    return cfg, run_dir, None


def _interrupted(trainer, cfg: DictConfig, run_dir: Path) -> RunInterruptedError:
    return RunInterruptedError(
        f"run stopped at step {trainer.global_step} of {cfg.trainer.max_steps}; "
        f"continue it with: python train.py resume={run_dir}"
    )


def build_system(cfg: DictConfig, run_dir: Path | None = None) -> ScoreDistillationSystem:
    """The LightningModule a config describes (model, prior, backbone, task, schedules)."""
    return ScoreDistillationSystem(
        model=instantiate(cfg.model),
        prior=instantiate(cfg.prior),
        backbone=instantiate(cfg.backbone),
        task=instantiate(cfg.task),
        cfg_schedule=instantiate(cfg.cfg_schedule),
        optimizer=instantiate(cfg.optimizer),
        max_steps=cfg.trainer.max_steps,
        seed=cfg.seed,
        image_every=cfg.image_every,
        run_dir=run_dir,
    )


def load_system(run_dir: str | Path) -> tuple[ScoreDistillationSystem, int]:
    """A run's system restored from its last checkpoint, and that checkpoint's step."""
    run_dir = Path(run_dir).expanduser().resolve()
    saved, checkpoint = run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    for path in (saved, checkpoint):
        if not path.is_file():
            raise RunDirectoryError(f"'{run_dir}' has no {path.relative_to(run_dir)}: is it a lods run directory?")
    system = build_system(OmegaConf.load(saved), run_dir)
    state = torch.load(checkpoint, map_location=system.model.device, weights_only=False)
    system.on_load_checkpoint(state)
    system.load_state_dict(state["state_dict"])
    system.eval()
    return system, int(state["global_step"])


def train(cfg: DictConfig) -> dict:
    """Run one optimisation; returns its final metrics (also written to ``<run_dir>/metrics.json``)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg, run_dir, checkpoint = _prepare_run_dir(cfg)
    result_file = run_dir / RESULT_FILE
    if checkpoint is not None and result_file.is_file():
        log.info("run %s already finished; nothing to do", run_dir)
        return json.loads(result_file.read_text())

    if checkpoint is not None:  # the steps after the checkpoint are run, and logged, again
        drop_rows_from(run_dir / "metrics.csv", torch.load(checkpoint, weights_only=False)["global_step"])
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    system = build_system(cfg, run_dir)
    model = system.model
    checkpointing = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint_every,
        save_last=True,
        save_top_k=1,
        save_on_exception=False,  # a failing step (e.g. NaN) must not replace the last good checkpoint
    )
    trainer = instantiate(
        cfg.trainer, logger=_loggers(cfg) or False, callbacks=[checkpointing], default_root_dir=str(run_dir)
    )
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
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # the final state (exports redo from it)

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
            logger.log_metrics({k: v for k, v in gt_metrics.items() if isinstance(v, float)}, step=trainer.global_step)
    metrics = {
        "steps": int(trainer.global_step),
        "wall_seconds": round(time.perf_counter() - started, 3),
        **system.timing(),
        **{k: float(v) for k, v in trainer.callback_metrics.items()},
        **system.task.describe(),
        "prior": type(system.prior).__name__,
        "image": str(final.relative_to(run_dir)) if final else None,
        "exports": [str(p.relative_to(run_dir)) for p in exports],
        **(report[0] if report else {}),
    }
    result_file.write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("finished: %s", run_dir)
    return metrics

"""Benchmark runs: train() in-process, quietly (no logger, no progress bar, one checkpoint)."""

from __future__ import annotations


def run_quietly(overrides: list[str], steps: int, run_dir: str) -> dict:
    """Compose ``train.py <overrides>`` for ``steps`` steps on the CPU and run it; returns metrics.json."""
    from lods.config import compose_config
    from lods.training import train

    quiet = [
        "logger=none",
        f"trainer.max_steps={steps}",
        "trainer.accelerator=cpu",
        "+trainer.enable_progress_bar=false",
        f"checkpoint_every={steps}",
        "image_every=0",
    ]
    return train(compose_config([*quiet, *overrides], run_dir=run_dir))

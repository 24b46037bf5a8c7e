"""lods.runs: a run directory read back (config, metrics, images, checkpoint)."""

import json

import numpy as np
import pytest
from PIL import Image

from lods import runs, training


def test_missing_files_are_named(tmp_path):
    for read, name in ((runs.read_config, "config.yaml"), (runs.read_metrics, "metrics.json")):
        with pytest.raises(runs.RunDirectoryError, match=rf"'{tmp_path}' has no {name}: is it a lods run directory\?"):
            read(tmp_path)
    with pytest.raises(runs.RunDirectoryError, match="has no config.yaml"):
        runs.load_system(tmp_path)
    assert runs.last_checkpoint(tmp_path) is None
    assert training.RunDirectoryError is runs.RunDirectoryError  # one error, raised by training and by readers


def test_reads_what_training_writes(tmp_path):
    (tmp_path / "config.yaml").write_text("prompt: a red cube\nseed: 3\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 2, "model/random_weights": True}))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert runs.read_config(tmp_path).seed == 3 and runs.read_metrics(tmp_path)["model/random_weights"] is True
    assert runs.last_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"


def test_final_images_in_index_order(tmp_path):
    (tmp_path / "images").mkdir()
    for i in (0, 2, 10):
        Image.fromarray(np.full((4, 6, 3), i * 20, dtype=np.uint8)).save(tmp_path / "images" / f"final_{i}.png")
    images = runs.final_images(tmp_path)
    assert images.shape == (3, 3, 4, 6)
    assert [round(float(x) * 255) for x in images[:, 0, 0, 0]] == [0, 40, 200]
    with pytest.raises(FileNotFoundError, match="no images/final_"):
        runs.final_images(tmp_path / "images")

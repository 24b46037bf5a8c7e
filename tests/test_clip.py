"""CLIP score / CLIP-IQA (lods.eval.clip) against a tiny random CLIP saved to a temporary folder."""

import json
import math
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lods.eval import clip
from lods.runs import final_images

KEYS = {"clip/score", "clip/iqa_quality", "clip/iqa_natural"}


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for bytes (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIP (text and vision towers of 2 layers, width 32) with a bytes-only BPE tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor  # transformers 5: PIL backend
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor  # transformers 4: the slow one

    path = tmp_path_factory.mktemp("tiny-clip")
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    ids = tokenizer("a red cube").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == [
        *("<|startoftext|>", "a</w>", "r", "e", "d</w>", "c", "u", "b", "e</w>", "<|endoftext|>")
    ]

    special = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]}
    text = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, **special)
    text.update(intermediate_size=37, max_position_embeddings=77, pad_token_id=vocab["<|endoftext|>"])
    vision = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    image_processor = ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    model.save_pretrained(path)
    return str(path)


@pytest.fixture
def images():
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_metrics_keys_and_ranges(tiny_clip, images):
    metrics, reason = clip.clip_metrics(images, "a red cube", tiny_clip)
    assert reason is None and set(metrics) == KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert 0 <= metrics["clip/score"] <= 100
    assert all(0 <= metrics[k] <= 1 for k in KEYS - {"clip/score"})
    assert "torchvision" not in sys.modules


def test_deterministic_and_prompt_sensitive(tiny_clip, images):
    first, _ = clip.clip_metrics(images, "a red cube", tiny_clip)
    assert clip.clip_metrics(images.clone(), "a red cube", tiny_clip)[0] == first
    other, _ = clip.clip_metrics(images, "a blue sphere on grass", tiny_clip)
    assert other["clip/score"] != first["clip/score"]


def test_processor_sees_the_images(tiny_clip):
    """The uint8 pixels handed to torchmetrics come out of the processor as the images (no double 1/255)."""
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # the crop size: no resize
    _, processor = clip.load_clip(tiny_clip)
    pixels = clip._pixels(images)
    assert (pixels.float() / 255 - images).abs().max() <= 0.5 / 255 + 1e-6  # rounding to uint8, nothing more
    pixel_values = processor(images=list(pixels), return_tensors="pt")["pixel_values"]
    mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
    # (p / 255 - mean) / std * std + mean is p / 255 up to a few float32 roundings of values below ~2.2:
    # under 1e-6, i.e. 3e-4 in 0-255 units; a double 1/255 would be off by up to 254.
    torch.testing.assert_close((pixel_values * std + mean) * 255, pixels.float(), rtol=0, atol=1e-3)


def test_single_iqa_prompt(tiny_clip, images):
    metrics, _ = clip.clip_metrics(images[:1], "a red cube", tiny_clip, iqa_prompts=("sharpness",))
    assert set(metrics) == {"clip/score", "clip/iqa_sharpness"}


def test_unavailable_returns_reason(tiny_clip, tmp_path, images):
    assert clip.clip_metrics(images, "a red cube", None) == (None, clip.clip_metrics(images, "x", "")[1])
    assert "eval.clip=null" in clip.clip_metrics(images, "a red cube", None)[1]
    missing = str(tmp_path / "no-such-clip")
    metrics, reason = clip.clip_metrics(images, "a red cube", missing)
    assert metrics is None and missing in reason and "eval.clip=" in reason
    (tmp_path / "empty").mkdir()  # exists but holds no checkpoint
    metrics, reason = clip.clip_metrics(images, "a red cube", str(tmp_path / "empty"))
    assert metrics is None and str(tmp_path / "empty") in reason
    # a checkpoint without vision weights: transformers would load it with a random vision tower
    model, _ = clip.load_clip(tiny_clip)
    text_only = {k: v for k, v in model.state_dict().items() if not k.startswith("vision_model.")}
    model.save_pretrained(tmp_path / "text-only", state_dict=text_only)
    with pytest.raises(clip.ClipUnavailable, match="not a CLIP checkpoint"):
        clip.load_clip(str(tmp_path / "text-only"))
    with pytest.raises(clip.ClipUnavailable, match="no-such-clip"):
        clip.load_clip(missing)


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 4, 64, 64), (2, 1, 8, 8)])
def test_bad_shape_raises(tiny_clip, shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        clip.clip_metrics(torch.rand(shape), "a red cube", tiny_clip)


def test_out_of_range_raises(tiny_clip, images):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clip.clip_metrics(images * 255, "a red cube", tiny_clip)


def test_cli(tiny_clip, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "config.yaml").write_text("prompt: a red cube\nseed: 0\n")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "images" / f"final_{i}.png")
    assert clip.main([str(tmp_path), "--clip", tiny_clip]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == KEYS
    assert printed == clip.clip_metrics(final_images(tmp_path), "a red cube", tiny_clip)[0]
    assert clip.main([str(tmp_path), "--clip", str(tmp_path / "nothing")]) == 1
    assert "nothing" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_reports_clip_metrics(tiny_clip, tmp_path):
    """eval.clip=<folder> adds the CLIP metrics of the final images to metrics.json."""
    from lods.training import train

    from .helpers import make_config

    quiet = ["model=tiny", "logger=none", "trainer.max_steps=2", "checkpoint_every=2", "image_every=0"]
    metrics = train(make_config([*quiet, f"eval.clip={tiny_clip}"], run_dir=tmp_path / "run"))
    assert KEYS <= set(metrics) and 0 <= metrics["clip/score"] <= 100
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["clip/score"] == metrics["clip/score"]
    plain = train(make_config(quiet, run_dir=tmp_path / "plain"))  # eval.clip=null: skipped, not an error
    assert not KEYS & set(plain)

"""open_clip metrics (lods.eval.clip): CLIP similarity and DreamFusion's CLIP R-precision.

open_clip is an optional extra (it needs a torchvision built for the installed torch): where it does not import,
the metrics are skipped with the import error as the reason, and the tests of the metric path are skipped.
``make gpu-check`` runs this file on a CUDA machine where it imports.
"""

import json

import pytest
import torch

from lods.eval import clip

UNAVAILABLE = clip.open_clip_unavailable()
needs_open_clip = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"open_clip: {UNAVAILABLE}")
CAPTIONS = ["a red cube", "a blue sphere on the grass", "a green cone next to a wall", "a yellow torus"]


def test_r_precision_counts_the_images_whose_caption_ranks_first():
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    images = torch.tensor([[2.0, 0.1, 0.0], [0.9, 1.0, 0.0], [0.1, 0.0, 5.0], [3.0, 0.0, 2.9]])
    assert clip.r_precision(images, text, true_index=0) == 0.5  # images 0 and 3 retrieve caption 0
    assert clip.r_precision(images, text, true_index=2) == 0.25
    assert clip.r_precision(images * 100, text * 0.01, true_index=0) == 0.5  # scale-free (cosine)


@pytest.mark.skipif(UNAVAILABLE is None, reason="open_clip imports here")
def test_without_open_clip_the_metrics_are_skipped_and_say_why():
    """The reason names open_clip, its import error and the extra that installs it; nothing raises."""
    images = torch.rand(2, 3, 32, 32)
    metrics, reason = clip.open_clip_metrics(images, "a red cube", "ViT-B-32:/nowhere/weights.bin", CAPTIONS)
    assert metrics is None
    assert reason.startswith("open_clip is not importable (") and reason == UNAVAILABLE
    assert "Error" in reason.split("(", 1)[1]  # the exception's type, e.g. ModuleNotFoundError or RuntimeError
    assert "pip install -e '.[clip]'" in reason and "eval.open_clip=" in reason
    with pytest.raises(clip.ClipUnavailable, match="open_clip is not importable"):
        clip.load_open_clip("ViT-B-32:/nowhere/weights.bin")


def test_no_spec_is_a_reason_not_an_error():
    metrics, reason = clip.open_clip_metrics(torch.rand(1, 3, 8, 8), "a red cube", None)
    assert metrics is None and "eval.open_clip=null" in reason


# --------------------------------------------------------------------------- the metric path, with open_clip
TINY = {  # a CLIP of 2 + 2 layers, width 32, built in code (no weights exist for it anywhere)
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """'lods-tiny:<file>': a random tiny architecture registered with open_clip, its weights saved to a file."""
    import open_clip

    folder = tmp_path_factory.mktemp("open-clip")
    (folder / "lods-tiny.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / "lods-tiny.json")
    torch.manual_seed(0)
    model = open_clip.create_model("lods-tiny")
    torch.save(model.state_dict(), folder / "lods-tiny.pt")
    return f"lods-tiny:{folder / 'lods-tiny.pt'}"


def _features(spec, images, captions):
    """Image and caption features computed with open_clip's own model, preprocessing and tokenizer."""
    from PIL import Image

    model, tokenizer, preprocess = clip.load_open_clip(spec)
    pixels = clip._pixels(images)
    batch = torch.stack([preprocess(Image.fromarray(p.permute(1, 2, 0).numpy())) for p in pixels])
    with torch.no_grad():
        return model.encode_image(batch).float(), model.encode_text(tokenizer(captions)).float()


@needs_open_clip
def test_r_precision_of_an_image_against_its_caption_and_others(tiny_open_clip):
    """The caption an image is closest to scores R@1 = 1 against the others; any other caption scores 0."""
    image = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(0))  # resized and cropped to 32
    image_features, text_features = _features(tiny_open_clip, image, CAPTIONS)
    similarity = torch.nn.functional.cosine_similarity(image_features, text_features)
    matched = int(similarity.argmax())
    metrics, reason = clip.open_clip_metrics(image, CAPTIONS[matched], tiny_open_clip, CAPTIONS)
    assert reason is None
    assert metrics["open_clip/r_precision"] == 1.0 and metrics["open_clip/r_precision_captions"] == len(CAPTIONS)
    assert metrics["open_clip/score"] == pytest.approx(100 * max(float(similarity[matched]), 0.0), abs=1e-4)
    other = (matched + 1) % len(CAPTIONS)
    metrics, _ = clip.open_clip_metrics(image, CAPTIONS[other], tiny_open_clip, CAPTIONS)
    assert metrics["open_clip/r_precision"] == 0.0
    metrics, _ = clip.open_clip_metrics(image, CAPTIONS[matched], tiny_open_clip)  # no caption set: no R-precision
    assert set(metrics) == {"open_clip/score"}


@needs_open_clip
def test_bad_specs_are_named(tiny_open_clip):
    images = torch.rand(1, 3, 32, 32)
    metrics, reason = clip.open_clip_metrics(images, "a red cube", "No-Such-Arch:/x.pt")
    assert metrics is None and "No-Such-Arch" in reason and "ViT-B-32" in reason  # the allowed ones
    metrics, reason = clip.open_clip_metrics(images, "a red cube", "lods-tiny")
    assert metrics is None and "names no weights" in reason
    metrics, reason = clip.open_clip_metrics(images, "a red cube", "lods-tiny:no_such_tag")
    assert metrics is None and "no_such_tag" in reason
    metrics, reason = clip.open_clip_metrics(images, "a red cube", "ViT-B-32:laion2b_s34b_b79k")
    assert metrics is None or "open_clip/score" in metrics  # cached weights load; else the reason says where
    if metrics is None:
        assert "nothing is downloaded" in reason

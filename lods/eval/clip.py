"""CLIP score and CLIP-IQA of generated images, through torchmetrics.

``clip/score`` is torchmetrics' CLIPScore of each image against the prompt (0-100, mean over the
images); ``clip/iqa_<name>`` is CLIP-IQA's probability of the positive side of an antonym pair
(``quality``: "Good photo." vs "Bad photo.", ``natural``: "Natural photo." vs "Synthetic photo."),
mean over the images, in [0, 1]. Scores of a 3D run are taken on its evaluation-orbit renders.

Nothing is downloaded: the weights are a local folder in ``save_pretrained`` layout or a hub id
already in the local Hugging Face cache. With none configured (``eval.clip=null``), or weights that
cannot be loaded, the metrics are skipped with a reason instead of failing the run. They run on the
CPU, leaving the GPU to the run (8 images through ViT-B/16: about 4 s on one thread).

    hf download openai/clip-vit-base-patch16 --local-dir clip-vit-base-patch16   # with internet
    python -m lods.eval.clip outputs/<date>/<run> --clip clip-vit-base-patch16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from omegaconf import OmegaConf
from PIL import Image
from torchmetrics.multimodal import CLIPImageQualityAssessment, CLIPScore

FIX = (
    "download openai/clip-vit-base-patch16 on a machine with internet "
    "(`hf download openai/clip-vit-base-patch16 --local-dir clip-vit-base-patch16`), "
    "copy the folder here and pass eval.clip=/path/to/clip-vit-base-patch16"
)
_LOADED: dict[str, tuple[transformers.CLIPModel, transformers.CLIPProcessor]] = {}


class ClipUnavailable(RuntimeError):
    """The CLIP weights named by ``eval.clip`` cannot be loaded (offline, missing, not CLIP)."""


def load_clip(source: str) -> tuple[transformers.CLIPModel, transformers.CLIPProcessor]:
    """A CLIP model (eval mode) and its processor from a local folder or a locally cached hub id."""
    path = Path(source).expanduser()
    if not path.exists() and (path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1):
        raise ClipUnavailable(f"CLIP weights folder '{source}' does not exist; {FIX}")
    where = str(path) if path.exists() else source
    # The PIL image processor: the torchvision ("fast") one needs torchvision, which must not be imported here.
    backend = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    try:
        model, info = transformers.CLIPModel.from_pretrained(where, local_files_only=True, output_loading_info=True)
        if info["missing_keys"]:  # transformers would fill these with random weights and only log it
            raise ClipUnavailable(f"not a CLIP checkpoint: {len(info['missing_keys'])} CLIPModel weights missing")
        processor = transformers.CLIPProcessor.from_pretrained(where, local_files_only=True, **backend)
    except Exception as error:  # OSError, ValueError, KeyError, ...: whatever the folder or cache lacks
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ClipUnavailable(
            f"cannot load CLIP weights '{source}' ({type(error).__name__}: {first}); {FIX}"
        ) from error
    return model.eval(), processor


class _Embeddings(torch.nn.Module):
    """CLIPModel whose get_*_features return the embeddings: transformers 5 returns an output object holding
    them in ``pooler_output``, where torchmetrics 1.9 expects the tensor (and fails on ``.norm``)."""

    def __init__(self, model: transformers.CLIPModel):
        super().__init__()
        self.model, self.config = model, model.config  # torchmetrics reads config.text_config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        out = self.model.get_image_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        out = self.model.get_text_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] floats in [0, 1] -> uint8 on the CPU, checked."""
    shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"CLIP metrics need images [N, 3, H, W] (N >= 1), got {shape}")
    images = images.detach().float().cpu()
    if not images.isfinite().all() or images.min() < -1e-3 or images.max() > 1 + 1e-3:
        raise ValueError(f"CLIP metrics need images in [0, 1], got {shape} in [{images.min():.3g}, {images.max():.3g}]")
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def clip_metrics(
    images: torch.Tensor,
    prompt: str,
    source: str | None,
    iqa_prompts: tuple[str | tuple[str, str], ...] = ("quality", "natural"),
) -> tuple[dict[str, float] | None, str | None]:
    """``({"clip/score": ..., "clip/iqa_<name>": ...}, None)``, or ``(None, reason)`` without CLIP weights."""
    pixels = _pixels(images)
    if not source:
        return None, f"no CLIP weights configured (eval.clip=null); to score with CLIP, {FIX}"
    if source not in _LOADED:
        try:
            _LOADED[source] = load_clip(source)
        except ClipUnavailable as error:
            return None, str(error)
    model, processor = _LOADED[source]
    pair = (_Embeddings(model), processor)
    # Images go in as uint8. The processor (transformers' PIL backend) resizes through a uint8 PIL image and
    # then applies its own do_rescale (x 1/255): uint8 is its native input. Floats in [0, 1] would be divided
    # by 255 twice (near-black images), and non-integer floats in [0, 255] are refused by the PIL conversion.
    # CLIP-IQA first divides by data_range, which is meant for piq's own model; with a transformers processor
    # data_range=1 keeps the 0-255 integer values that the processor expects.
    with torch.inference_mode():
        score = CLIPScore(model_name_or_path=lambda: pair)
        score.update(list(pixels), [prompt] * len(pixels))
        iqa = CLIPImageQualityAssessment(model_name_or_path=lambda: pair, data_range=1.0, prompts=tuple(iqa_prompts))
        iqa.update(pixels)
        probs = iqa.compute()
        if isinstance(probs, torch.Tensor):  # a single prompt comes back as a bare tensor
            probs = {iqa.prompts_name[0]: probs}
        metrics = {"clip/score": float(score.compute())}
        metrics.update({f"clip/iqa_{name}": float(p.float().mean()) for name, p in probs.items()})
    return metrics, None


def read_run(run_dir: Path) -> torch.Tensor:
    """``images/final_*.png`` of a run as [N, 3, H, W] floats in [0, 1]."""
    files = sorted((run_dir / "images").glob("final_*.png"), key=lambda f: int(f.stem.split("_")[1]))
    if not files:
        raise FileNotFoundError(f"no images/final_*.png in {run_dir}")
    arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CLIP score and CLIP-IQA of a run's final images.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--clip", required=True, help="CLIP folder (save_pretrained layout) or a cached hub id")
    parser.add_argument("--prompt", help="default: `prompt` in <run_dir>/config.yaml")
    args = parser.parse_args(argv)
    prompt = args.prompt or OmegaConf.load(args.run_dir / "config.yaml").prompt
    metrics, reason = clip_metrics(read_run(args.run_dir), prompt, args.clip)
    if metrics is None:
        print(f"CLIP metrics unavailable: {reason}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CLIP score and CLIP-IQA of generated images, through torchmetrics; CLIP similarity and CLIP R-precision
through open_clip.

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

``open_clip/score`` (100 x max(cosine, 0), mean over the images) and ``open_clip/r_precision`` (DreamFusion's
CLIP R-precision, R@1: how often the prompt is the closest of a caption set to an image) use any architecture
open_clip knows (``eval.open_clip=ViT-H-14:/path/open_clip_pytorch_model.bin``; the captions:
``eval.r_precision_captions``, by default the run's prompt list). open_clip is an optional extra (``.[clip]``):
it needs a torchvision that matches torch; without it these metrics are skipped with the import error.

    python -m lods.eval.clip outputs/<date>/<run> --open-clip ViT-B-32:/models/vit-b-32.bin --captions t3bench_single
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import transformers
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


# ------------------------------------------------------------------------------------------------ open_clip
# CLIP similarity and DreamFusion's CLIP R-precision through open_clip (``pip install -e ".[clip]"``), for the
# OpenCLIP models (ViT-H/14, ViT-bigG/14, ...) that transformers' CLIPModel does not cover. ``eval.open_clip`` is
# "<architecture>:<weights>", e.g. "ViT-H-14:/models/open_clip_pytorch_model.bin" (a local file), or
# "ViT-B-32:laion2b_s34b_b79k" (a pretrained tag whose file is already in the local Hugging Face or open_clip
# cache). Nothing is downloaded: a tag that is not cached is skipped with the reason.
OPEN_CLIP_FIX = (
    "install the `clip` extra (pip install -e '.[clip]': open_clip_torch and the torchvision that matches your "
    "torch) and give eval.open_clip=<architecture>:<weights file>"
)
_OPEN_CLIP: dict[str, tuple] = {}


def open_clip_unavailable() -> str | None:
    """Why open_clip cannot be used here (its import error), or None when it imports."""
    try:
        import open_clip  # noqa: F401
    except Exception as error:  # ImportError, or torchvision failing against this torch (RuntimeError, OSError)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"open_clip is not importable ({type(error).__name__}: {first}); {OPEN_CLIP_FIX}"
    return None


def _cached_open_clip_weights(open_clip, architecture: str, tag: str) -> str:
    """The local file of a pretrained tag, from the Hugging Face cache or open_clip's own (~/.cache/clip)."""
    config = open_clip.get_pretrained_cfg(architecture, tag)
    if not config:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(architecture)) or "none"
        raise ClipUnavailable(
            f"open_clip weights '{tag}' are neither a file nor a pretrained tag of {architecture} (its tags: {tags})"
        )
    if config.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo = config["hf_hub"].rstrip("/")
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            path = try_to_load_from_cache(repo, name)
            if isinstance(path, str):
                return path
        where = f"the Hugging Face cache ({repo})"
    else:
        path = Path("~/.cache/clip").expanduser() / Path(config.get("url", "")).name
        if path.is_file():
            return str(path)
        where = f"'{path}'"
    raise ClipUnavailable(f"open_clip weights {architecture}:{tag} are not in {where}; nothing is downloaded")


def load_open_clip(spec: str, device: str = "cpu") -> tuple:
    """(model in eval mode, tokenizer, preprocess) of ``spec`` = "<architecture>:<weights file or cached tag>"."""
    reason = open_clip_unavailable()
    if reason:
        raise ClipUnavailable(reason)
    import open_clip

    architecture, _, weights = spec.partition(":")
    if architecture not in open_clip.list_models():
        raise ClipUnavailable(
            f"unknown open_clip architecture '{architecture}' in eval.open_clip='{spec}'; choose one of: "
            f"{', '.join(open_clip.list_models())}"
        )
    if not weights:
        raise ClipUnavailable(f"eval.open_clip='{spec}' names no weights; {OPEN_CLIP_FIX}")
    path = Path(weights).expanduser()
    checkpoint = str(path) if path.is_file() else _cached_open_clip_weights(open_clip, architecture, weights)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=checkpoint, device=device)
    except Exception as error:  # a file that is not this architecture's checkpoint
        raise ClipUnavailable(f"cannot load open_clip {architecture} from '{checkpoint}': {error}") from error
    return model.eval(), open_clip.get_tokenizer(architecture), preprocess


def r_precision(image_features: torch.Tensor, text_features: torch.Tensor, true_index: int = 0) -> float:
    """DreamFusion's CLIP R-precision (R@1): the fraction of images whose most similar caption is the true one
    (row ``true_index`` of ``text_features``) among all the captions. Features need not be normalised."""
    image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
    text_features = torch.nn.functional.normalize(text_features.float(), dim=-1)
    retrieved = (image_features @ text_features.T).argmax(dim=-1)
    return float((retrieved == true_index).float().mean())


def open_clip_metrics(
    images: torch.Tensor, prompt: str, spec: str | None, captions: list[str] | tuple[str, ...] = (), device="cpu"
) -> tuple[dict[str, float] | None, str | None]:
    """``({"open_clip/score", "open_clip/r_precision"?}, None)`` or ``(None, reason)``.

    ``open_clip/score``: 100 x max(cosine(image, prompt), 0), the mean over the images (CLIPScore's scale).
    ``open_clip/r_precision``: :func:`r_precision` of the prompt among itself and ``captions`` (the other
    captions of a set, e.g. the run's prompt list; the prompt itself is left out of them); only with captions.
    """
    pixels = _pixels(images)
    if not spec:
        return None, f"no open_clip model configured (eval.open_clip=null); {OPEN_CLIP_FIX}"
    if spec not in _OPEN_CLIP:
        try:
            _OPEN_CLIP[spec] = load_open_clip(spec, device)
        except ClipUnavailable as error:
            return None, str(error)
    model, tokenizer, preprocess = _OPEN_CLIP[spec]
    from PIL import Image

    others = [c for c in dict.fromkeys(captions) if c != prompt]
    batch = torch.stack([preprocess(Image.fromarray(p.permute(1, 2, 0).numpy())) for p in pixels])
    with torch.inference_mode():
        image_features = model.encode_image(batch.to(device)).float()
        text_features = model.encode_text(tokenizer([prompt, *others]).to(device)).float()
    cosine = torch.nn.functional.cosine_similarity(image_features, text_features[:1], dim=-1)
    metrics = {"open_clip/score": float(100 * cosine.clamp(min=0).mean())}
    if others:
        metrics["open_clip/r_precision"] = r_precision(image_features, text_features, true_index=0)
        metrics["open_clip/r_precision_captions"] = float(len(others) + 1)
    return metrics, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="CLIP metrics of a run's final images (transformers and/or open_clip)."
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--clip", help="CLIP folder (save_pretrained layout) or a cached hub id: clip/score, clip/iqa_*"
    )
    parser.add_argument("--open-clip", help="<architecture>:<weights file or cached tag>: open_clip/score, r_precision")
    parser.add_argument("--captions", help="R-precision captions: a prompt list name or .txt (default: the run's)")
    parser.add_argument("--prompt", help="default: `prompt` in <run_dir>/config.yaml")
    args = parser.parse_args(argv)
    if not args.clip and not args.open_clip:
        parser.error("give --clip <folder> and/or --open-clip <architecture>:<weights>")
    from lods.prompts import prompt_list
    from lods.runs import final_images, read_config

    config = read_config(args.run_dir) if not args.prompt or (args.open_clip and not args.captions) else None
    prompt = args.prompt or config.prompt
    images = final_images(args.run_dir)

    def captions() -> list[str]:
        name = args.captions or (config.get("prompt_list") if config is not None else None)
        return prompt_list(name) if name else []

    out, failed = {}, False
    for name, source, measure in (
        ("CLIP", args.clip, lambda: clip_metrics(images, prompt, args.clip)),
        ("open_clip", args.open_clip, lambda: open_clip_metrics(images, prompt, args.open_clip, captions())),
    ):
        if source:
            metrics, reason = measure()
            if metrics is None:
                print(f"{name} metrics unavailable: {reason}", file=sys.stderr)
                failed = True
            out.update(metrics or {})
    print(json.dumps(out, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Download here (where PyPI is reachable) the wheels that `scripts/gpu_check.sh` installs on a bare CUDA machine
# with no internet: Python 3.12, x86-64 manylinux, into .whl/ (ignored by git; about 25 MiB).
#
# The machine is expected to hold CUDA torch, torchvision, lightning, transformers, peft, torchmetrics, timm,
# jaxtyping, scikit-image, rich, huggingface-hub, ninja and nvcc; what lods needs beyond those is listed here,
# each pinned to the version this project is tested with. No dependencies are resolved (--no-deps): the list is
# the closure of what `lods.eval.fullscale`, tests/backbones/test_rasterize.py and tests/test_open_clip.py import.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
mkdir -p "$DEST"
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_5_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
PACKAGES=(
    diffusers==0.42.1            # U-Net, VAE, schedulers
    hydra-core==1.3.8 omegaconf==2.3.1   # configs (antlr4-python3-runtime: built below, PyPI has no wheel)
    gsplat==1.4.0                # pure Python on PyPI: compiles its CUDA extension on first use (JIT, nvcc + ninja)
    nerfstudio==1.1.5            # NeRF fields and samplers (installed without its own pins)
    nerfacc==0.5.3               # imported by nerfstudio's samplers (its CUDA ops are lazy: never built here)
    viser==1.1.1 msgspec==0.23.0 websockets==16.1.1 zstandard==0.25.0   # imported by nerfstudio.data.scene_box
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0                    # the `clip` extra (open_clip metrics)
)
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "${PACKAGES[@]}"
# omegaconf's parser runtime is an sdist only; it is pure Python, so a wheel built here installs anywhere.
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DEST" antlr4-python3-runtime==4.9.3
ls -1 "$DEST"
du -sh "$DEST"

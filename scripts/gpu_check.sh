#!/usr/bin/env bash
# The GPU check (`make gpu-check`): what only a CUDA machine can test, from a bare one with no internet, in about
# 8 minutes. Run from anywhere in the repository; it needs the wheels of `make gpu-wheels` in .whl/ (made where
# PyPI is reachable) unless the machine already has lods' dependencies.
#
#   1. install the carried wheels into $GPU_CHECK_SITE (not into the machine's site-packages)
#   2. compile gsplat's CUDA extension (gsplat 1.4.0 ships no prebuilt binary on PyPI: JIT with nvcc and ninja,
#      for this GPU's architecture only) and time it
#   3. pytest -m cuda tests/backbones/test_rasterize.py (gsplat against the project's CPU rasterizer) and
#      tests/test_open_clip.py (the open_clip metric path on a tiny open_clip model built in code)
#   4. python -m lods.eval.fullscale --device cuda --dtype fp16: every prior on gaussians and nerf, SD 2.1-base with
#      random weights, in one process (CUDA peaks are reset per configuration)
#
# Results, to commit, in $GPU_CHECK_DIR (default bench/gpu_check/): summary.md (what ran, how long, pass or fail),
# log.txt (environment, wheel install, gsplat build), pytest.txt, results.json and table.md (the full-scale table),
# fullscale.log (its whole output).
# Exit status: 0 when every step passed. Settings: GPU_CHECK_BACKBONES (default "gaussians nerf"; add image or
# nerf512), GPU_CHECK_STEPS (3), GPU_CHECK_BUDGET (seconds for the whole check, default 480).
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${GPU_CHECK_DIR:-bench/gpu_check}
WHEELS=${WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/lods-gpu-check-site}
PYTHON=${PYTHON:-python3}
BACKBONES=${GPU_CHECK_BACKBONES:-gaussians nerf}
STEPS=${GPU_CHECK_STEPS:-3}
BUDGET=${GPU_CHECK_BUDGET:-480}
STARTED=$(date +%s)
mkdir -p "$DIR"
LOG="$DIR/log.txt"
SUMMARY="$DIR/summary.md"
: >"$LOG"
printf '# GPU check, %s\n\n| step | result | seconds |\n|---|---|---|\n' "$(date -u +%Y-%m-%dT%H:%MZ)" >"$SUMMARY"
FAILED=0

say() { echo "[gpu-check +$(($(date +%s) - STARTED))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - STARTED))); }
record() {  # record <step> <exit status> <started at>
    local result=passed
    [ "$2" -eq 0 ] || { result="FAILED (exit $2)"; FAILED=1; }
    [ "$2" -eq 124 ] && result="TIMED OUT"
    echo "| $1 | $result | $(($(date +%s) - $3)) |" >>"$SUMMARY"
    say "$1: $result"
}

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false

# 1. wheels ---------------------------------------------------------------------------------------------------
t=$(date +%s)
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl >>"$LOG" 2>&1
    record "install $(ls "$WHEELS"/*.whl | wc -l) wheels" $? "$t"
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    say "no wheels in $WHEELS/ (run \`make gpu-wheels\` where PyPI is reachable); using the installed packages"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" - >>"$LOG" 2>&1 <<'EOF'
import importlib.metadata as md, platform, subprocess, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
cuda = torch.cuda.is_available()
print("device", torch.cuda.get_device_name() if cuda else "NONE", torch.cuda.get_device_capability() if cuda else "")
names = ("diffusers", "transformers", "lightning", "peft", "hydra-core", "gsplat", "nerfstudio", "open_clip_torch")
for name in (*names, "torchvision"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
print(subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1:])
EOF
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "no CUDA device: nothing to check here"
    echo "| CUDA device | MISSING | 0 |" >>"$SUMMARY"
    exit 1
fi
ARCH=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$ARCH}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

# 2. gsplat's CUDA extension --------------------------------------------------------------------------------------
t=$(date +%s)
say "compiling gsplat's CUDA extension (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS)"
timeout 300 "$PYTHON" -c "
from gsplat.cuda._backend import _C
assert _C is not None, 'gsplat built no CUDA extension (no CUDA toolkit found?)'
print('gsplat extension:', _C.__file__)" >>"$LOG" 2>&1
record "gsplat CUDA extension (JIT build)" $? "$t"

# 3. tests --------------------------------------------------------------------------------------------------------
t=$(date +%s)
timeout 180 "$PYTHON" -m pytest -q -p no:cacheprovider -rs -s -m cuda tests/backbones/test_rasterize.py \
    >"$DIR/pytest.txt" 2>&1
record "pytest -m cuda tests/backbones/test_rasterize.py" $? "$t"
t=$(date +%s)
timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/test_open_clip.py >>"$DIR/pytest.txt" 2>&1
record "pytest tests/test_open_clip.py" $? "$t"
if grep -q "open_clip is not importable" "$DIR/pytest.txt"; then
    say "open_clip did not import: its metric tests were SKIPPED (see pytest.txt)"
    FAILED=1
fi

# 4. full scale ---------------------------------------------------------------------------------------------------
t=$(date +%s)
remaining=$(left)
if [ "$remaining" -lt 60 ]; then
    say "only ${remaining}s of the budget left: full-scale table skipped"
    echo "| fullscale | SKIPPED (budget) | 0 |" >>"$SUMMARY"
    FAILED=1
else
    # shellcheck disable=SC2086
    timeout "$remaining" "$PYTHON" -m lods.eval.fullscale --device cuda --dtype fp16 --isolation none \
        --backbones $BACKBONES --steps "$STEPS" --out "$DIR" 2>&1 | tee "$DIR/fullscale.log" |
        grep --line-buffered '^\[fullscale\]' | tee -a "$LOG"
    code=${PIPESTATUS[0]}
    record "fullscale, cuda fp16, $BACKBONES, $STEPS steps" "$code" "$t"
    if grep -q '"status": "\(failed\|out of memory\)' "$DIR/results.json" 2>/dev/null; then
        say "some full-scale configurations failed: see the status column of $DIR/table.md"
        FAILED=1
    fi
fi

{
    echo
    echo "Budget ${BUDGET}s, used $(($(date +%s) - STARTED))s. Full-scale table: table.md (rows: results.json)."
    [ -f "$DIR/table.md" ] && { echo; sed -n '3,$p' "$DIR/table.md"; }
} >>"$SUMMARY"
say "done: $([ $FAILED -eq 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED') (summary: $SUMMARY)"
exit $FAILED

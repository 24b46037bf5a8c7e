PYTHON ?= python3
PIP := $(PYTHON) -m pip
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install test test-fast lint format train bench claims bench-mini bench-standard bench-full bench-perf bench-fullscale gpu-wheels gpu-check toyworld-prior toyworld-card clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install:  ## install lods and its dev tools (CPU torch kept by constraints.txt)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev,sweeps]"
	$(PIP) install -c constraints.txt --no-deps nerfstudio==1.1.5  # fields/samplers only; its own deps are in pyproject.toml

test:  ## the full test suite (what CI runs)
	$(PYTHON) -m pytest -q

test-fast:  ## unit tests only, skipping end-to-end train.py runs
	$(PYTHON) -m pytest -q -m "not slow"

lint:  ## static checks
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:  ## rewrite the code in the house style
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

train:  ## one default run (override with ARGS="prior=lods_lora prompt='a red cube'")
	$(PYTHON) train.py $(ARGS)

bench-fullscale:  ## every prior x backbone on full-size SD 2.1-base (random weights): s/step + peak memory -> bench/fullscale/ (ARGS="--device cuda")
	$(PYTHON) -m lods.eval.fullscale $(ARGS)

gpu-wheels:  ## download (PyPI) the wheels gpu-check installs on a CUDA machine without internet -> .whl/ (~25 MiB)
	PYTHON=$(PYTHON) bash scripts/gpu_wheels.sh

gpu-check:  ## on a CUDA machine (~8 min): gsplat build, pytest -m cuda, open_clip tests, fullscale fp16 -> bench/gpu_check/
	PYTHON=$(PYTHON) bash scripts/gpu_check.sh

PRIOR_FIRST ?= outputs/toyworld_prior_first
toyworld-prior:  ## retrain the shipped toyworld prior (from scratch into PRIOR_FIRST, then on from it into lods/models/toyworld; ~3 h on 2 CPU cores; git keeps the old), then its card
	$(PYTHON) -m lods.toyworld.prior output=$(PRIOR_FIRST)
	$(PYTHON) -m lods.toyworld.prior init=$(PRIOR_FIRST) seed=1 data.num_scenes=4000 \
		'data.categories=[surroundings,surroundings,single,multiple]' unet.steps=2000 unet.lr=2e-4
	$(MAKE) toyworld-card

toyworld-card:  ## measure the shipped prior against ground truth and rewrite its model card
	$(PYTHON) -m lods.toyworld.card

bench: bench-standard bench-perf claims  ## the standard toyworld bench, the speed benchmark, the claims report (relaunchable)

bench-mini:  ## prompts x priors x backbones on toyworld -> bench/mini/{results.json,table.md,grid.png} (rerun continues)
	$(PYTHON) train.py -m sweep=bench_mini
	$(PYTHON) -m lods.bench bench/mini

STANDARD_LAUNCHER ?= lods_ray
bench-standard:  ## 24 prompts x 2 seeds x 5 priors on Gaussians, NeRF and 2D on 8 -> bench/standard/ (rerun continues)
	$(PYTHON) train.py -m sweep=bench_standard hydra/launcher=$(STANDARD_LAUNCHER)
	$(PYTHON) train.py -m sweep=bench_standard hydra/launcher=$(STANDARD_LAUNCHER) backbone=nerf 'prompt_index=range(0,8)'
	$(PYTHON) train.py -m sweep=bench_standard hydra/launcher=$(STANDARD_LAUNCHER) backbone=image 'prompt_index=range(0,8)'
	$(PYTHON) -m lods.bench bench/standard/runs --out bench/standard

bench-full:  ## the full bench (360 runs; for GPUs: ARGS="trainer=gpu hydra/launcher=lods_ray")
	$(PYTHON) train.py -m sweep=bench_full $(ARGS)
	$(PYTHON) -m lods.bench bench/full

bench-perf:  ## per-step time of every prior relative to SDS, split into render/encode/U-Net/backward/update, + peak memory
	$(PYTHON) -m lods.eval.prior_speed --steps 30 --json bench/perf/image.json
	$(PYTHON) -m lods.eval.prior_speed --steps 30 --backbone gaussians --json bench/perf/gaussians.json
	$(PYTHON) -m lods.eval.prior_speed --steps 30 --backbone nerf --json bench/perf/nerf.json

claims:  ## bench/claims.md: each claim of the seeds, its measurement here (bench, premise, fidelity, perf) and a verdict
	$(PYTHON) -m lods.eval.claims

clean:  ## remove caches (run outputs in outputs/ and multirun/ are kept)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

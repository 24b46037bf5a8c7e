"""Every prior on every backbone with a full-size Stable Diffusion: seconds per step and peak memory.

    python -m lods.eval.fullscale                                        # sd21_base, random weights, everything
    python -m lods.eval.fullscale --priors sds --backbones image --steps 2
    python -m lods.eval.fullscale --device cuda --dtype fp16 --backbones gaussians nerf nerf512

Each (prior, backbone) runs in a fresh subprocess -- the same quiet ``train()`` with ``profile=true`` as
``lods.eval.prior_speed`` -- so that its peak memory is its own (CPU: the process's resident-set high-water mark
from the start of the run, model build included; CUDA: the peak memory allocated by torch, and the allocator's
peak reservation beside it) and a configuration that fails or runs out of memory costs only its own row (on
the CPU each process gets an address-space limit, ``--memory-limit-gb``, 90% of RAM by default, so that it fails
instead of waking the OOM killer). ``--isolation none`` runs them all in this process instead: no start-up per
configuration, and still exact on CUDA (the peak is reset per configuration; what is allocated before it is
recorded), not on the CPU.
``--model`` defaults to ``sd21_base`` with random weights (:mod:`lods.diffusion.architectures`): the real
architecture and resolution, so time and memory are those of the real model while the images are noise.
``--weights pretrained`` measures real weights where they are on disk (``--override model.path=...``).

Backbones, at the render sizes of the presets in experiments/:
  image      2D latent at the model's resolution (512: a 4x64x64 latent), 1 particle; DDS on the editing task
  gaussians  3D Gaussians, 4 views of 512x512 per step (experiment=text_to_3d_gaussians)
  nerf       hash-grid NeRF (16 levels, 2^19 entries), 1 view of 64x64 per step: steps 0-5000 of
             experiment=text_to_3d_nerf (ProlificDreamer's first stage)
  nerf512    the same NeRF at 512x512: that preset's steps after 5000

Writes ``<out>/results.json`` (every row with its settings; a rerun into the same folder replaces the rows of
the same settings, prior and backbone and keeps the others) and ``<out>/table.md``, beside the SDI thesis's
Table 6.1 GPU memory where it has a figure (SDS 6.2 GB, VSD 47.9 GB, SDI 39.2 GB at the thesis's settings,
which are not these); each configuration's log goes to ``<out>/logs/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lods.config import CONF_DIR
from lods.eval.prior_speed import PRIORS, configuration, measure_one


@dataclass(frozen=True)
class Backbone:
    kind: str  # the backbone config group option
    overrides: tuple[str, ...]
    description: str


BACKBONES = {
    "image": Backbone("image", (), "2D latent at the model's resolution, 1 particle (DDS: editing)"),
    "gaussians": Backbone(
        "gaussians", ("experiment=text_to_3d_gaussians",), "3D Gaussians, 4 views of 512x512 (text_to_3d_gaussians)"
    ),
    "nerf": Backbone("nerf", ("experiment=text_to_3d_nerf",), "NeRF, 1 view of 64x64 (text_to_3d_nerf, steps < 5000)"),
    "nerf512": Backbone(
        "nerf",
        ("experiment=text_to_3d_nerf", "backbone.resolution_schedule=null", "backbone.resolution=512"),
        "NeRF, 1 view of 512x512 (text_to_3d_nerf, steps >= 5000)",
    ),
}
# The SDI thesis, Table 6.1: GPU memory of a text-to-3D run at the thesis's own settings (GB).
THESIS_TABLE_6_1_GB = {"sds": 6.2, "vsd": 47.9, "sdi": 39.2}
DEVICES = ("cpu", "cuda")
DTYPES = ("auto", "fp32", "fp16", "bf16")
SETTINGS = ("model", "weights", "device", "dtype")
ISOLATION = ("process", "none")


def models() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def _has_option(model: str, key: str) -> bool:
    return f"\n{key}:" in (CONF_DIR / "model" / f"{model}.yaml").read_text()


def overrides(model: str, weights: str, device: str, dtype: str, extra: list[str]) -> list[str]:
    """The Hydra overrides of a configuration's model and device (the backbone's and prior's come apart); a model
    without a weights or dtype option (tiny: float32, random) keeps its own."""
    out = [f"model={model}", f"model.device={device}"]
    out += [
        f"model.{key}={value}" for key, value in (("dtype", dtype), ("weights", weights)) if _has_option(model, key)
    ]
    return [*out, *extra]


def _check(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise SystemExit(f"unknown {name} '{value}'; choose from: {', '.join(allowed)}")


# ------------------------------------------------------------------------------------------------ one row
def _limit_memory(gigabytes: float) -> None:
    """Fail allocations beyond ``gigabytes`` of address space (MemoryError) instead of waking the OOM killer."""
    if gigabytes > 0:
        limit = int(gigabytes * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_worker(args: argparse.Namespace) -> int:
    """Measure one (prior, backbone) in this process and write its row to ``args.result``."""
    import torch

    _limit_memory(args.memory_limit_gb)
    backbone = BACKBONES[args.backbone]
    extra = [*backbone.overrides, *overrides(args.model, args.weights, args.device, args.dtype, args.override)]
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        row = measure_one(args.prior, args.steps, extra, backbone.kind, Path(tmp) / "run", accelerator)
    row["model_name"] = row.pop("model", None)  # "sd21_base (random weights)"; "model" is the conf option
    if args.device == "cuda":
        row["cuda_peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    Path(args.result).write_text(json.dumps(row, indent=2) + "\n")
    return 0


def measure(
    prior: str, backbone: str, settings: dict, steps: int, extra: list[str], out: Path, timeout: float | None
) -> dict:
    """One row: the configuration run in a fresh subprocess (its output in ``<out>/logs/``)."""
    row = {**settings, "prior": prior, "backbone": backbone, "steps": steps}
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{settings['model']}-{settings['device']}-{backbone}-{prior}.log"
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "row.json"
        command = [sys.executable, "-m", "lods.eval.fullscale", "--worker", "--result", str(result)]
        command += ["--priors", prior, "--backbones", backbone, "--steps", str(steps)]
        weights = "pretrained" if settings["weights"] == "built-in" else settings["weights"]
        command += ["--model", settings["model"], "--weights", weights]
        command += ["--device", settings["device"], "--dtype", settings["dtype"]]
        command += ["--memory-limit-gb", str(settings.get("memory_limit_gb", 0))]
        command += [f"--override={o}" for o in extra]
        started = time.perf_counter()
        with open(log_file, "w") as log:
            try:
                code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                code = None
        row["process_seconds"] = round(time.perf_counter() - started, 1)
        if code == 0 and result.is_file():
            row.update(json.loads(result.read_text()), status="ok")
            return row
    tail = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()][-1:] or [""]
    if code is None:
        row["status"] = f"timed out after {timeout:.0f} s"
    elif code < 0:
        row["status"] = f"killed by signal {-code} (out of memory?)"
    else:
        row["status"] = f"failed (exit {code}): {tail[0][:300]}"
    text = log_file.read_text(errors="replace")
    if "MemoryError" in text or "DefaultCPUAllocator: can't allocate" in text or "CUDA out of memory" in text:
        row["status"] = f"out of memory (limit {settings.get('memory_limit_gb', 0):g} GB): " + tail[0][:200]
    return row


def measure_in_process(prior: str, backbone: str, settings: dict, steps: int, extra: list[str]) -> dict:
    """One row measured in this process (``--isolation none``): no process start-up per configuration. Exact for
    CUDA (the peak allocated is reset per run and the last run's tensors are freed first; what is still allocated
    then is recorded beside it); on the CPU the resident-set peak also holds what earlier runs left in the heap."""
    import gc

    import torch

    row = {**settings, "prior": prior, "backbone": backbone, "steps": steps}
    kind = BACKBONES[backbone]
    extra = [
        *kind.overrides,
        *overrides(settings["model"], settings["weights"], settings["device"], settings["dtype"], extra),
    ]
    gc.collect()
    cuda = settings["device"] == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        row["cuda_allocated_before_mb"] = torch.cuda.memory_allocated() / 2**20
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure_one(prior, steps, extra, kind.kind, Path(tmp) / "run", "gpu" if cuda else "cpu")
        result["model_name"] = result.pop("model", None)
        row.update(result, status="ok")
    except Exception as error:  # one configuration's failure (e.g. out of memory) is its row's status
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        out_of_memory = isinstance(error, torch.OutOfMemoryError) or "out of memory" in first
        row["status"] = f"{'out of memory' if out_of_memory else 'failed'}: {type(error).__name__}: {first}"
    row["process_seconds"] = round(time.perf_counter() - started, 1)
    if cuda:
        row["cuda_peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    gc.collect()
    return row


# ------------------------------------------------------------------------------------------------- table
def _fmt(value, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown(rows: list[dict]) -> str:
    """One table per setting (model, weights, device, dtype): s/step, its split, U-Net passes, peak memory."""
    lines = ["# Full-scale priors: seconds per step and peak memory", ""]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in SETTINGS), []).append(row)
    for key, group in groups.items():
        model, weights, device, dtype = key
        first = group[0]
        names = sorted({r["model_name"] for r in group if r.get("model_name")})
        label = names[0] if len(names) == 1 else f"{model} ({weights} weights)"
        lines += [f"## {label}, {device}, dtype {dtype}", ""]
        lines.append(
            f"{first.get('steps')} steps per configuration, median s/step over the steps after the first (the first "
            "alone for 1 step); measured "
            f"{first.get('date', '?')} on {first.get('host', '?')} (torch {first.get('torch', '?')}, "
            f"{first.get('threads', '?')} threads; each configuration "
            + ("in a fresh process" if first.get("isolation", "process") == "process" else "in one shared process")
            + "). Peak: "
            + (
                "CUDA memory allocated by torch (reserved in brackets)."
                if device == "cuda"
                else "resident set of the run's process from the start of the run (model build included)."
            )
        )
        lines += [""]
        lines.append(
            "| backbone | prior | s/step | × SDS | U-Net fwd | backward | U-Net passes | peak GiB | "
            "thesis Table 6.1 (GPU GB) | status |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        order = {b: i for i, b in enumerate(BACKBONES)}
        group = sorted(group, key=lambda r: (order.get(r["backbone"], 99), PRIORS.index(r["prior"])))
        for row in group:
            sds = next((r for r in group if r["backbone"] == row["backbone"] and r["prior"] == "sds"), {})
            s, s_sds = row.get("seconds_per_step"), sds.get("seconds_per_step")
            ratio = s / s_sds if s is not None and s_sds else None
            peak = row.get("peak_memory_mb")
            peak_cell = _fmt(None if peak is None else peak / 1024, ".2f")
            if row.get("cuda_peak_reserved_mb") is not None:
                peak_cell += f" ({row['cuda_peak_reserved_mb'] / 1024:.2f})"
            thesis = THESIS_TABLE_6_1_GB.get(row["prior"])
            lines.append(
                f"| {row['backbone']} | {row['prior']} | {_fmt(s, '.3g')} | {_fmt(ratio, '.2f')} | "
                f"{_fmt(row.get('time/unet'), '.3g')} | {_fmt(row.get('time/backward'), '.3g')} | "
                f"{_fmt(row.get('unet_calls_per_step'), '.0f')} | {peak_cell} | {_fmt(thesis, '.1f')} | "
                f"{row.get('status', '?')} |"
            )
        lines.append("")
    lines += [
        "Backbones: " + "; ".join(f"`{name}` {b.description}" for name, b in BACKBONES.items()) + ".",
        "",
        "The thesis column is the SDI thesis's Table 6.1 (GPU memory of its own text-to-3D settings), printed beside "
        "every backbone for scale, not as the same measurement. Random weights give the real architecture's cost; "
        "their images are noise.",
        "",
    ]
    return "\n".join(lines)


def _merge(path: Path, new_rows: list[dict]) -> list[dict]:
    """The rows already in ``path`` whose (settings, prior, backbone) are not measured again, then the new ones."""
    identity = (*SETTINGS, "prior", "backbone")
    fresh = {tuple(r.get(k) for k in identity) for r in new_rows}
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    return [r for r in old if tuple(r.get(k) for k in identity) not in fresh] + new_rows


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--priors", nargs="+", default=list(PRIORS), help=f"default: all ({', '.join(PRIORS)})")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), help=f"of: {', '.join(BACKBONES)}")
    parser.add_argument(
        "--steps", type=int, default=3, help="steps per configuration; the first (warm-up) is timed only when alone"
    )
    parser.add_argument("--model", default="sd21_base", help="a conf/model option (sd21_base, sd15, sd21, ...)")
    parser.add_argument("--weights", default="random", help="random | pretrained (models with a weights option)")
    parser.add_argument("--device", default="cpu", help=f"of: {', '.join(DEVICES)}")
    parser.add_argument("--dtype", default="auto", help=f"of: {', '.join(DTYPES)} (auto: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("bench/fullscale"), help="folder for results.json, table.md")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per configuration (0: none; process only)")
    parser.add_argument(
        "--isolation",
        default="process",
        help="process: each configuration in a fresh subprocess (default); none: all in this process (saves the "
        "start-up per configuration; peaks stay exact on CUDA only)",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        help="address-space limit of each configuration's process (default on CPU: 90%% of RAM; 0: none)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for prior in args.priors:
        _check("prior", prior, PRIORS)
    for backbone in args.backbones:
        _check("backbone", backbone, BACKBONES)
    _check("model", args.model, models())
    _check("weights", args.weights, ("random", "pretrained"))
    _check("device", args.device, DEVICES)
    _check("dtype", args.dtype, DTYPES)
    _check("isolation", args.isolation, ISOLATION)
    if args.steps < 1:
        raise SystemExit(f"--steps {args.steps}: at least 1")
    if args.memory_limit_gb is None:
        args.memory_limit_gb = round(0.9 * _ram_gb(), 1) if args.device == "cpu" else 0
    return args


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.worker:
        args.prior, args.backbone = args.priors[0], args.backbones[0]
        raise SystemExit(run_worker(args))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    settings = {
        "model": args.model,
        "weights": args.weights if _has_option(args.model, "weights") else "built-in",
        "device": args.device,
        "dtype": args.dtype,
        "memory_limit_gb": args.memory_limit_gb,
        "isolation": args.isolation,
    }
    about = {
        "date": time.strftime("%Y-%m-%d"),
        "host": torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()} CPU",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.json"
    document = {
        "thesis_table_6_1_gb": THESIS_TABLE_6_1_GB,
        "backbones": {k: b.description for k, b in BACKBONES.items()},
    }
    rows = []
    for backbone in args.backbones:
        for prior in args.priors:
            if configuration(prior, BACKBONES[backbone].kind) is None:
                continue
            print(f"[fullscale] {prior} on {backbone} ...", flush=True)
            if args.isolation == "none":
                row = measure_in_process(prior, backbone, settings, args.steps, args.override)
            else:
                row = measure(prior, backbone, settings, args.steps, args.override, args.out, args.timeout or None)
            row.update(about)
            rows.append(row)
            s, peak = row.get("seconds_per_step"), row.get("peak_memory_mb")
            print(
                f"[fullscale] {prior} on {backbone}: {row['status']}, "
                f"{_fmt(s, '.3g')} s/step, peak {_fmt(None if peak is None else peak / 1024, '.2f')} GiB, "
                f"{row['process_seconds']} s in all",
                flush=True,
            )
            merged = _merge(results, rows)  # after every row: a run stopped half-way keeps what it measured
            results.write_text(json.dumps({**document, "rows": merged}, indent=2) + "\n")
            (args.out / "table.md").write_text(markdown(merged))
    print(f"[fullscale] wrote {results} and {args.out / 'table.md'}")
    return rows


if __name__ == "__main__":
    main()

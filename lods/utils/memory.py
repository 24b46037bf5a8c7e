"""Peak memory of one run: the process's resident-set high-water mark on CPU, allocated memory on CUDA.

Linux lets a process reset its own high-water mark (``/proc/self/clear_refs``), so runs that share a
process (a Hydra multirun with the basic launcher, the benchmarks) each report their own peak.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_PROC = Path("/proc/self")


def reset_peak_memory(device: torch.device | str | None = None) -> bool:
    """Start a new peak; False where the CPU peak cannot be reset (it is then the process's peak so far)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        (_PROC / "clear_refs").write_text("5")  # 5: reset the peak resident set size
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory since the last reset, in MiB (CUDA: allocated by torch; CPU: resident set)."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024

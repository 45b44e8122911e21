"""Which device to train on, and the facts about this machine that a run records in env.json."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ganbench.errors import UsageError

DEVICES = ("auto", "cuda", "mps", "cpu")


def choose_device(requested: str | None = None) -> torch.device:
    """cuda, then mps, then cpu; or the one asked for, refused if this machine lacks it."""
    requested = requested or "auto"
    kind = requested.split(":")[0]
    if kind not in DEVICES:
        raise UsageError(f'--device "{requested}": unknown device; allowed: {", ".join(DEVICES)} (or cuda:N)')
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f'--device "{requested}": no CUDA device is available here; use --device cpu')
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f'--device "{requested}": MPS is not available here; use --device cpu')
    return torch.device(requested)


def has_accelerator() -> bool:
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return device.type


def git_sha(where: Path) -> str | None:
    """The commit of the repository holding `where` (the suite's), if any."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device, seed: int, suite_dir: Path, settings: Any = None) -> dict[str, Any]:
    """The content of env.json; with the run's `settings`, the code of every plugin it uses."""
    from ganbench.checkpoint import plugin_code

    import pluggy
    import torchvision

    import ganbench

    return {
        "ganbench": ganbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pluggy": pluggy.__version__,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git_sha": git_sha(suite_dir),
        "seed": seed,
        **({"plugins": plugin_code(settings)} if settings is not None else {}),
    }


def reset_peak_memory(device: torch.device) -> None:
    """Start counting a run's peak device memory from here (a process may hold several runs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """status.json's `memory`, in MiB: the process's peak resident memory on the host (the whole
    process: a run process of `--jobs N` holds one run), and on cuda the peak that torch's caching
    allocator handed out and held since `reset_peak_memory`. It is what says how many runs fit on
    one GPU at once (docs/gpu.md); reading it is one host call at the end of a run."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    memory = {"host_peak_rss_mib": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    if device.type == "cuda":
        memory["device_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        memory["device_peak_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    return memory

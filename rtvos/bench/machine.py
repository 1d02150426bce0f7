"""The machine a measurement ran on: CPU, cores, RAM, GPUs, load average, and the versions on the measured path.

Shared by `rtvos bench`, `rtvos info` and the benchmarks/ scripts, so every report carries the same header.
"""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "loadavg", "machine_info", "physical_cores", "ram_gb", "versions"]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    return None


def physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:
        return None


def usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def gpus() -> list[dict[str, Any]]:
    import torch

    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                        "capability": f"{p.major}.{p.minor}"})
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, cores (logical, physical, usable by this process), RAM, GPUs, OS, and the load average now."""
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cores": usable_cores(),
        "ram_gb": ram_gb(),
        "gpu": gpus() or None,
        "platform": platform.platform(),
        "loadavg_start": loadavg(),
        "loadavg_end": None,  # filled when the run ends: a load that moved during the run says so
    }


def _dist_version(*names: str) -> str | None:
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return None


def versions() -> dict[str, str | None]:
    """Versions of everything on the measured path (None = not installed)."""
    import av
    import cv2
    import numpy as np
    import torch

    from .. import __version__

    return {
        "python": platform.python_version(),
        "rtvos": __version__,
        "torch": torch.__version__,
        "torchvision": _dist_version("torchvision"),
        "onnxruntime": _dist_version("onnxruntime", "onnxruntime-gpu"),
        "opencv": cv2.__version__,
        "av": av.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
    }

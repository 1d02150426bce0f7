"""`rtvos info`: what this install can run, so a bug report carries it."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="versions, devices, backends and registered models")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def _version(module: str) -> str | None:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))
    except Exception:
        return None


def collect() -> dict[str, Any]:
    import torch

    import rtvos
    from rtvos.models.hub import DEFAULT_MODEL, SHIPPED, default_weights_path, shipped_weights_path

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    from rtvos.backends import backend_status, resolve_backend

    backends = backend_status()
    auto = {"cpu": resolve_backend("auto", torch.device("cpu"))}
    if torch.cuda.is_available():
        auto["cuda"] = resolve_backend("auto", torch.device("cuda"))
    weights = default_weights_path()
    return {
        "rtvos": rtvos.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "versions": {m: _version(m) for m in ("torch", "torchvision", "numpy", "cv2", "av", "onnxruntime")},
        "devices": devices,
        "backends": backends,
        "auto_backend": auto,
        "models": rtvos.list_models(),
        "default_model": str(weights) if weights else f"{DEFAULT_MODEL} with RANDOM weights (no trained weights shipped)",
        "shipped": {name: str(p) if (p := shipped_weights_path(name)) else None for name in SHIPPED},
    }


def run(args: argparse.Namespace) -> int:
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"rtvos {data['rtvos']}  (python {data['python']}, {data['platform']})")
    print(f"cpu threads: {data['cpu_threads']} of {data['cpus']} cpus")
    print("versions: " + ", ".join(f"{k} {v or 'missing'}" for k, v in data["versions"].items()))
    print("devices:  " + ", ".join(data["devices"]))
    print("backends: " + ", ".join(f"{k} ({v})" for k, v in data["backends"].items()))
    print("auto:     " + ", ".join(f"{dev} -> {name}" for dev, name in data["auto_backend"].items()))
    print("models:   " + ", ".join(data["models"]))
    print(f"default:  {data['default_model']}")
    print("shipped:  " + ", ".join(f"{k} ({'present' if v else 'missing'})" for k, v in data["shipped"].items())
          + "  (rtvos.load_model(NAME))")
    return 0

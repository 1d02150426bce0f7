"""`rtvos info`: what this install can run, so a bug report carries it."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="versions, devices, backends and registered models")
    p.add_argument("--json", metavar="PATH", nargs="?", const="-", default=None,
                   help="write the machine-readable result to PATH (no PATH or '-': print it instead of the text)")
    p.set_defaults(func=run)


def collect() -> dict[str, Any]:
    import torch

    import rtvos
    from rtvos.bench import machine_info, versions
    from rtvos.models import (
        DEFAULT_MODEL,
        DEFAULT_NETWORK,
        FLOW_MODELS,
        SHIPPED,
        default_weights_path,
        shipped_weights_path,
    )

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    from rtvos.backends import backend_status, resolve_backend

    backends = backend_status()
    auto = {"cpu": resolve_backend("auto", torch.device("cpu"))}
    if torch.cuda.is_available():
        auto["cuda"] = resolve_backend("auto", torch.device("cuda"))
    weights = default_weights_path()
    machine, vers = machine_info(), versions()  # the same header `rtvos bench` records
    return {
        "rtvos": rtvos.__version__,
        "python": vers["python"],
        "platform": machine["platform"],
        "cpu_threads": torch.get_num_threads(),
        "cpus": machine["logical_cores"],
        "machine": machine,
        "versions": {k: v for k, v in vers.items() if k not in ("python", "rtvos")},
        "devices": devices,
        "backends": backends,
        "auto_backend": auto,
        "models": rtvos.list_models(),
        "flow_models": list(FLOW_MODELS),
        "default_model": f"{FLOW_MODELS[DEFAULT_MODEL].meta['source']} + the appearance stage",
        "default_network": str(weights) if weights else f"{DEFAULT_NETWORK} with RANDOM weights (no trained weights shipped)",
        "shipped": {name: str(p) if (p := shipped_weights_path(name)) else None for name in SHIPPED},
    }


def run(args: argparse.Namespace) -> int:
    data = collect()
    if args.json is not None:
        text = json.dumps(data, indent=2)
        if args.json == "-":
            print(text)
            return 0
        from pathlib import Path

        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print(f"rtvos {data['rtvos']}  (python {data['python']}, {data['platform']})")
    m = data["machine"]
    print(f"cpu threads: {data['cpu_threads']} of {data['cpus']} cpus ({m['cpu']}; {m['usable_cores']} usable, "
          f"{m['ram_gb']} GB RAM)")
    print("versions: " + ", ".join(f"{k} {v or 'missing'}" for k, v in data["versions"].items()))
    print("devices:  " + ", ".join(data["devices"]))
    print("backends: " + ", ".join(f"{k} ({v})" for k, v in data["backends"].items()))
    print("auto:     " + ", ".join(f"{dev} -> {name}" for dev, name in data["auto_backend"].items()))
    print("models:   " + ", ".join(data["flow_models"]) + " (DIS, no network); " + ", ".join(data["models"])
          + " (RPM-Net networks)")
    print(f"default:  {data['default_model']}")
    print(f"network:  {data['default_network']} (the default network: bench's backend rows, viz, build-engine)")
    print("shipped:  " + ", ".join(f"{k} ({'present' if v else 'missing'})" for k, v in data["shipped"].items())
          + "  (rtvos.load_model(NAME))")
    return 0

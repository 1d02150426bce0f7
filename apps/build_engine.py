"""`rtvos build-engine`: build and cache the TensorRT engines (step + embed) for one model/size/precision.

Why ahead of time: an engine build takes minutes; doing it once per (weights, size, precision, TensorRT, GPU)
keeps `rtvos segment --backend tensorrt` start-up short. Needs an NVIDIA GPU and TensorRT.
"""

from __future__ import annotations

import argparse
from typing import Any

from rtvos.common import PRECISIONS


def add_parser(sub: Any) -> None:
    p = sub.add_parser("build-engine", help="build and cache TensorRT engines (needs an NVIDIA GPU + TensorRT)")
    p.add_argument("--model", default="default", help="a network: 'default' (the default network), a registered name, or a checkpoint path")
    p.add_argument("--size", type=int, default=512, help="model input size S, multiple of 64 (default: 512)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    p.add_argument("--route", choices=("torch_tensorrt", "onnx"), default="torch_tensorrt",
                   help="torch_tensorrt (deform conv as a plugin) or onnx (deform conv as GridSample+MatMul)")
    p.add_argument("--device", default="auto", help="CUDA device: auto (the first CUDA device), cuda:N")
    p.add_argument("--force", action="store_true", help="rebuild even when a cached engine exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtvos.backends import unavailable_reason

    reason = unavailable_reason("tensorrt")
    if reason is not None:
        raise RuntimeError(f"cannot build a TensorRT engine here: {reason}")
    if args.size <= 0 or args.size % 64:
        raise ValueError(f"--size must be a positive multiple of 64, got {args.size}")
    from rtvos import load_network
    from rtvos.backends import resolve_device
    from rtvos.engines import build_engine

    device = resolve_device(args.device)
    model = load_network(args.model).eval().to(device)
    for kind in ("embed", "step"):
        path = build_engine(model, (args.size, args.size), args.precision, kind=kind, route=args.route,
                            device=device, force=args.force)
        print(f"{kind}: {path}")
    return 0

"""`rtvos bench [SOURCE]`: per-stage and end-to-end latency, backends side by side with their IoU vs eager.

Thin over `rtvos.bench`: this module only maps arguments to a `BenchConfig`, prints the table and writes the
JSON / PNG. Everything measured (and how) lives in the library so benchmarks/ scripts reuse it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rtvos.common import AUTO, BUILTIN_BACKENDS, PRECISIONS

BACKEND_CHOICES = (AUTO, *BUILTIN_BACKENDS)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="latency per stage (decode → encode), per backend with IoU vs eager, and the compute floor",
        description="Benchmark the streaming pipeline: decode, preprocess, embed, match, propagate, postprocess, "
        "overlay and H.264 encode, p50/p95/p99/max and fps; backends side by side with mask IoU vs eager.",
    )
    p.add_argument("source", nargs="?", default=None,
                   help="video file, folder of frames, or synthetic:WxH (default: the shipped sample clip)")
    p.add_argument("--synthetic", metavar="WxH", default=None,
                   help="benchmark a generated clip of this size instead of SOURCE (e.g. 854x480)")
    p.add_argument("--mask", default=None,
                   help="first-frame mask PNG for SOURCE (default: the sample's mask, the synthetic ground truth, "
                   "or a centred box)")
    p.add_argument("--model", default="default", help="'default', a registered model name, or a checkpoint path")
    p.add_argument("--backend", nargs="+", default=["auto"], metavar="NAME", choices=BACKEND_CHOICES,
                   help=f"one or several of {', '.join(BACKEND_CHOICES)} (auto: what Segmenter would pick here); "
                   "the first available one runs the per-stage pipeline (default: auto, what `rtvos segment` runs)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--size", type=int, default=None, help="model input size S, multiple of 64 (default: the size the checkpoint was trained at, as "
                   "`rtvos segment` uses)")
    p.add_argument("--frames", type=int, default=100, help="measured frames (after the anchor and warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="frames run before measuring")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch, OpenCV and onnxruntime (default: each library's own)")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (the first CUDA device when usable, else cpu: what `rtvos segment` "
                   "runs), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--mask-resolution", choices=("full", "model"), default="full")
    p.add_argument("--compare-flow", action="store_true",
                   help="also time OpenCV DIS optical-flow propagation on the same frames")
    p.add_argument("--no-flops", action="store_true", help="skip FLOP counting and the matmul peak")
    p.add_argument("--json", metavar="PATH", default=None, help="write the machine-readable results (schema-validated) to PATH")
    p.add_argument("--plot", metavar="OUT.png", default=None, help="latency histogram + per-frame plot")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtvos import bench

    config = bench.BenchConfig(
        source=args.source,
        synthetic=args.synthetic,
        mask=args.mask,
        model=args.model,
        backends=tuple(args.backend),
        precision=args.precision,
        size=args.size,
        frames=args.frames,
        warmup=args.warmup,
        threads=args.threads,
        device=args.device,
        mask_resolution=args.mask_resolution,
        compare_flow=args.compare_flow,
        flops=not args.no_flops,
    )
    config.check()  # one-line InputError → exit 2 before anything slow happens
    log = None if args.quiet else (lambda msg: print(f"rtvos bench: {msg}", file=sys.stderr, flush=True))
    result = bench.run_benchmark(config, log=log)
    bench.validate_result(result)
    print(bench.format_report(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"json: {path}")
    if args.plot:
        print(f"plot: {bench.plot_result(result, args.plot)}")
    return 0

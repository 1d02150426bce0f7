"""Step latency (embed new frame + match with the cached embedding) per backend × precision × size, plus parity
with eager through the Segmenter.

Why `step` alone: it is the per-frame cost every backend accelerates; preprocessing and mask propagation are
shared code. Parity uses a model with non-zero deformable offsets and a scaled-up flow layer (random init
gives flow ≈ 0, which any backend would match trivially).

    python -m benchmarks.bench_backends --sizes 256 512 --steps 30
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

import rtvos
from rtvos import bench as rb
from rtvos.backends import backend_status, create_backend
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.segmenter import Segmenter


def perturbed_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = rtvos.create_model(name).eval()
    with torch.no_grad():
        for mod in m.modules():
            if hasattr(mod, "offset_conv"):
                mod.offset_conv.weight.normal_(0, 0.05)
        m.matching.flow_layer.weight.normal_(0, 0.1)
    return m


def _clip_run(seg: Segmenter, clip: Any) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    masks, flows = [], []
    for i, (frame, mask) in enumerate(zip(clip.frames, clip.masks)):
        r = seg.step(frame, mask if i == 0 else None)
        masks.append(r.mask)
        if r.flow is not None:
            flows.append(r.flow.float().cpu())
    return masks, flows


def time_steps(backend: Any, size: int, device: torch.device, warmup: int, steps: int) -> list[float]:
    """Backend step alone: CUDA events on a GPU, perf_counter_ns on CPU (rtvos.stats.Timer.time)."""
    x = torch.rand(1, 3, size, size, device=device)
    timer = rb.Timer(device)
    with torch.inference_mode():
        prev = backend.embed(x)
        for _ in range(warmup):
            prev, _ = backend.step(x, prev)
        out = []
        for _ in range(steps):
            (prev, _), ms = timer.time(lambda prev=prev: backend.step(x, prev))
            out.append(ms)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="rpmnet_r18")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--backends", nargs="+", default=["eager", "compile", "onnx", "onnx-gridsample", "tensorrt"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--clip-frames", type=int, default=8)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and onnxruntime alike (default: each library's own default)")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    model = perturbed_model(args.model).to(device)
    status = backend_status()
    rows = []
    machine = rb.machine_info()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, model {args.model}; "
          f"{machine['cpu']}, load avg {machine['loadavg_start']}")
    print(f"{'backend':<16}{'prec':<6}{'S':>5}{'p50 ms':>10}{'p95 ms':>10}{'build s':>9}{'min IoU':>9}"
          f"{'flow maxdiff':>14}  note")
    for size in args.sizes:
        clip = make_synthetic_clip(args.clip_frames, size, size, num_objects=2, seed=0)
        ref = _clip_run(Segmenter(model, size, device), clip)
        for name in args.backends:
            base, _, deform = name.partition("-")
            for prec in args.precisions:
                row: dict[str, Any] = {"backend": name, "precision": prec, "size": size}
                if not status.get(base, "unavailable: unknown").startswith("available"):
                    row["note"] = status.get(base, "unknown backend")
                    rows.append(row)
                    print(f"{name:<16}{prec:<6}{size:>5}{'-':>10}{'-':>10}{'-':>9}{'-':>9}{'-':>14}  {row['note']}")
                    continue
                kw: dict[str, Any] = {}
                if base == "onnx" and (deform or args.threads is not None):
                    kw = {"deform": deform or "auto", "intra_op_threads": args.threads}
                try:
                    t0 = time.perf_counter()
                    if kw:  # ONNX options: construct directly (the registry takes no extra kwargs)
                        from rtvos.backends.onnx import OnnxBackend

                        backend = OnnxBackend(model, (size, size), device, prec, **kw)
                    else:
                        backend = create_backend(base, model, (size, size), device, prec)
                    ms = time_steps(backend, size, device, args.warmup, args.steps)
                    build_s = time.perf_counter() - t0 - sum(ms) / 1e3
                except (ValueError, RuntimeError) as e:
                    row["note"] = str(e).splitlines()[0]
                    rows.append(row)
                    print(f"{name:<16}{prec:<6}{size:>5}{'-':>10}{'-':>10}{'-':>9}{'-':>9}{'-':>14}  {row['note']}")
                    continue
                lat = rb.summarize(ms)  # one percentile definition for every script (numpy's linear)
                row.update(p50_ms=lat["p50_ms"], p95_ms=lat["p95_ms"], build_s=build_s)
                # parity through the Segmenter, reusing the backend just timed (no second build)
                seg = Segmenter(model, size, device, backend="eager")
                seg.backend = backend
                masks, flows = _clip_run(seg, clip)
                row["min_iou"] = min(rb.mask_iou(a, b) for a, b in zip(ref[0], masks))
                row["flow_maxdiff"] = max(float((a - b).abs().max()) for a, b in zip(ref[1], flows))
                rows.append(row)
                print(f"{name:<16}{prec:<6}{size:>5}{row['p50_ms']:>10.1f}{row['p95_ms']:>10.1f}{build_s:>9.1f}"
                      f"{row['min_iou']:>9.4f}{row['flow_maxdiff']:>14.2e}", flush=True)
    print(f"load avg at the end {rb.loadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

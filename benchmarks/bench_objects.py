"""Step time of the default Segmenter against the number of objects (K = 1, 3, 5) on one synthetic clip size,
per stage; the issue's bound is K = 3 within 1.5x of K = 1.

    python benchmarks/bench_objects.py --size 854x480 --frames 60 --objects 1 3 5
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import rtvos
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.stats import percentile


def measure(k: int, height: int, width: int, frames: int, warmup: int, model: str) -> dict[str, float]:
    clip = make_synthetic_clip(num_frames=frames + warmup + 1, height=height, width=width, num_objects=k, seed=k)
    seg = rtvos.Segmenter(rtvos.load_model(model))
    steps: list[float] = []
    stages: dict[str, list[float]] = {}
    try:
        for t, frame in enumerate(clip.frames):
            r = seg.step(frame, clip.masks[0] if t == 0 else None)
            if t > warmup:
                steps.append(r.total_ms)
                for name, ms in r.timings_ms.items():
                    stages.setdefault(name, []).append(ms)
    finally:
        seg.close()
    out = {"objects": k, "p50_ms": percentile(steps, 50), "p95_ms": percentile(steps, 95),
           "p99_ms": percentile(steps, 99)}
    out.update({f"{name}_p50_ms": percentile(v, 50) for name, v in stages.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="854x480")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--model", default="default")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    rows = [measure(k, h, w, args.frames, args.warmup, args.model) for k in args.objects]
    base = rows[0]["p50_ms"]
    for r in rows:
        stages = ", ".join(f"{k[:-7]} {v:.1f}" for k, v in r.items() if k.endswith("_p50_ms") and k != "p50_ms")
        print(f"K={r['objects']}: step p50 {r['p50_ms']:.1f} ms (x{r['p50_ms'] / base:.2f} of K={rows[0]['objects']}), "
              f"p95 {r['p95_ms']:.1f}, p99 {r['p99_ms']:.1f}; {stages}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "rows": rows, "machine_load": list(np.round(__import__("os").getloadavg(), 2))}, f,
                      indent=2)


if __name__ == "__main__":
    main()

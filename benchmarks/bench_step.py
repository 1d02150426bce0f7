"""CPU time per Segmenter.step (cached: one embedding per frame) vs an uncached step (two embeddings).

Both are measured in one run, interleaved, so the ratio holds on a noisy shared machine.
Usage: python benchmarks/bench_step.py --models rpmnet_r18 rpmnet_r101 --size 512 --steps 50
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

import rtvos
from rtvos.data.synthetic import make_synthetic_clip


def bench(name: str, size: int, steps: int, warmup: int, height: int, width: int) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rtvos.load_model(name)
    clip = make_synthetic_clip(num_frames=8, height=height, width=width, num_objects=2, seed=0)
    segs = {c: rtvos.Segmenter(model, size=size, cache_embeddings=c) for c in (True, False)}
    times: dict[bool, list[float]] = {True: [], False: []}
    for seg in segs.values():
        seg.step(clip.frames[0], clip.masks[0])
    for i in range(warmup + steps):
        frame = clip.frames[1 + i % 7]
        for cached, seg in segs.items():
            t = time.perf_counter()
            seg.step(frame)
            if i >= warmup:
                times[cached].append((time.perf_counter() - t) * 1e3)
    c, u = np.median(times[True]), np.median(times[False])
    return {"model": name, "size": size, "cached_ms": float(c), "uncached_ms": float(u), "ratio": float(c / u),
            "cached_p95_ms": float(np.percentile(times[True], 95)), "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["rpmnet_r18", "rpmnet_r101"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--frame", default="480x854", help="frame HxW")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    h, w = (int(v) for v in args.frame.split("x"))
    rows = [bench(m, args.size, args.steps, args.warmup, h, w) for m in args.models]
    print(f"{'model':12s} {'S':>4s} {'cached ms':>10s} {'p95':>8s} {'uncached ms':>12s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['model']:12s} {r['size']:4d} {r['cached_ms']:10.1f} {r['cached_p95_ms']:8.1f} "
              f"{r['uncached_ms']:12.1f} {r['ratio']:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

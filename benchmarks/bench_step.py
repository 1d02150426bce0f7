"""CPU time per Segmenter.step (cached: one embedding per frame) vs an uncached step (two embeddings).

Both are measured in one run, interleaved, so the ratio holds on a noisy shared machine. Percentiles, the
timer and the machine header come from rtvos.bench, the same code `rtvos bench` reports with.
Usage: python benchmarks/bench_step.py --models rpmnet_r18 rpmnet_r101 --size 512 --steps 50 [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import warnings

import cv2
import torch

import rtvos
from rtvos import bench as rb
from rtvos.data.synthetic import make_synthetic_clip


def bench(name: str, size: int, steps: int, warmup: int, height: int, width: int) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rtvos.load_network(name)
    clip = make_synthetic_clip(num_frames=8, height=height, width=width, num_objects=2, seed=0)
    segs = {c: rtvos.Segmenter(model, size=size, cache_embeddings=c) for c in (True, False)}
    times: dict[bool, list[float]] = {True: [], False: []}
    timer = rb.Timer(torch.device("cpu"))
    for seg in segs.values():
        seg.step(clip.frames[0], clip.masks[0])
    for i in range(warmup + steps):
        frame = clip.frames[1 + i % 7]
        order = list(segs.items()) if i % 2 == 0 else list(segs.items())[::-1]  # no first-mover bias
        for cached, seg in order:
            _, ms = timer.time(lambda seg=seg: seg.step(frame))
            if i >= warmup:
                times[cached].append(ms)
    c, u = rb.summarize(times[True]), rb.summarize(times[False])
    return {"model": name, "size": size, "cached_ms": c["p50_ms"], "uncached_ms": u["p50_ms"],
            "ratio": c["p50_ms"] / u["p50_ms"], "cached_p95_ms": c["p95_ms"], "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["rpmnet_r18", "rpmnet_r101"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--frame", default="480x854", help="frame HxW")
    ap.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    h, w = (int(v) for v in args.frame.split("x"))
    machine = rb.machine_info()
    rows = [bench(m, args.size, args.steps, args.warmup, h, w) for m in args.models]
    print(f"{machine['cpu']}, {machine['logical_cores']} cores, threads {torch.get_num_threads()}, "
          f"load avg {machine['loadavg_start']} -> {rb.loadavg()}")
    print(f"{'model':12s} {'S':>4s} {'cached ms':>10s} {'p95':>8s} {'uncached ms':>12s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['model']:12s} {r['size']:4d} {r['cached_ms']:10.1f} {r['cached_p95_ms']:8.1f} "
              f"{r['uncached_ms']:12.1f} {r['ratio']:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

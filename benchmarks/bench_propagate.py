"""Full-resolution mask propagation on CPU: the PyTorch reference (one-hot → grid_sample → argmax) vs the
Segmenter's cv2.remap paths (hard labels, and soft scores carried between frames), interleaved in one run so
the ratios are fair on a noisy machine.

    python benchmarks/bench_propagate.py --size 480x854 --objects 2 --threads 2
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

import rtvos.bench as rb
from rtvos.segmenter import RemapPropagator, labels_from_scores, propagate_labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="480x854", help="frame HxW")
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--flow-grid", type=int, default=64, help="f4 grid (S/4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    h, w = (int(v) for v in a.size.split("x"))
    rng = np.random.default_rng(0)
    labels = np.zeros((h, w), np.uint8)
    for k in range(1, a.objects + 1):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        labels[y : y + h // 3, x : x + w // 3] = k
    flow = torch.from_numpy(rng.normal(0, 1.5, (1, 2, a.flow_grid, a.flow_grid)).astype(np.float32))
    fast = RemapPropagator()
    lab_t = torch.from_numpy(labels)
    scores = np.stack([(labels == k).astype(np.float32) for k in range(1, a.objects + 1)])

    def hard() -> np.ndarray:
        return fast.hard(labels, fast.maps(h, w, flow), a.objects + 1)

    def soft() -> np.ndarray:
        return labels_from_scores(fast.soft(scores, fast.maps(h, w, flow)))

    times: dict[str, list[float]] = {"torch grid_sample": [], "cv2.remap": [], "cv2.remap soft": []}
    jobs = (("torch grid_sample", lambda: propagate_labels(lab_t, flow, a.objects + 1)), ("cv2.remap", hard),
            ("cv2.remap soft", soft))
    for i in range(a.repeats + 3):
        for name, fn in jobs[:: 1 if i % 2 else -1]:
            t = time.perf_counter_ns()
            fn()
            if i >= 3:
                times[name].append((time.perf_counter_ns() - t) / 1e6)
    ref = propagate_labels(lab_t, flow, a.objects + 1).numpy()
    agree = float((hard() == ref).mean())
    agree_soft = float((soft() == ref).mean())
    med = {k: rb.percentile(v, 50) for k, v in times.items()}
    machine = rb.machine_info()
    print(f"{machine['cpu']}, {machine['logical_cores']} cores, threads {a.threads}, "
          f"load avg {machine['loadavg_start']} -> {rb.loadavg()}")
    for k, v in times.items():
        print(f"{k:18s} p50 {med[k]:7.2f} ms  p95 {rb.percentile(v, 95):7.2f} ms")
    print(f"cv2.remap / torch = {med['cv2.remap'] / med['torch grid_sample']:.3f}; soft / hard = "
          f"{med['cv2.remap soft'] / med['cv2.remap']:.3f}; pixel agreement with the reference: hard {agree:.5f}, "
          f"soft {agree_soft:.5f} ({h}x{w}, {a.objects} objects + background, {a.threads} threads)")


if __name__ == "__main__":
    main()

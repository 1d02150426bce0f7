"""Per-frame time of the default model against the paper's figures: 0.09 s per frame, 0.55 s with CRF.

On the shipped sample clip, per measured frame: the model's `Segmenter.step` (preprocess → mask), then the same
frame's mask refined by the dense CRF (pydensecrf, the paper's fully connected CRF) and by rtvos's fast local
CRF, each timed on its own. "step + CRF" is the step plus that CRF on the same frame. The paper measured on its
own hardware, so the ratio says how this machine and this implementation compare, not the method alone.

    python benchmarks/paper_comparison.py --threads 2 --frames 50 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

import rtvos
from rtvos import bench
from rtvos.eval.crf import have_pydensecrf, refine_mask
from rtvos.io import read_mask

PAPER_S_PER_FRAME = 0.09
PAPER_S_PER_FRAME_CRF = 0.55


def measure(model_name: str, size: int | None, frames: int, warmup: int) -> dict[str, Any]:
    machine = bench.machine_info()  # load average at the start; the end is added below
    video, mask_path = bench.sample_clip_paths()
    first, _ = read_mask(mask_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = rtvos.load_model(model_name)
    seg = rtvos.Segmenter(model, size=size)
    crf_modes = ["fast"] + (["dense"] if have_pydensecrf() else [])
    times: dict[str, list[float]] = {"step": [], **{m: [] for m in crf_modes}}
    loop = bench.FrameLoop(video)
    try:
        seg.step(loop.next()[0], first)
        for i in range(warmup + frames):
            image = loop.next()[0]
            t = time.perf_counter_ns()
            res = seg.step(image)
            step_ms = (time.perf_counter_ns() - t) / 1e6
            crf_ms = {}
            for mode in crf_modes:
                t = time.perf_counter_ns()
                refine_mask(image, res.mask, mode, object_ids=res.object_ids)
                crf_ms[mode] = (time.perf_counter_ns() - t) / 1e6
            if i >= warmup:
                times["step"].append(step_ms)
                for mode, ms in crf_ms.items():
                    times[mode].append(ms)
    finally:
        loop.close()
    rows = [{"method": f"RPM-Net step ({model_name}, S={seg.size[0]})", "paper_s": PAPER_S_PER_FRAME,
             **bench.summarize(times["step"])}]
    for mode in crf_modes:
        label = "dense CRF (pydensecrf, 2 it.)" if mode == "dense" else "fast CRF (local, 1/8 res.)"
        combined = np.add(times["step"], times[mode])
        rows.append({"method": f"  {label} alone", "paper_s": None, **bench.summarize(times[mode])})
        rows.append({"method": f"step + {label}", "paper_s": PAPER_S_PER_FRAME_CRF, **bench.summarize(combined)})
    if not have_pydensecrf():
        rows.append({"method": "step + dense CRF", "paper_s": PAPER_S_PER_FRAME_CRF,
                     "note": "pydensecrf not installed (pip install 'rtvos[crf]')"})
    return {
        "machine": machine | {"loadavg_end": bench.loadavg()},
        "versions": bench.versions(),
        "settings": {"model": model_name, "random_weights": any("RANDOM" in str(w.message) for w in caught),
                     "size": list(seg.size), "frames": frames, "warmup": warmup, "threads": torch.get_num_threads(),
                     "source": str(video), "frame_size": list(loop.size), "clock": "perf_counter_ns"},
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--size", type=int, default=None, help="model input size S (default: the model's)")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    r = measure(args.model, args.size, args.frames, args.warmup)
    m, s = r["machine"], r["settings"]
    print(f"{m['cpu']}, {m['logical_cores']} cores, threads {s['threads']}, load avg {m['loadavg_start']} -> "
          f"{m['loadavg_end']}; {Path(s['source']).name} {s['frame_size'][1]}x{s['frame_size'][0]}, "
          f"{s['frames']} frames{' (RANDOM weights: timing only)' if s['random_weights'] else ''}")
    print(f"{'method':<48}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'paper ms':>10}{'ours/paper':>11}")
    for row in r["rows"]:
        if "note" in row:
            print(f"{row['method']:<48}  {row['note']}")
            continue
        paper = row["paper_s"]
        ratio = f"{row['p50_ms'] / (paper * 1e3):.2f}" if paper else "-"
        print(f"{row['method']:<48}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}{row['mean_ms']:>9.1f}"
              f"{(f'{paper * 1e3:.0f}' if paper else '-'):>10}{ratio:>11}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
        print(f"json: {args.json}")


if __name__ == "__main__":
    main()

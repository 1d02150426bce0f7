"""Soak: 10,000 frames from an in-memory synthetic source through the full pipeline; does RSS stay flat?

Every sink whose disk use is bounded runs: overlay MP4 (H.264), palette PNGs written over a ring of 100 file
names, the JSON-lines log (to /dev/null by default), and the browser live view (a real server on a free port;
no client attached, so publishing is a copy). RSS (VmRSS from /proc/self/status) is sampled after a warm-up
(default 200 frames), every 1000 frames, and at the end; the target is growth < 2% from the warm-up sample.

Known residual growth: the MP4 muxer keeps one index entry per frame until it writes ``moov`` at close
(faststart), about 85 B/frame; ``--no-video`` leaves it out to show the rest of the pipeline on its own.

    python benchmarks/soak.py --frames 10000 --size 64 --frame 120x160 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

import rtvos
from rtvos.data.synthetic import make_synthetic_clip
from rtvos.io import Frame, FrameSource, write_mask
from rtvos.io.sinks import JsonlSink, LiveViewSink, MaskSink, SegmentedFrame, Sink, VideoSink
from rtvos.pipeline import Pipeline, PipelineConfig


class SyntheticSource(FrameSource):
    """``count`` frames cycling over a short synthetic clip held in memory (no decoding cost, no disk)."""

    def __init__(self, frames: list[np.ndarray], count: int, fps: float = 25.0) -> None:
        self.frames, self.count, self.fps = frames, count, fps
        self.size = frames[0].shape[:2]
        self.num_frames = count
        self.name = "synthetic"

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.count):
            yield Frame(source_index=i, image=self.frames[i % len(self.frames)], pts_s=i / self.fps, captured_s=time.time())


class RingMaskSink(MaskSink):
    """Palette PNGs over ``ring`` file names: the PNG path runs on every frame, the disk use stays bounded."""

    def __init__(self, folder: Path, ring: int = 100) -> None:
        super().__init__(folder)
        self.ring = ring

    def write(self, item: SegmentedFrame) -> None:
        t = time.perf_counter()
        write_mask(self.folder / f"{item.frame_index % self.ring:05d}.png", item.mask, self.palette)
        item.stages_ms[self.name] = (time.perf_counter() - t) * 1e3
        self.written += 1


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


class RssProbe(Sink):
    """Samples RSS at frame ``warmup`` (the baseline) and every ``every`` frames after it."""

    name = "rss"

    def __init__(self, warmup: int, every: int) -> None:
        self.warmup, self.every = warmup, every
        self.samples: list[tuple[int, int]] = []  # (frame, kB): at most frames/every + 2 entries
        self.t0 = time.perf_counter()

    def write(self, item: SegmentedFrame) -> None:
        n = item.frame_index + 1  # frames done
        if n == self.warmup or (n > self.warmup and n % self.every == 0):
            self.samples.append((n, rss_kb()))
            fps = n / (time.perf_counter() - self.t0)
            print(f"soak: {n:6d} frames  RSS {self.samples[-1][1] / 1024:8.1f} MiB  ({fps:.1f} fps)",
                  file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=200, help="frames before the baseline RSS sample")
    ap.add_argument("--every", type=int, default=1000, help="RSS sample interval in frames")
    ap.add_argument("--frame", default="120x160", help="frame HxW")
    ap.add_argument("--size", type=int, default=64, help="model input size S")
    ap.add_argument("--model", default="rpmnet_r18")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--jsonl", default="/dev/null", help="JSON-lines log path (default /dev/null)")
    ap.add_argument("--no-live", action="store_true", help="leave out the browser live view")
    ap.add_argument("--no-video", action="store_true", help="leave out the overlay MP4")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.frame.split("x"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rtvos.load_model(args.model)
    clip = make_synthetic_clip(num_frames=48, height=h, width=w, num_objects=2, seed=0)
    seg = rtvos.Segmenter(model, size=args.size)
    tmp = Path(tempfile.mkdtemp(prefix="rtvos-soak-"))
    probe = RssProbe(args.warmup, args.every)
    sinks: list[Sink] = [RingMaskSink(tmp / "masks"), JsonlSink(args.jsonl)]
    if not args.no_video:
        sinks.insert(1, VideoSink(tmp / "overlay.mp4"))
    view = None
    if not args.no_live:
        from rtvos.web import LiveView

        view = LiveView(port=0)
        view.start()
        sinks.insert(0, LiveViewSink(view))
    sinks.append(probe)
    pipe = Pipeline(SyntheticSource(clip.frames, args.frames), seg, sinks, clip.masks[0],
                    config=PipelineConfig(progress="off"))
    try:
        summary = pipe.run()
    finally:
        if view is not None:
            view.close()
    end_kb = rss_kb()
    base_n, base_kb = probe.samples[0]
    samples = [*probe.samples, (summary.frames, end_kb)]
    growth = 100.0 * (end_kb - base_kb) / base_kb
    peak = max(kb for _, kb in samples)
    print(summary.describe())
    print(f"RSS: {base_kb / 1024:.1f} MiB after {base_n} frames -> {end_kb / 1024:.1f} MiB after {summary.frames} "
          f"frames: growth {growth:+.2f}% (max {100.0 * (peak - base_kb) / base_kb:+.2f}%; target < 2%)")
    print("samples (frames: MiB): " + ", ".join(f"{n}: {kb / 1024:.1f}" for n, kb in probe.samples)
          + f", end: {end_kb / 1024:.1f}")
    print(f"bounded structures: latency reservoir {len(pipe.stats.latency_ms)}/{pipe.stats.latency_ms.capacity}, "
          f"queue peaks in {pipe.reader.peak}/{pipe.reader.queue.maxsize} out {pipe.writer.peak}/{pipe.writer.queue.maxsize}; "
          f"outputs in {tmp}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "frames": summary.frames, "frame_hw": [h, w], "size": args.size, "threads": torch.get_num_threads(),
            "fps": summary.fps, "latency_p50_ms": summary.latency_p50_ms, "latency_p95_ms": summary.latency_p95_ms,
            "step_p50_ms": summary.step_p50_ms, "stages_ms": summary.stages_ms,
            "rss_kb": [{"frames": n, "kb": kb} for n, kb in samples], "growth_pct": growth,
        }, indent=2))


if __name__ == "__main__":
    main()

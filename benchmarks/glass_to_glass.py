"""Glass-to-glass latency of the RTSP path: server clock painted into the frame → overlay out.

A loopback GStreamer RTSP server (tests/support/rtsp_server.py, Debian's /usr/bin/python3) paints
``time.time()`` into every frame as it enters the H.264 encoder (rtvos.data.stamp). Two clients:

- ``direct``: ``open_source(URL)`` → ``Segmenter.step`` → ``rtvos.io.overlay`` in this process;
  latency = ``time.time()`` once the overlay exists − the stamp decoded from the received frame. Also split
  into network+server+decode (``Frame.captured_s`` − stamp) and processing (overlay done − captured_s).
- ``app``: ``rtvos stream URL --box ... --jsonl LOG --out OUT.mp4 --max-frames N`` as a subprocess;
  latency = JSONL ``output_s`` (all sinks done) − the stamp decoded from the same frame of OUT.mp4
  (frames the overlay painted over the stamp band fail the CRC and are left out; their count is reported).

Server and clients share this machine's clock, so no clock sync is involved. The first ``--warmup``
frames (model warm-up, connection start) are left out. Usage:

    python benchmarks/glass_to_glass.py --mode both --frames 150 --size 640x360 --model-size 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/support: the RTSP server launcher

from support.rtsp import gst_rtsp_status, start_rtsp_server  # noqa: E402

import rtvos  # noqa: E402
from rtvos.data.stamp import decode_stamp  # noqa: E402
from rtvos.data.synthetic import make_synthetic_clip  # noqa: E402
from rtvos.io import VideoWriter, open_source, overlay  # noqa: E402


def _summary(ms: list[float]) -> dict[str, float | int]:
    if not ms:
        return {"n": 0}
    a = np.asarray(ms, np.float64)
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1),
            "min_ms": round(float(a.min()), 1), "max_ms": round(float(a.max()), 1)}


def _box(w: int, h: int) -> tuple[int, int, int, int]:
    """A box in the middle of the frame, clear of the stamp band at the top."""
    return (w // 3, h // 3, w // 3, h // 3)


def run_direct(url: str, args: argparse.Namespace) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rtvos.load_model(args.model)
    seg = rtvos.Segmenter(model, size=args.model_size, device=args.device)
    total, net, proc, step = [], [], [], []
    missing = 0
    t_start = time.perf_counter()
    with open_source(url, policy=args.policy, transport=args.transport) as src:
        h, w = src.size
        x, y, bw, bh = _box(w, h)
        mask = np.zeros((h, w), np.uint8)
        mask[y : y + bh, x : x + bw] = 1
        for n, frame in enumerate(src):
            stamp = decode_stamp(frame.image)
            t0 = time.perf_counter()
            res = seg.step(frame.image, mask if n == 0 else None)
            t1 = time.perf_counter()
            overlay(frame.image, res.mask)
            done = time.time()
            if n >= args.warmup:
                if stamp is None:
                    missing += 1
                else:
                    total.append((done - stamp) * 1e3)
                    net.append((frame.captured_s - stamp) * 1e3)
                    proc.append((done - frame.captured_s) * 1e3)
                    step.append((t1 - t0) * 1e3)
            if n + 1 >= args.frames:
                break
        stats = src.stats()
    wall = time.perf_counter() - t_start
    return {"mode": "direct", "glass_to_glass": _summary(total), "stamp_to_decoded": _summary(net),
            "decoded_to_overlay": _summary(proc), "step": _summary(step), "stamps_unreadable": missing,
            "frames": args.frames, "fps": round(args.frames / wall, 2), "source_stats": stats}


def run_app(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log, out = tmp / "stream.jsonl", tmp / "overlay.mp4"
    w, h = (int(v) for v in args.size.split("x"))
    x, y, bw, bh = _box(w, h)
    cmd = [sys.executable, "-m", "rtvos", "stream", url, "--box", f"{x},{y},{bw},{bh}",
           "--jsonl", str(log), "--out", str(out), "--max-frames", str(args.frames), "--quiet",
           "--model", args.model, "--device", args.device, "--policy", args.policy, "--transport", args.transport]
    if args.model_size:
        cmd += ["--size", str(args.model_size)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"rtvos stream failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    with open_source(out) as video:
        stamps = [decode_stamp(f.image) for f in video]
    if len(stamps) != len(rows):
        print(f"warning: {len(stamps)} video frames but {len(rows)} JSONL rows", file=sys.stderr)
    total, net, proc = [], [], []
    missing = 0
    for row, stamp in list(zip(rows, stamps))[args.warmup:]:
        if stamp is None:
            missing += 1
            continue
        total.append((row["output_s"] - stamp) * 1e3)
        if row.get("captured_s") is not None:
            net.append((row["captured_s"] - stamp) * 1e3)
            proc.append((row["output_s"] - row["captured_s"]) * 1e3)
    step = [row["step_ms"] for row in rows[args.warmup:] if row.get("step_ms") is not None]
    dropped = rows[-1].get("dropped") if rows else None
    return {"mode": "app", "glass_to_glass": _summary(total), "stamp_to_decoded": _summary(net),
            "decoded_to_output": _summary(proc), "step": _summary(step), "stamps_unreadable": missing,
            "frames": len(rows), "dropped": dropped, "wall_s_incl_model_load": round(wall, 1),
            "summary_line": (r.stdout.strip() or r.stderr.strip()).splitlines()[-1:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("direct", "app", "both"), default="both")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--size", default="640x360", help="stream WxH (a synthetic clip, looped by the server)")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--model", default="default")
    p.add_argument("--model-size", type=int, default=None, help="Segmenter input size S (default: the model's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--policy", choices=("drop", "block"), default="drop")
    p.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    reason = gst_rtsp_status()
    if reason:
        raise SystemExit(f"glass_to_glass: {reason}")
    w, h = (int(v) for v in args.size.split("x"))
    results: dict[str, Any] = {"stream": f"{w}x{h}@{args.fps}", "model": args.model, "model_size": args.model_size,
                               "device": args.device, "policy": args.policy, "transport": args.transport,
                               "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="g2g_") as tmpdir:
        tmp = Path(tmpdir)
        clip = make_synthetic_clip(num_frames=48, height=h, width=w, num_objects=2, seed=0, speed=3.0)
        with VideoWriter(tmp / "clip.mp4", args.fps, size=(h, w), crf=18) as vw:
            for f in clip.frames:
                vw.write(f)
        server = start_rtsp_server(tmp, clip=tmp / "clip.mp4", stamp=True, fps=args.fps)
        try:
            if args.mode in ("direct", "both"):
                results["direct"] = run_direct(server.url, args)
                print(json.dumps(results["direct"]), flush=True)
            if args.mode in ("app", "both"):
                results["app"] = run_app(server.url, args, tmp)
                print(json.dumps(results["app"]), flush=True)
        finally:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

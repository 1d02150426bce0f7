"""Many streams (issue #19): aggregate fps, per-stream p95 latency and memory for N streams of the sample, run as
N separate processes, as one process (`rtvos.MultiTracker`) and on Ray actors; Ray recovery time over repeated
worker kills; memory over add/remove cycles; and whether a batched embedding forward pays on this CPU.

    nice python benchmarks/bench_multi.py throughput --streams 1 2 4 --frames 60 --json multi.json
    nice python benchmarks/bench_multi.py ray --workers 1 2 --streams 4 --frames 60
    nice python benchmarks/bench_multi.py recovery --kills 5
    nice python benchmarks/bench_multi.py addremove --cycles 100
    nice python benchmarks/bench_multi.py soak --frames 10000 --streams 4
    nice python benchmarks/bench_multi.py batch --batch 4

Every mode runs the shipped sample (640x480, 109 frames) with the default model and backend ("auto": ONNX
Runtime on CPU). fps is frames out over the wall time from the first frame in to the last frame out (model
loading excluded); latency is the pipeline's: decode → every sink done, so for files it includes the bounded
read-ahead queue. Memory is peak RSS (ru_maxrss; summed over processes for "separate").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

_TEMP: list[Path] = []


def _tmp(prefix: str) -> Path:
    """A scratch folder removed when the benchmark ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _TEMP.append(path)
    return path


def _sample() -> tuple[Path, Path]:
    from rtvos.data.sample import sample_clip_paths

    return sample_clip_paths()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _vmrss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def one_process(n: int, frames: int, out: Path | None = None, workers: int | None = None,
                threads: int | None = None, model: str = "default", batch: bool = False) -> dict[str, Any]:
    """N streams of the sample through one MultiTracker; PNG masks written per stream (as serve does)."""
    import rtvos
    from rtvos.io.sinks import MaskSink

    video, mask = _sample()
    multi = rtvos.MultiTracker(model, workers=workers, threads=threads, batch=batch)
    root = _tmp("bench-multi-") if out is None else out
    for i in range(n):
        multi.add(f"s{i}", video, mask=mask, max_frames=frames, sinks=[MaskSink(root / f"s{i}")])
    t_first = t_last = None
    count = 0
    for _sid, _r in multi:
        now = time.perf_counter()
        t_first = t_first or now
        t_last = now
        count += 1
    wall = (t_last or 0) - (t_first or 0)
    st = multi.status()
    if out is None:  # run in a child interpreter (one_process_in_child): nobody else cleans up
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return {"mode": "one batched" if batch else "one", "model": model, "workers": workers, "threads": threads,
            "streams": n, "frames": count, "wall_s": round(wall, 2),
            "fps": round((count - 1) / wall, 2) if wall > 0 else None,
            "p95_latency_ms": [s.latency_p95_ms for s in st], "rss_mb": round(_rss_mb(), 1)}


def single_worker(frames: int, model: str) -> None:
    """One `rtvos.track` run, printed as JSON (what "separate" starts N of)."""
    import rtvos
    from rtvos.io.sinks import MaskSink

    video, mask = _sample()
    root = _tmp("bench-sep-")
    tr = rtvos.track(video, mask=mask, max_frames=frames, sinks=[MaskSink(root)], model=model)
    for _ in tr:
        pass
    s = tr.summary()
    print(json.dumps({"frames": s.frames, "wall_s": s.wall_s, "fps": s.fps, "p95": s.latency_p95_ms,
                      "rss_mb": _rss_mb(), "t_end": time.time(), "t_start": time.time() - s.wall_s}))


def separate(n: int, frames: int, model: str = "default") -> dict[str, Any]:
    procs = [subprocess.Popen([sys.executable, __file__, "_single", "--frames", str(frames), "--model", model],
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    rows = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    t0, t1 = min(r["t_start"] for r in rows), max(r["t_end"] for r in rows)
    total = sum(r["frames"] for r in rows)
    return {"mode": "separate", "streams": n, "frames": total, "wall_s": round(t1 - t0, 2),
            "fps": round(total / (t1 - t0), 2), "p95_latency_ms": [round(r["p95"], 1) for r in rows],
            "rss_mb": round(sum(r["rss_mb"] for r in rows), 1)}


def on_ray(workers: int, n: int, frames: int) -> dict[str, Any]:
    from rtvos.serve.config import StreamSpec
    from rtvos.serve.ray_engine import RayEngine

    video, mask = _sample()
    root = _tmp("bench-ray-")
    eng = RayEngine(workers=workers, worker_cpus=1.0)
    try:
        for i in range(n):
            eng.add(StreamSpec(id=f"s{i}", source=str(video), mask=str(mask), out=str(root / f"s{i}"), overlay=False,
                               max_frames=frames))
        t = time.perf_counter()
        eng.run(until_done=True)
        wall = time.perf_counter() - t
        st = eng.status()
    finally:
        eng.close()
    total = sum(s["frames"] for s in st)
    return {"mode": f"ray x{workers}", "streams": n, "frames": total, "wall_s": round(wall, 2),
            "fps": round(total / wall, 2), "p95_latency_ms": [s["latency_p95_ms"] for s in st],
            "note": "actors loaded before the clock starts; their first-frame backend build is inside"}


def recovery(kills: int, frames: int) -> dict[str, Any]:
    """Ray, 2 workers, one stream each replayed at its frame rate (a long synthetic clip, 160x120: the restart,
    not the frame size, is what is timed); SIGKILL stream s0's worker every 4 s, ``kills`` times. Recovery is
    timed from the kill to the stream's next frame written, split into: detect (kill → the driver sees the
    actor die), restart_and_add (→ the restarted actor took the stream back: process_s of Ray's worker start,
    init_s of the actor's __init__, add_s of the re-add) and first_frame (→ the next frame written)."""
    import signal
    import threading

    from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip
    from rtvos.serve.config import StreamSpec
    from rtvos.serve.ray_engine import RayEngine

    root = _tmp("bench-rec-")
    paths = write_synthetic_clip(make_synthetic_clip(num_frames=frames, height=120, width=160, num_objects=2, seed=0),
                                 root / "clip", as_frames=False)
    video, mask = paths.video, paths.first_mask
    eng = RayEngine(workers=2, keep_frame_numbers=True)
    times: list[float] = []
    phases: list[dict[str, float]] = []
    try:
        for i in range(2):
            eng.add(StreamSpec(id=f"s{i}", source=str(video), mask=str(mask), out=str(root / f"s{i}"), overlay=False,
                               pace=True, max_frames=frames))
        loop = threading.Thread(target=eng.run, kwargs={"until_done": True})
        loop.start()
        for k in range(kills):
            time.sleep(4.0)
            rec = eng.streams["s0"]
            if rec.state != "running":
                break
            before = len(rec.recoveries_s)
            pid = eng.pids()[rec.actor]
            t_kill = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            deadline = time.time() + 120
            while len(rec.recoveries_s) == before and time.time() < deadline:
                time.sleep(0.01)
            for seen, readded, frame in rec.recovery_marks[before:]:
                times.append(frame - t_kill)  # kill → the stream's next frame written
                actor = eng._ray.get(eng.actors[rec.actor].timings.remote())
                phases.append({"detect_s": round(seen - t_kill, 3), "restart_and_add_s": round(readded - seen, 3),
                               "first_frame_s": round(frame - readded, 3), **actor,
                               "add_s": rec.info.get("add_s")})
        loop.join(600)
        exact = {sid: r.frame_numbers == list(range(len(r.frame_numbers))) for sid, r in eng.streams.items()}
        st = eng.status()
    finally:
        eng.close()
    return {"mode": "recovery", "kills": len(times), "recovery_s": [round(x, 2) for x in times], "phases": phases,
            "median_s": round(float(np.median(times)), 2) if times else None, "max_s": round(max(times), 2) if times else None,
            "exactly_once": exact, "frames": {s["id"]: s["frames"] for s in st},
            "states": {s["id"]: [s["state"], s["error"]] for s in st}}


def node_loss(frames: int) -> dict[str, Any]:
    """A local three-node cluster (one CPU each, all on 127.0.0.1), two actors, one paced stream each; the node
    that hosts a stream's actor is removed mid-run (its raylet and workers killed); Ray restarts the actor on
    the spare node and the stream re-anchors from its checkpoint."""
    import shutil
    import threading

    import ray
    from ray.cluster_utils import Cluster

    from rtvos.data.synthetic import make_synthetic_clip, write_synthetic_clip
    from rtvos.serve.config import StreamSpec
    from rtvos.serve.ray_engine import RayEngine, _keep_loopback

    root = _tmp("bench-node-")
    tmp = tempfile.mkdtemp(prefix="rtvos-ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    _keep_loopback(ray)
    paths = write_synthetic_clip(make_synthetic_clip(num_frames=frames, height=120, width=160, num_objects=2, seed=0),
                                 root / "clip", as_frames=False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(3)]
    eng = RayEngine(workers=2, address=cluster.address, keep_frame_numbers=True)
    try:
        for i in range(2):
            eng.add(StreamSpec(id=f"s{i}", source=str(paths.video), mask=str(paths.first_mask), out=str(root / f"s{i}"),
                               overlay=False, pace=True))
        node_of = ray.get([a.node.remote() for a in eng.actors])
        loop = threading.Thread(target=eng.run, kwargs={"until_done": True})
        loop.start()
        while eng.streams["s0"].frames < 30:
            time.sleep(0.05)
        victim = next(n for n in nodes if n.node_id == node_of[eng.streams["s0"].actor])
        cluster.remove_node(victim, allow_graceful=False)
        loop.join(600)
        st = {s["id"]: s for s in eng.status()}
        exact = {sid: r.frame_numbers == list(range(frames)) for sid, r in eng.streams.items()}
    finally:
        eng.close()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"mode": "node_loss", "recovery_s": st["s0"]["recovery_s"], "restarts": st["s0"]["restarts"],
            "other_restarts": st["s1"]["restarts"], "exactly_once": exact}


def add_remove(cycles: int) -> dict[str, Any]:
    """Add a stream, take 3 frames, remove it; 4 streams alive throughout; RSS sampled every 10 cycles."""
    import rtvos
    from rtvos.data.synthetic import make_synthetic_clip

    clip = make_synthetic_clip(num_frames=8, height=120, width=160, num_objects=2, seed=0)
    multi = rtvos.MultiTracker("default", keep_alive=True)
    samples: list[tuple[int, float]] = []

    def frames_forever():
        while True:
            yield from clip.frames

    for i in range(3):
        multi.add(f"bg{i}", frames_forever(), mask=clip.masks[0])
    cycle, taken = 0, 0
    multi.add("c0", np.stack(clip.frames), mask=clip.masks[0])
    for sid, _r in multi:
        if sid != f"c{cycle}":
            continue
        taken += 1
        if taken < 3:
            continue
        multi.remove(sid)
        cycle, taken = cycle + 1, 0
        if cycle % 10 == 0:
            import gc

            gc.collect()
            samples.append((cycle, round(_vmrss_mb(), 1)))
        if cycle >= cycles:
            break
        multi.add(f"c{cycle}", np.stack(clip.frames), mask=clip.masks[0])
    multi.close()
    base = samples[1][1] if len(samples) > 1 else samples[0][1]
    return {"mode": "addremove", "cycles": cycle, "rss_mb": samples,
            "growth_after_20_cycles_mb": round(samples[-1][1] - base, 1)}


def soak(total: int, streams: int) -> dict[str, Any]:
    """``streams`` endless in-memory streams (160x120 synthetic, PNG masks over a ring of 50 names) until ``total``
    frames in all; VmRSS every 1000 frames after a 500-frame warm-up."""
    import rtvos
    from rtvos.data.synthetic import make_synthetic_clip
    from rtvos.io.sinks import MaskSink, SegmentedFrame

    class RingPNG(MaskSink):
        def write(self, item: SegmentedFrame) -> None:
            item.frame_index %= 50
            super().write(item)

    clip = make_synthetic_clip(num_frames=8, height=120, width=160, num_objects=2, seed=0)

    def forever():
        while True:
            yield from clip.frames

    root = _tmp("bench-soak-")
    multi = rtvos.MultiTracker("default")
    for i in range(streams):
        multi.add(f"s{i}", forever(), mask=clip.masks[0], sinks=[RingPNG(root / f"s{i}")])
    samples: list[tuple[int, float]] = []
    t = time.perf_counter()
    for n, _ in enumerate(multi, 1):
        if n == 500 or (n > 500 and n % 1000 == 0):
            samples.append((n, round(_vmrss_mb(), 1)))
        if n >= total:
            break
    wall = time.perf_counter() - t
    multi.close()
    return {"mode": "soak", "streams": streams, "frames": total, "fps": round(total / wall, 1), "rss_mb": samples,
            "growth_mb": round(samples[-1][1] - samples[0][1], 1) if samples else None}


def batch(b: int, reps: int) -> dict[str, Any]:
    """The RPM-Net embedding of b frames (the only network part: the default model, DIS + appearance, has none):
    b calls of batch 1 vs one call of batch b, eager and ONNX, at the sample's input size."""
    import torch

    import rtvos
    from rtvos.segmenter import model_input_size

    model = rtvos.load_network("default").eval()  # the default model (DIS + appearance) has no network
    hw = model_input_size((480, 640), int(model.meta.get("size", 512)))
    x1 = torch.rand(1, 3, *hw)
    xb = torch.rand(b, 3, *hw)
    with torch.inference_mode():
        for _ in range(2):
            model.embed(x1)
            model.embed(xb)
        t = time.perf_counter()
        for _ in range(reps):
            for _ in range(b):
                model.embed(x1)
        one = (time.perf_counter() - t) / reps
        t = time.perf_counter()
        for _ in range(reps):
            model.embed(xb)
        many = (time.perf_counter() - t) / reps
    row = {"mode": "batch", "input": list(hw), "batch": b, "threads": torch.get_num_threads(),
           f"eager_{b}x_batch1_ms": round(one * 1e3, 1), f"eager_batch{b}_ms": round(many * 1e3, 1),
           "eager_speedup": round(one / many, 3)}
    row.update(_onnx_batch(model, hw, b, reps))
    return row


def _onnx_batch(model: Any, hw: tuple[int, int], b: int, reps: int) -> dict[str, Any]:
    """The same with ONNX Runtime (the CPU default): the embedding exported at batch 1 and at batch b."""
    import contextlib
    import io

    import onnxruntime as ort
    import torch

    from rtvos.backends.compiled import EmbedModule
    from rtvos.backends.onnx import OPSET

    sessions = {}
    for n in (1, b):
        x = torch.rand(n, 3, *hw)
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            prog = torch.onnx.export(torch.export.export(EmbedModule(model), (x,), strict=False), (x,), dynamo=True,
                                     opset_version=OPSET, input_names=["x"], output_names=["emb"], optimize=True)
        assert prog is not None
        sessions[n] = ort.InferenceSession(prog.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x1 = np.random.rand(1, 3, *hw).astype(np.float32)
    xb = np.random.rand(b, 3, *hw).astype(np.float32)
    for _ in range(2):
        sessions[1].run(None, {"x": x1})
        sessions[b].run(None, {"x": xb})
    t = time.perf_counter()
    for _ in range(reps):
        for _ in range(b):
            sessions[1].run(None, {"x": x1})
    one = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for _ in range(reps):
        sessions[b].run(None, {"x": xb})
    many = (time.perf_counter() - t) / reps
    pool = _onnx_pool(sessions_path := _export_embed(model, hw), x1, b, reps)
    del sessions_path
    return {f"onnx_{b}x_batch1_ms": round(one * 1e3, 1), f"onnx_batch{b}_ms": round(many * 1e3, 1),
            "onnx_speedup": round(one / many, 3), f"onnx_{b}x_batch1_on_pool_ms": round(pool * 1e3, 1),
            "onnx_batch_vs_pool": round(pool / many, 3)}


def _export_embed(model: Any, hw: tuple[int, int]) -> bytes:
    import contextlib
    import io

    import torch

    from rtvos.backends.compiled import EmbedModule
    from rtvos.backends.onnx import OPSET

    x = torch.rand(1, 3, *hw)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        prog = torch.onnx.export(torch.export.export(EmbedModule(model), (x,), strict=False), (x,), dynamo=True,
                                 opset_version=OPSET, input_names=["x"], output_names=["emb"], optimize=True)
    assert prog is not None
    return bytes(prog.model_proto.SerializeToString())


def _onnx_pool(proto: bytes, x1: np.ndarray, b: int, reps: int) -> float:
    """What `MultiTracker`'s shared pool does instead of batching: the b batch-1 calls spread over one thread
    per core, each with one intra-op thread (time for all b)."""
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort

    from rtvos.multi import usable_cores

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto, sess_options=opts, providers=["CPUExecutionProvider"])
    with ThreadPoolExecutor(usable_cores()) as ex:
        list(ex.map(lambda _: sess.run(None, {"x": x1}), range(b)))
        t = time.perf_counter()
        for _ in range(reps):
            list(ex.map(lambda _: sess.run(None, {"x": x1}), range(b)))
        return (time.perf_counter() - t) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    t.add_argument("--frames", type=int, default=60)
    t.add_argument("--modes", nargs="+", default=["separate", "one"])
    t.add_argument("--workers", type=int, nargs="+", default=[0],
                   help="MultiTracker step pools to compare (0: its default, the usable cores)")
    t.add_argument("--threads", type=int, default=None, help="intra-op threads per step (default: cores // workers)")
    t.add_argument("--model", default="default", help="e.g. an RPM-Net network, which --batch needs")
    t.add_argument("--batch", action="store_true", help="also one process with MultiTracker(batch=True)")
    r = sub.add_parser("ray")
    r.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    r.add_argument("--streams", type=int, nargs="+", default=[4])
    r.add_argument("--frames", type=int, default=60)
    k = sub.add_parser("recovery")
    k.add_argument("--kills", type=int, default=5)
    k.add_argument("--frames", type=int, default=1200)
    nl = sub.add_parser("node")
    nl.add_argument("--frames", type=int, default=600)
    a = sub.add_parser("addremove")
    a.add_argument("--cycles", type=int, default=100)
    so = sub.add_parser("soak")
    so.add_argument("--frames", type=int, default=10000)
    so.add_argument("--streams", type=int, default=4)
    bt = sub.add_parser("batch")
    bt.add_argument("--batch", type=int, default=4)
    bt.add_argument("--reps", type=int, default=3)
    s = sub.add_parser("_single")
    s.add_argument("--frames", type=int, default=60)
    s.add_argument("--model", default="default")
    for q in (t, r, k, nl, a, so, bt):
        q.add_argument("--json", help="append the rows to this JSON-lines file")
    args = p.parse_args()
    try:
        _run(args)
    finally:
        import shutil

        for path in _TEMP:
            shutil.rmtree(path, ignore_errors=True)


def _run(args: argparse.Namespace) -> None:
    if args.cmd == "_single":
        single_worker(args.frames, args.model)
        return
    rows: list[dict[str, Any]] = []
    if args.cmd == "throughput":
        for n in args.streams:
            for mode in args.modes:
                if mode == "separate":
                    rows.append(separate(n, args.frames, args.model))
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                for w in args.workers:
                    for b in (False, True) if args.batch else (False,):
                        rows.append(one_process_in_child(n, args.frames, w or None, args.threads, args.model, b))
                        print(json.dumps(rows[-1]), flush=True)
    elif args.cmd == "ray":
        for n in args.streams:
            for w in args.workers:
                rows.append(on_ray(w, n, args.frames))
                print(json.dumps(rows[-1]), flush=True)
    elif args.cmd == "recovery":
        rows.append(recovery(args.kills, args.frames))
    elif args.cmd == "addremove":
        rows.append(add_remove(args.cycles))
    elif args.cmd == "batch":
        rows.append(batch(args.batch, args.reps))
    elif args.cmd == "node":
        rows.append(node_loss(args.frames))
    elif args.cmd == "soak":
        rows.append(soak(args.frames, args.streams))
    if args.cmd in ("recovery", "node", "addremove", "batch", "soak"):
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def one_process_in_child(n: int, frames: int, workers: int | None = None, threads: int | None = None,
                         model: str = "default", batch: bool = False) -> dict[str, Any]:
    """`one_process` in a fresh interpreter, so its peak RSS is its own."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_multi; "
            f"print(json.dumps(bench_multi.one_process({n}, {frames}, workers={workers}, threads={threads}, "
            f"model={model!r}, batch={batch})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()

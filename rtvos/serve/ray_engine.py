"""`rtvos serve --engine ray`: streams on Ray actors, outputs and checkpoints on the driver, recovery from a
killed worker.

Each actor (`StreamWorker`, ``num_cpus`` reserved, ``max_restarts=-1``) runs a `rtvos.MultiTracker` over the
streams assigned to it (sticky: a stream stays on its actor) and hands back each frame's mask; the driver (this
process) runs every stream's sinks and, after a frame is written, keeps its checkpoint: the frame number, the
mask as COCO RLE per object, the object ids (a few KB). When a worker process dies, Ray restarts the actor and
the driver re-adds its streams from their checkpoints: a file stream continues at the frame after the last one
written (every frame's PNG exactly once), from the worker's latest Segmenter snapshot (sent every
`StreamWorker.SNAPSHOT_EVERY` frames; the frames after it are stepped again, silently), so its masks are the
uninterrupted run's; a live stream anchors its next frame on the last mask and counts the frames it missed
meanwhile as dropped. Streams on other actors never notice.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.base import Frame, InputError
from ..io.masks import DAVIS_PALETTE, read_mask
from ..io.rle import rle_decode, rle_encode
from ..io.sinks import SegmentedFrame, Sink, StreamInfo
from .config import ReanchorRequest, StreamSpec
from .engine import OnFrame, build_sinks, source_of

__all__ = ["Checkpoint", "RayEngine", "StreamWorker", "WorkerRestarting"]

log = logging.getLogger("rtvos")

#: What every actor process gets in its environment: sleeping OpenMP workers (N actors share the cores).
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
#: Ray settings of this process (and of a local cluster it starts), unless set already: a call to a worker that
#: died fails after Ray has waited this long for the death to be recorded (default 1000 ms). Recovery of a
#: SIGKILLed worker began ~1.5 s after the kill with the default, 0.1-0.9 s with this (benchmarks/bench_multi.py
#: recovery).
RAY_ENV = {"RAY_timeout_ms_task_wait_for_death_info": "100"}


@dataclass
class Checkpoint:
    """The last frame the driver wrote for a stream: enough to re-anchor it on a fresh actor."""

    frame_index: int
    ids: tuple[int, ...]
    rle: dict[str, Any]  # object id → COCO RLE of its mask
    size: tuple[int, int]

    @classmethod
    def of(cls, n: int, mask: np.ndarray, ids: tuple[int, ...]) -> Checkpoint:
        return cls(n, ids, {str(i): rle_encode(mask == i) for i in ids}, (int(mask.shape[0]), int(mask.shape[1])))

    def mask(self) -> np.ndarray:
        out = np.zeros(self.size, np.uint8)
        for i, r in self.rle.items():
            out[rle_decode(r).astype(bool)] = int(i)
        return out


def _process_age_s() -> float:
    """Seconds since this process started (Linux; 0 elsewhere)."""
    try:
        from pathlib import Path

        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start = int(stat[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, clock ticks after boot
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - start)
    except (OSError, ValueError, IndexError):
        return 0.0


class WorkerRestarting(RuntimeError):
    """The stream's actor is down and Ray is restarting it (the API answers 503: retry)."""


def _is_loopback_address(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _keep_loopback(ray: Any) -> None:
    """Ray rewrites a loopback cluster address to the machine's outward IP before connecting (so that remote
    nodes could reach it); a cluster started on 127.0.0.1 only listens there. Its own switch for single-machine
    clusters keeps 127.0.0.1 as it is (same as RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported)."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


class StreamWorker:
    """The Ray actor: a `MultiTracker` over its streams, no sinks; the driver polls it for finished frames."""

    QUEUE = 32  # frames held for the driver before the model waits (backpressure)
    #: A file stream's whole Segmenter state goes to the driver every this many frames (7.5 MB for one object at
    #: 640x480: ~0.3 MB a frame on average, about one mask's worth): a restart replays at most this many frames from it, silently, and then
    #: continues exactly as the uninterrupted run would (a mask alone loses the scores and learned colours).
    SNAPSHOT_EVERY = 25

    def __init__(self, model_opts: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        from ..multi import MultiTracker

        self._out: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._images: dict[str, bool] = {}
        self._snapshots: dict[str, bool] = {}  # file streams: their state can be replayed after a restart
        self.multi = MultiTracker(keep_alive=True, on_end=self._on_end, **model_opts)
        self._thread = threading.Thread(target=self._loop, name="rtvos-worker", daemon=True)
        self._thread.start()
        #: where a (re)start's time goes, for the recovery benchmark: process age when __init__ began (Ray's
        #: worker start and its imports), then __init__ itself (rtvos imports, model load).
        self.started = {"process_s": round(_process_age_s() - (time.perf_counter() - t0), 3),
                        "init_s": round(time.perf_counter() - t0, 3)}

    def timings(self) -> dict[str, float]:
        return dict(self.started)

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this worker runs on (hex id)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def add(self, spec_json: dict[str, Any], mask: np.ndarray | None, resume: int | None, image: bool,
            state: tuple[int, bytes] | None = None) -> dict[str, Any]:
        """Start a stream (``state``: `MultiTracker.add`'s); returns what the driver's sinks need (name, fps, size,
        live)."""
        t0 = time.perf_counter()
        spec = StreamSpec.model_validate(spec_json)
        self._images[spec.id] = image
        self.multi.add(spec.id, source_of(spec), mask=mask, boxes=None if mask is not None else spec.all_boxes_xyxy or None,
                       points=None if mask is not None else spec.points or None, max_frames=spec.max_frames,
                       policy=spec.policy, transport=spec.transport, pace=spec.pace, resume_after=resume, state=state)
        src = self.multi.source(spec.id)
        self._snapshots[spec.id] = not src.is_live
        return {"name": str(src.name), "fps": float(src.fps or 25.0), "size": list(src.size), "live": bool(src.is_live),
                "add_s": round(time.perf_counter() - t0, 3)}

    def remove(self, stream_id: str) -> None:
        self.multi.remove(stream_id)

    def reanchor(self, stream_id: str, boxes: list[tuple[int, int, int, int]], points: list[tuple[int, int, bool]]) -> None:
        self.multi.reanchor(stream_id, boxes=boxes or None, points=points or None)

    def status(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.multi.status()]

    def poll(self, timeout_s: float = 0.5, max_items: int = 64) -> list[dict[str, Any]]:
        """Frames (and stream ends) since the last poll, oldest first; waits up to ``timeout_s`` for one."""
        with self._cond:
            if not self._out:
                self._cond.wait(timeout_s)
            items = [self._out.popleft() for _ in range(min(max_items, len(self._out)))]
            self._cond.notify_all()
        return items

    def _push(self, item: dict[str, Any], wait: bool) -> None:
        with self._cond:
            while wait and len(self._out) >= self.QUEUE:
                self._cond.wait(0.5)
            self._out.append(item)
            self._cond.notify_all()

    def _on_end(self, st: Any) -> None:
        self._push({"id": st.id, "end": st.state, "error": st.error}, wait=False)

    def _loop(self) -> None:
        for sid, r in self.multi:
            self._push({"id": sid, "frame_index": r.frame_index, "source_index": r.source_index, "pts": r.pts_s, "captured": r.captured_s,
                        "mask": r.mask, "ids": r.ids, "anchored": r.anchored, "timings": r.timings_ms,
                        "dropped": r.dropped, "image": r.image if self._images.get(sid) else None}, wait=True)
            if self._snapshots.get(sid) and r.frame_index % self.SNAPSHOT_EVERY == 0:
                try:  # here, between this stream's result and its next step (MultiTracker.snapshot's rule)
                    self._push({"id": sid, "frame_index": r.frame_index, "state": self.multi.snapshot(sid)}, wait=True)
                except KeyError:  # the stream ended with this frame
                    pass


@dataclass
class _DriverStream:
    spec: StreamSpec
    actor: int
    sinks: list[Sink]
    palette: np.ndarray
    mask: np.ndarray | None  # the first mask (from its PNG), None for box/point prompts
    info: dict[str, Any] = field(default_factory=dict)
    opened: bool = False
    checkpoint: Checkpoint | None = None
    snapshot: tuple[int, bytes] | None = None  # the worker's latest Segmenter state (frame, bytes), file streams
    state: str = "starting"
    error: str | None = None
    frames: int = 0
    restarts: int = 0
    dropped_base: int = 0  # drops before the last restart, plus the frames a live stream missed during it
    dropped_now: int = 0
    failed_at: float | None = None
    recoveries_s: list[float] = field(default_factory=list)  # failure seen → next frame written, per restart
    # per restart, perf_counter marks: failure seen, stream re-added on the restarted actor, next frame written
    recovery_marks: list[tuple[float, float, float]] = field(default_factory=list)
    restarted_at: float | None = None
    resumed_from: list[int] = field(default_factory=list)  # the checkpoint frame of each restart (-1: none yet)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    frame_numbers: list[int] = field(default_factory=list)  # written frame numbers, for exact accounting (tests)


class RayEngine:
    """Streams on ``workers`` Ray actors. ``address``: an existing cluster; None starts a local one on
    127.0.0.1 for this engine (stopped and its temp folder removed on `close`)."""

    name = "ray"

    def __init__(self, workers: int = 2, *, address: str | None = None, worker_cpus: float = 1.0,
                 model: str = "default", size: int | None = None, backend: str = "auto", device: str = "auto",
                 keep_frame_numbers: bool = False, appearance: str | None = None) -> None:
        try:
            import ray
        except ImportError as err:
            raise InputError(f"--engine ray needs the ray extra: pip install 'rtvos[ray]' ({err})") from None
        if workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        self._ray = ray
        self._temp: str | None = None
        self._owns_ray = False
        env = {"env_vars": {**WORKER_ENV, **{k: v for k, v in os.environ.items() if k.startswith("RTVOS_")}}}
        if address is None or _is_loopback_address(address):
            _keep_loopback(ray)
        if not ray.is_initialized():
            import signal

            for k, v in RAY_ENV.items():  # read by ray.init (the driver's core worker, a local cluster's processes)
                os.environ.setdefault(k, v)

            # ray.init replaces the driver's SIGTERM handler with sys.exit; the CLI's (SIGTERM = Ctrl-C: flush
            # every stream, print the summary, exit 0) is put back.
            main = threading.current_thread() is threading.main_thread()
            previous = signal.getsignal(signal.SIGTERM) if main else None
            if address is None:
                self._temp = tempfile.mkdtemp(prefix="rtvos-ray-", dir="/tmp")  # short: Ray's socket paths
                ray.init(address="local", num_cpus=max(1, int(np.ceil(workers * worker_cpus))), include_dashboard=False,
                         _node_ip_address="127.0.0.1", _temp_dir=self._temp, runtime_env=env, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=address, runtime_env=env, log_to_driver=False, configure_logging=False)
            if main and previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self._owns_ray = True
        actor = ray.remote(StreamWorker).options(num_cpus=worker_cpus, max_restarts=-1, max_task_retries=0,
                                                 max_concurrency=4)
        # Each actor's step pool and intra-op threads fit the CPUs it reserves, not the machine's: N actors on one
        # machine would otherwise each size for all its cores and oversubscribe them (4 streams on 2 actors on
        # 2 cores: 30 fps with 2 workers x 1 thread per actor, against 50 fps with one actor).
        cpus = max(1, int(worker_cpus))
        opts = {"model": model, "size": size, "backend": backend, "device": device, "appearance": appearance,
                "workers": cpus, "threads": cpus}
        self.actors: list[Any] = [actor.remote(opts) for _ in range(workers)]
        self.keep_frame_numbers = keep_frame_numbers
        self.streams: dict[str, _DriverStream] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._until_done = False
        self._on_frame: OnFrame | None = None
        self._actor_locks = [threading.Lock() for _ in self.actors]

    # -- control ---------------------------------------------------------------------------------------------
    def add(self, spec: StreamSpec) -> dict[str, Any]:
        with self._lock:
            old = self.streams.get(spec.id)
            if old is not None and old.state in ("starting", "running", "restarting"):
                raise InputError(f"stream {spec.id!r} already exists")
            load = [sum(1 for s in self.streams.values() if s.actor == k and s.state in ("starting", "running"))
                    for k in range(len(self.actors))]
        mask, palette = (None, DAVIS_PALETTE.copy())
        if spec.mask is not None:
            mask, palette = read_mask(spec.mask)
        sinks = build_sinks(spec)
        rec = _DriverStream(spec, int(np.argmin(load)), sinks, palette, mask)
        rec.info = self._start(rec, resume=None)
        with self._lock:
            self.streams[spec.id] = rec
        return self._row(rec)

    def _start(self, rec: _DriverStream, resume: Checkpoint | None) -> dict[str, Any]:
        ray = self._ray
        image = any(getattr(s, "kind", None) == "overlay" for s in rec.sinks)
        mask = rec.mask if resume is None else resume.mask()
        state = rec.snapshot if resume is not None and rec.snapshot and rec.snapshot[0] <= resume.frame_index else None
        ref = self.actors[rec.actor].add.remote(rec.spec.model_dump(), mask, None if resume is None else resume.frame_index,
                                                image, state)
        try:
            return dict(ray.get(ref, timeout=120))
        except ray.exceptions.RayActorError as err:
            raise WorkerRestarting(f"worker {rec.actor} is restarting ({type(err).__name__}); try again") from None
        except ray.exceptions.RayTaskError as err:  # the worker refused it: a bad source or prompt
            cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
            raise InputError(str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__) from None

    def remove(self, stream_id: str) -> dict[str, Any]:
        with self._lock:
            rec = self.streams.get(stream_id)
            if rec is None:
                raise KeyError(f"no stream {stream_id!r}")
        if rec.state in ("starting", "running"):
            try:
                self._ray.get(self.actors[rec.actor].remove.remote(stream_id), timeout=60)
            except self._ray.exceptions.RayError as err:
                log.warning("removing %s from its worker: %s", stream_id, err)
            rec.state = "removed"
        with self._lock:
            self.streams.pop(stream_id, None)
        self._close_sinks(rec)
        return self._row(rec)

    def reanchor(self, stream_id: str, req: ReanchorRequest) -> None:
        with self._lock:
            rec = self.streams.get(stream_id)
        if rec is None or rec.state not in ("starting", "running"):
            raise KeyError(f"no running stream {stream_id!r}")
        boxes = [(x, y, x + w, y + h) for x, y, w, h in req.boxes]
        self._ray.get(self.actors[rec.actor].reanchor.remote(stream_id, boxes, list(req.points)), timeout=60)

    def status(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            recs = list(self.streams.values())
        if stream_id is not None:
            recs = [r for r in recs if r.spec.id == stream_id]
            if not recs:
                raise KeyError(f"no stream {stream_id!r}")
        return [self._row(r) for r in recs]

    def _row(self, r: _DriverStream) -> dict[str, Any]:
        lat = sorted(r.latencies)
        rec = list(r.recent)
        fps = (len(rec) - 1) / (rec[-1] - rec[0]) if len(rec) > 1 and rec[-1] > rec[0] else None

        def q(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e3, 2) if lat else None

        from ..io.live import redact_url

        return {"id": r.spec.id, "source": redact_url(str(r.info.get("name", r.spec.source))), "state": r.state,
                "live": bool(r.info.get("live", False)), "frames": r.frames,
                "last_frame": None if r.checkpoint is None else r.checkpoint.frame_index,
                "fps": None if fps is None else round(fps, 2), "latency_p50_ms": q(50), "latency_p95_ms": q(95),
                "step_p50_ms": None, "dropped": r.dropped_base + r.dropped_now, "reconnects": 0,
                "restarts": r.restarts, "worker": r.actor, "recovery_s": [round(x, 3) for x in r.recoveries_s],
                "resumed_from": list(r.resumed_from),
                "error": r.error}

    # -- the driver loop -------------------------------------------------------------------------------------
    def run(self, until_done: bool = False, on_frame: OnFrame | None = None) -> None:
        """One polling thread per actor writes its streams' frames; this thread waits (Ctrl-C / SIGTERM land here
        and every stream's sinks are flushed before this returns or re-raises)."""
        self._until_done, self._on_frame = until_done, on_frame
        threads = [threading.Thread(target=self._poll_loop, args=(k,), name=f"rtvos-ray-{k}", daemon=True)
                   for k in range(len(self.actors))]
        for t in threads:
            t.start()
        try:
            while not self._stop.is_set():
                if until_done and not self._files_running():
                    break
                self._stop.wait(0.2)
        finally:
            self._stop.set()
            for t in threads:
                t.join(30)
            for rec in list(self.streams.values()):
                if rec.state in ("starting", "running", "restarting"):
                    rec.state = "stopped"
                self._close_sinks(rec)

    def _files_running(self) -> bool:
        with self._lock:
            return any(not r.info.get("live") and r.state in ("starting", "running", "restarting")
                       for r in self.streams.values())

    def _poll_loop(self, k: int) -> None:
        ray = self._ray
        while not self._stop.is_set():
            try:
                items = ray.get(self.actors[k].poll.remote(0.3), timeout=60)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                if self._stop.is_set():
                    return
                self._recover(k, err)
                continue
            for item in items:
                self._handle(item)

    def _recover(self, k: int, err: BaseException) -> None:
        """The actor's process died (or hangs): Ray restarts it; re-add its streams from their checkpoints."""
        failed_at = time.perf_counter()
        with self._lock:
            mine = [r for r in self.streams.values() if r.actor == k and r.state in ("starting", "running")]
        log.warning("worker %d lost (%s); re-anchoring %d stream(s) from their checkpoints", k,
                    type(err).__name__, len(mine))
        for rec in mine:
            rec.state, rec.failed_at = "restarting", failed_at
            rec.resumed_from.append(-1 if rec.checkpoint is None else rec.checkpoint.frame_index)
            rec.restarts += 1
            rec.dropped_base += rec.dropped_now
            rec.dropped_now = 0
        for rec in mine:
            while not self._stop.is_set():
                try:
                    rec.info = self._start(rec, rec.checkpoint)
                    break
                except WorkerRestarting:
                    time.sleep(0.2)  # Ray has not brought it back yet
                except Exception as e:  # the source is gone meanwhile: this stream fails alone
                    rec.state, rec.error = "failed", " ".join(str(e).split())
                    log.error("stream %s failed: %s", rec.spec.id, rec.error)
                    self._close_sinks(rec)
                    break
            if rec.state == "restarting":
                rec.state, rec.restarted_at = "running", time.perf_counter()
                if rec.info.get("live"):  # frames a camera sent while no worker was reading it
                    rec.dropped_base += int(round((time.perf_counter() - failed_at) * float(rec.info.get("fps", 0))))

    def _handle(self, item: dict[str, Any]) -> None:
        with self._lock:
            rec = self.streams.get(item["id"])
        if rec is None or rec.state in ("removed", "failed", "stopped"):
            return
        if "end" in item:
            rec.state = "failed" if item.get("error") else ("done" if item["end"] in ("done", "stopped") else item["end"])
            rec.error = item.get("error")
            if rec.error:
                log.error("stream %s failed: %s", rec.spec.id, rec.error)
            self._close_sinks(rec)
            return
        if "state" in item:  # after its frame's item: that frame is written, so the state is never ahead of it
            rec.snapshot = (int(item["frame_index"]), item["state"])
            return
        if not rec.opened:
            h, w = rec.info.get("size") or item["mask"].shape
            size = (int(h), int(w)) if h and w else tuple(int(v) for v in item["mask"].shape)
            info = StreamInfo(name=str(rec.info.get("name", rec.spec.id)), fps=float(rec.info.get("fps", 25.0)),
                              size=size, is_live=bool(rec.info.get("live")), palette=rec.palette)  # type: ignore[arg-type]
            for s in rec.sinks:
                s.open(info)
            rec.opened = True
        from ..segmenter import StepResult

        mask = np.asarray(item["mask"])
        image = item["image"] if item["image"] is not None else np.zeros((*mask.shape, 3), np.uint8)
        ids = (0, *item["ids"])
        step = StepResult(mask=mask, frame_index=item["frame_index"], object_ids=ids, timings_ms=dict(item["timings"]),
                          anchored=item["anchored"])
        frame = Frame(source_index=item["source_index"], image=image, pts_s=item["pts"], captured_s=item["captured"])
        out = SegmentedFrame(frame_index=item["frame_index"], frame=frame, mask=mask, step=step, palette=rec.palette,
                             captured_s=item["captured"], dropped=rec.dropped_base + item["dropped"],
                             stages_ms=dict(item["timings"]))
        try:
            for s in rec.sinks:
                if not s.runs_last:
                    s.write(out)
            out.output_s = time.time()
            for s in rec.sinks:
                if s.runs_last:
                    s.write(out)
        except Exception as err:  # a full disk: this stream fails alone
            rec.state, rec.error = "failed", " ".join(str(err).split())
            log.error("stream %s failed: %s", rec.spec.id, rec.error)
            try:
                self._ray.get(self.actors[rec.actor].remove.remote(rec.spec.id), timeout=30)
            except Exception:
                pass
            self._close_sinks(rec)
            return
        rec.checkpoint = Checkpoint.of(item["frame_index"], mask, tuple(item["ids"]))  # after the write: exactly once
        if rec.state == "starting":
            rec.state = "running"
        rec.frames += 1
        rec.dropped_now = int(item["dropped"])
        now = time.perf_counter()
        rec.recent.append(now)
        rec.latencies.append(max(0.0, time.time() - item["captured"]))
        if self.keep_frame_numbers:
            rec.frame_numbers.append(item["frame_index"])
        if rec.failed_at is not None:
            rec.recoveries_s.append(now - rec.failed_at)
            rec.recovery_marks.append((rec.failed_at, rec.restarted_at or now, now))
            rec.failed_at = None
        if self._on_frame is not None:
            self._on_frame(rec.spec.id, rec.latencies[-1])

    def _close_sinks(self, rec: _DriverStream) -> None:
        sinks, rec.sinks = rec.sinks, []
        if not rec.opened:
            return
        for s in sinks:
            try:
                s.close()
            except Exception as err:
                rec.error = rec.error or " ".join(str(err).split())
                log.error("stream %s: closing %s: %s", rec.spec.id, s.name, err)

    def pids(self) -> list[int]:
        """The actors' process ids (tests and benchmarks kill them)."""
        return [int(p) for p in self._ray.get([a.pid.remote() for a in self.actors], timeout=120)]

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        for rec in list(self.streams.values()):
            self._close_sinks(rec)
        for a in self.actors:
            try:
                self._ray.kill(a)
            except Exception:
                pass
        self.actors = []
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

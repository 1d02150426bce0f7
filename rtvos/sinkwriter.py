"""The pipeline's writer: every sink, in order, on one thread fed by a bounded queue (or on the caller's thread,
sequential mode), and the run's counters (:class:`RunStats`) it records as each frame's sinks finish.

The writer keeps the first error (a sink's, or closing one) for the loop to raise after the flush; a sink that
raises :class:`StopPipeline` is dropped from the run and the loop is asked to stop, while the frames already
segmented still reach every other sink. Sinks are closed once, whatever happened, so their files stay valid.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .common import stage_order
from .io.sinks import SegmentedFrame, Sink, StopPipeline, StreamInfo, close_sinks
from .reader import put_while
from .stats import Reservoir

__all__ = ["RunStats", "SinkWriter"]


class RunStats:
    """Counters of one run, updated by the writer thread and read by the others (status line, live view)."""

    RECENT = 64  # output times kept for the running fps

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.frames = 0
        self.latency_ms = Reservoir(capacity, seed)
        self.step_ms = Reservoir(capacity, seed + 1)
        self.stage_sum_ms: dict[str, float] = {}
        self.stage_count: dict[str, int] = {}
        self.stage_res: dict[str, Reservoir] = {}  # per-stage sample, for percentiles (rtvos bench)
        self._capacity, self._seed = capacity, seed
        self.recent: deque[float] = deque(maxlen=self.RECENT)
        self.last_latency_ms: float | None = None
        self.dropped = 0
        self.reconnects = 0
        self.first_out: float | None = None
        self.last_out: float | None = None
        self._live: dict[str, Any] = {}
        self._live_at = 0.0

    def record(self, item: SegmentedFrame) -> None:
        now = time.perf_counter()
        with self._lock:
            self.frames += 1
            latency = item.latency_ms
            if latency is not None:
                self.latency_ms.add(latency)
                self.last_latency_ms = latency
            self.step_ms.add(item.step_ms)
            for key, ms in item.stages_ms.items():
                self.stage_sum_ms[key] = self.stage_sum_ms.get(key, 0.0) + ms
                self.stage_count[key] = self.stage_count.get(key, 0) + 1
                res = self.stage_res.get(key)
                if res is None:
                    res = self.stage_res[key] = Reservoir(self._capacity, self._seed + 2 + len(self.stage_res))
                res.add(ms)
            self.recent.append(now)
            self.dropped = max(self.dropped, item.dropped)
            self.first_out = now if self.first_out is None else self.first_out
            self.last_out = now

    def figures(self) -> dict[str, Any]:
        """Frames written and the latency/step percentiles so far, read together under the lock (the summary)."""
        with self._lock:
            return {"frames": self.frames, "latency_p50_ms": self.latency_ms.percentile(50),
                    "latency_p95_ms": self.latency_ms.percentile(95), "step_p50_ms": self.step_ms.percentile(50),
                    "step_p95_ms": self.step_ms.percentile(95)}

    def fps_recent(self) -> float | None:
        with self._lock:
            if len(self.recent) < 2 or self.recent[-1] <= self.recent[0]:
                return None
            return (len(self.recent) - 1) / (self.recent[-1] - self.recent[0])

    def live(self, max_age_s: float = 0.5) -> dict[str, Any]:
        """Running stats for viewers, recomputed at most every ``max_age_s`` (percentiles are not free)."""
        now = time.perf_counter()
        if now - self._live_at >= max_age_s or not self._live:
            fps = self.fps_recent()
            with self._lock:
                p50, p95 = self.latency_ms.percentile(50), self.latency_ms.percentile(95)
                self._live = {
                    "fps": None if fps is None else round(fps, 2),
                    "latency_ms": None if self.last_latency_ms is None else round(self.last_latency_ms, 1),
                    "latency_p50_ms": None if p50 is None else round(p50, 1),
                    "latency_p95_ms": None if p95 is None else round(p95, 1),
                    "frames": self.frames,
                    "dropped": self.dropped,
                    "reconnects": self.reconnects,
                }
            self._live_at = now
        return self._live

    def stage_means(self) -> dict[str, float]:
        """Mean ms per frame that ran the stage, in pipeline order (decode, model stages, then the sinks).

        Stages that ran on under half the frames (the anchor frame's lone `embed` under a fused backend) are
        left out: their mean is not a per-frame cost."""
        with self._lock:
            keys = stage_order(k for k, n in self.stage_count.items() if 2 * n >= self.frames)
            return {k: self.stage_sum_ms[k] / self.stage_count[k] for k in keys}

    def stage_percentiles(self, qs: Sequence[float] = (50, 95, 99)) -> dict[str, dict[str, float]]:
        """Per stage (same selection and order as :meth:`stage_means`): mean and the ``qs`` percentiles in ms,
        as ``{"mean_ms": .., "p50_ms": .., ...}``, estimated from each stage's reservoir sample."""
        means = self.stage_means()
        with self._lock:
            out: dict[str, dict[str, float]] = {}
            for k, mean in means.items():
                row = {"n": float(self.stage_count[k]), "mean_ms": mean}
                for q in qs:
                    row[f"p{q:g}_ms"] = self.stage_res[k].percentile(q) or 0.0
                out[k] = row
            return out



class SinkWriter:
    """Runs ``sinks`` on frames handed over with :meth:`put`: on a writer thread behind a bounded queue
    (``threaded``), else inline. ``on_stop(reason)`` is called when a sink asks the run to end, ``on_error()``
    when one fails (the loop may be waiting on a live source: it is woken)."""

    def __init__(self, sinks: Sequence[Sink], stats: RunStats, *, on_stop: Callable[[str], None],
                 on_error: Callable[[], None] = lambda: None,
                 queue_size: int = 8, threaded: bool = True, poll_s: float = 0.1,
                 name: str = "rtvos-writer") -> None:
        self.sinks = list(sinks)
        self.stats = stats
        self.threaded = threaded
        self.poll_s = poll_s
        self.queue: queue.Queue[SegmentedFrame | None] = queue.Queue(maxsize=queue_size)
        self.peak = 0
        self.error: BaseException | None = None  # the first failure: a sink's write, open or close
        self.hurry = threading.Event()  # skip the frames still queued (a second Ctrl-C during the flush)
        self.skipped = 0
        self._on_stop = on_stop
        self._on_error = on_error
        self._opened: list[Sink] = []
        self._active: list[Sink] = []  # written in order ...
        self._last: list[Sink] = []  # ... then these (runs_last: they see every other sink's time)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._closed = False
        self._info: StreamInfo | None = None

    def open(self, info: StreamInfo) -> None:
        """Open every sink (on the writer thread when threaded) before anything is decoded, so a bad output
        path fails first; raises that failure."""
        if not self.threaded:
            try:
                self._open(info)
            except BaseException as err:
                self.error = err
                raise
            return
        self._info = info
        self._thread.start()
        while not self._ready.wait(self.poll_s):
            pass
        if self.error is not None:
            raise self.error

    def put(self, item: SegmentedFrame) -> None:
        """Hand a segmented frame to the sinks; a frame already segmented is written even after a stop."""
        if not self.threaded:
            self._write(item)
            return
        if put_while(self.queue, item, lambda: self.error is None, self.poll_s):
            self.peak = max(self.peak, self.queue.qsize())

    def finish(self) -> None:
        """Write what is queued (all of it, unless :attr:`hurry` is set), then close every sink."""
        if not self.threaded:
            self._close()
            return
        if self._thread.ident is None:
            self._close()
            return
        put_while(self.queue, None, self._thread.is_alive, self.poll_s)  # the end mark, unless it has died
        self._thread.join()

    # -- internals ---------------------------------------------------------------------------------------------
    def _open(self, info: StreamInfo) -> None:
        for sink in self.sinks:
            sink.open(info)
            self._opened.append(sink)
        self._active = [s for s in self._opened if not s.runs_last]
        self._last = [s for s in self._opened if s.runs_last]

    def _write(self, item: SegmentedFrame) -> None:
        """Every sink in turn (viewers and encoders, then the ``runs_last`` ones such as the log)."""
        item.live = self.stats.live()
        for sink in list(self._active):
            try:
                sink.write(item)
            except StopPipeline as stop:  # the other sinks keep getting the frames already segmented
                self._active.remove(sink)
                self._on_stop(str(stop) or f"{sink.name} asked to stop")
        item.output_s = time.time()
        for sink in self._last:
            sink.write(item)
        self.stats.record(item)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        err = close_sinks(self._opened)
        if self.error is None:
            self.error = err

    def _loop(self) -> None:
        try:
            assert self._info is not None
            self._open(self._info)
            self._ready.set()
            while (item := self.queue.get()) is not None:
                if self.hurry.is_set():
                    self.skipped += 1
                    continue
                self._write(item)
        except BaseException as err:  # the loop stops putting once it sees it
            self.error = err
            self._on_error()
        finally:
            self._ready.set()
            self._close()

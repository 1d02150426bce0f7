"""Many streams in one process: `MultiTracker` runs N sources through ONE loaded model, round-robin.

    multi = rtvos.MultiTracker(model="default")
    multi.add("cam1", "rtsp://127.0.0.1:8554/cam1", mask="cam1_first.png", sinks=[MaskSink("out/cam1")])
    multi.add("cam2", "clip.mp4", boxes=[(120, 40, 320, 340)])
    for stream_id, result in multi:        # (str, rtvos.Result), one frame of one stream at a time
        ...
    multi.remove("cam1")                   # any time, from any thread: its source closes, its sinks flush

A file stream is read ahead on its own thread; a camera (`LiveSource`) is polled from the loop and keeps only its
newest frame itself (its policy is the one drop counter); each stream writes through its own `SinkWriter` (its
sinks, on a writer thread, as `rtvos.track` runs them) and has its own `Segmenter` whose
`SegmenterState` (t−1 embedding, scores, ids) is the stream's whole model state. The network weights are loaded
once and every stream's Segmenter uses that one model object; network backends (ONNX sessions, compiled units)
are shared between streams of the same input shape through the Segmenter's public ``backend`` setter. Each
stream's `Segmenter.step` (DIS, network, propagation, appearance: all of it releases the GIL in OpenCV, ONNX
Runtime or torch) runs on ONE worker pool shared by every stream, at most one step in flight per stream, so a
stream's frames stay in order while different streams use different cores; the iterating thread hands out the
steps round-robin (a fast stream cannot starve a slow one) and yields each stream's results in its order. A
stream whose source or sinks fail ends alone, with one error line; the others go on.

``resume_after`` re-anchors a stream from a checkpoint (what the Ray engine's recovery uses): a file stream
skips to the frame after the last one emitted and continues from that frame's mask, numbering frames as before.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .common import one_line
from .io.base import Frame, FrameSource, InputError
from .io.live import LiveSource, redact_url
from .io.masks import DAVIS_PALETTE, check_mask_size
from .io.pace import PacedSource
from .io.prompt import MaskLike, first_mask
from .io.sinks import SegmentedFrame, Sink, StreamInfo
from .io.source import SourceLike, as_source
from .pipeline import FirstMask
from .reader import Decoded, End, put_while
from .results import Result
from .segmenter import Segmenter, StepResult
from .sinkwriter import RunStats, SinkWriter
from .stats import Timer
from .track import build_segmenter

__all__ = ["MultiTracker", "StreamStatus", "STREAM_STATES"]

log = logging.getLogger("rtvos")

#: A stream's life: starting (added, no frame yet), running, then done (its source ended, max_frames, a sink's
#: stop), stopped (the tracker stopped first), failed (its source, prompt or sinks raised; ``error`` says why, in
#: one line) or removed.
STREAM_STATES = ("starting", "running", "done", "stopped", "failed", "removed")


@dataclass(frozen=True)
class StreamStatus:
    """One stream's figures, as the service's status page and /metrics show them."""

    id: str
    source: str
    state: str
    live: bool
    frames: int  # frames every sink handled
    last_frame: int | None  # number of the last frame emitted (file streams: the source's frame index)
    fps: float | None  # recent output rate
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    step_p50_ms: float | None
    dropped: int  # frames lost before the model: by the source (live) + replaced by a newer one
    reconnects: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Stream:
    """Everything one stream owns: source, prompt, sinks, Segmenter (its state), queues, threads and counters."""

    def __init__(self, sid: str, source: FrameSource, segmenter: Segmenter, sinks: Sequence[Sink], first: FirstMask,
                 palette: np.ndarray, *, max_frames: int | None, resume_after: int | None,
                 stats_capacity: int, on_frame: Callable[[], None], pace: bool = False,
                 restore: tuple[int, bytes] | None = None) -> None:
        self.id = sid
        self.source = source
        self.segmenter = segmenter
        self.sinks = list(sinks)
        self.first: FirstMask | None = first
        self.palette = palette
        self.max_frames = max_frames
        self.is_live = bool(source.is_live)
        self.resume_after = resume_after
        if pace and not self.is_live:  # frames up to a resumed stream's checkpoint are replayed, not paced
            self.source = PacedSource(source, unpaced=0 if resume_after is None else resume_after + 1)
        # A file resumed from a Segmenter snapshot of frame j <= k (k = resume_after): frames j+1..k are stepped
        # again, silently, from the snapshot, so frame k+1 continues the uninterrupted run's state exactly.
        self.restore = None if self.is_live or resume_after is None else restore
        self.silent_left = 0 if resume_after is None or self.is_live else (
            1 if self.restore is None else resume_after - self.restore[0])
        self.next_n = 0 if resume_after is None else resume_after + 1
        self.emitted = 0
        self.stats = RunStats(stats_capacity)
        # A LiveSource keeps its newest frame itself (its policy is the one place that drops frames and counts
        # the drops): the loop polls it, woken by the source on each frame. Files and other sources are read
        # ahead on the stream's reader thread into a small queue.
        self.polled = self.is_live and isinstance(source, LiveSource)
        self.inq: queue.Queue[Decoded | End] = queue.Queue(maxsize=4)
        self.ready_ns = time.perf_counter_ns()  # when the model was last free for this stream (a live frame's wait)
        self.state = "starting"
        self.error: str | None = None
        self.reconnects = 0
        self.source_dropped = 0
        self.stop_reader = threading.Event()
        self.remove_requested = False
        self.finished = threading.Event()
        self.writer_stop: str | None = None  # a sink raised StopPipeline
        self.reanchor: FirstMask | None = None
        self.job: Future[StepResult] | None = None  # the step in flight on the worker pool (at most one)
        self.job_item: Decoded | None = None
        self.job_silent = False  # a resumed file's frames up to its checkpoint: stepped again, not emitted
        self.lock = threading.Lock()
        self._on_frame = on_frame
        self.reader = threading.Thread(target=self._read_loop, name=f"rtvos-{sid}-reader", daemon=True)
        # The same writer as `rtvos.track`: the sinks on their own thread behind a bounded queue, first error kept.
        self.writer = SinkWriter(self.sinks, self.stats, on_stop=self._sink_stopped, on_error=on_frame,
                                 name=f"rtvos-{sid}-writer")

    # -- reader thread ---------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        end = End()
        it: Iterator[Frame] | None = None
        try:
            it = iter(self.source)
            clock = Timer()
            skip = 0 if self.is_live or self.resume_after is None else (
                self.resume_after if self.restore is None else self.restore[0] + 1)
            read = 0
            resumed = 0 if self.resume_after is None else self.resume_after + 1
            limit = None if self.is_live or self.max_frames is None else self.max_frames + resumed
            while not self.stop_reader.is_set() and (limit is None or read < limit):
                clock.start()
                try:
                    frame = next(it)
                except StopIteration:
                    break
                read += 1
                if skip:  # resuming a file: frames before the checkpoint's were already emitted
                    skip -= 1
                    continue
                decode_ms = clock.lap("decode")  # a paced file: the wait for the frame's time, as for a camera
                st = self._source_stats()
                self.reconnects, self.source_dropped = st["reconnects"], st["dropped"]
                captured = time.time() if frame.captured_s is None else float(frame.captured_s)
                self._offer(Decoded(frame, captured, decode_ms, st["dropped"]))
        except BaseException as err:  # reported as this stream's error; the other streams go on
            end = End(error=err)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as err:
                    log.debug("closing %s: %s", self.id, err)
            self._offer(end)

    def _source_stats(self) -> dict[str, int]:
        try:
            s = self.source.stats()
        except Exception:
            return {"dropped": self.source_dropped, "reconnects": self.reconnects}
        return {"dropped": int(s.get("dropped", 0)), "reconnects": int(s.get("reconnects", 0))}

    def _offer(self, item: Decoded | End) -> None:
        # The end is always delivered (`finish` drains the queue meanwhile); frames stop with the reader.
        if put_while(self.inq, item, lambda: isinstance(item, End) or not self.stop_reader.is_set(), 0.05):
            self._on_frame()

    def take(self) -> Decoded | End | None:
        """The stream's next frame for the model, or None when none is ready (never blocks)."""
        if not self.polled:
            try:
                return self.inq.get_nowait()
            except queue.Empty:
                return None
        try:
            frame = cast(LiveSource, self.source).poll()
        except StopIteration:
            return End()
        except BaseException as err:  # the camera was lost for good: this stream's error
            return End(error=err)
        if frame is None:
            return None
        wait_ms = (time.perf_counter_ns() - self.ready_ns) / 1e6
        st = self._source_stats()
        self.reconnects, self.source_dropped = st["reconnects"], st["dropped"]
        captured = time.time() if frame.captured_s is None else float(frame.captured_s)
        return Decoded(frame, captured, wait_ms, st["dropped"])

    # -- writer --------------------------------------------------------------------------------------------------
    def open_sinks(self) -> None:
        """Open the stream's sinks (on its writer thread) before any frame is read: a bad output fails the add."""
        self.writer.open(StreamInfo(name=str(self.source.name), fps=float(self.source.fps or 25.0),
                                    size=tuple(self.source.size), is_live=self.is_live,  # type: ignore[arg-type]
                                    palette=self.palette))

    @property
    def writer_error(self) -> BaseException | None:
        return self.writer.error

    def _sink_stopped(self, reason: str) -> None:
        self.writer_stop = reason
        self._on_frame()

    def finish(self, error: BaseException | None, state: str) -> None:
        """Stop the reader, flush and close the sinks, set the final state (idempotent; model thread only)."""
        if self.finished.is_set():
            return
        if self.job is not None:  # the Segmenter is reset below: let its step end first
            wait_all([self.job])
            self.job = self.job_item = None
        self.stop_reader.set()
        if self.is_live:
            _close_quietly(self.source)  # a live source's iterator only wakes when closed
        while self.reader.is_alive():
            try:
                self.inq.get(timeout=0.05)  # unblock a reader waiting on a full queue
            except queue.Empty:
                pass
        _close_quietly(self.source)
        self.writer.finish()
        error = error or self.writer.error
        if error is not None:
            self.state, self.error = "failed", one_line(error)
            log.error("stream %s failed: %s", self.id, self.error)
        else:
            self.state = state
        self.segmenter.reset()  # drop the per-stream arrays now; the record itself may be kept for status
        self.segmenter.close()
        self.sinks, self.first, self.reanchor, self.restore = [], None, None, None
        self.finished.set()

    def status(self) -> StreamStatus:
        live = self.stats.live(max_age_s=0.0)
        figures = self.stats.figures()
        p50, p95, s50, frames = (figures[k] for k in ("latency_p50_ms", "latency_p95_ms", "step_p50_ms", "frames"))

        return StreamStatus(
            id=self.id, source=redact_url(str(self.source.name)), state=self.state, live=self.is_live, frames=frames,
            last_frame=None if self.emitted == 0 else self.next_n - 1, fps=live["fps"],
            latency_p50_ms=None if p50 is None else round(p50, 2),
            latency_p95_ms=None if p95 is None else round(p95, 2),
            step_p50_ms=None if s50 is None else round(s50, 2),
            dropped=self.source_dropped, reconnects=self.reconnects, error=self.error)


def _close_quietly(source: FrameSource) -> None:
    try:
        source.close()
    except Exception as err:
        log.warning("rtvos: closing %s: %s", source.name, err)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _IntraOpThreads:
    """torch's and OpenCV's per-call thread counts, set while iterating and restored after (ONNX sessions built
    meanwhile follow torch's count). Pool workers × intra-op threads above the core count oversubscribes the
    CPU: every step waits on the others' threads; below it, a lone stream leaves cores idle."""

    def __init__(self) -> None:
        self.current: int | None = None
        self._saved: tuple[int, int] | None = None

    def apply(self, n: int | None) -> None:
        if n is None or n == self.current:
            return
        import cv2
        import torch

        if self._saved is None:
            self._saved = (torch.get_num_threads(), cv2.getNumThreads())
        torch.set_num_threads(n)
        cv2.setNumThreads(n)
        self.current = n

    def restore(self) -> None:
        if self._saved is not None:
            import cv2
            import torch

            torch.set_num_threads(self._saved[0])
            cv2.setNumThreads(self._saved[1])
        self._saved, self.current = None, None


class MultiTracker:
    """N streams through one model, their steps on one shared worker pool; iterate for ``(stream_id, Result)``.

    ``model``: "default", a registered name, a checkpoint path or a loaded model (loaded once, here, and used by
    every stream), or ``segmenter_factory``, a function returning a new `Segmenter` per stream (they should
    share one model object). The other model options are `rtvos.track`'s. ``workers``: steps run at once, on
    different streams (default: the usable cores on CPU, 1 on an accelerator, whose backends are not
    re-entrant); ``threads``: torch/OpenCV/ONNX threads per step while iterating (default: cores // workers,
    so workers × threads never exceeds the cores; 0 leaves the process's settings alone). ``batch``: the
    network embeddings of streams with one input shape that step at the same time run as one forward
    (`rtvos.batching`; a network model on the eager or onnx backend; off by default: it did not win on CPU).
    ``keep_alive`` keeps iteration going when no stream is left (a service waits for streams to be added);
    otherwise it ends with the last stream. `add`, `remove`, `reanchor`, `status` and `stop` are thread-safe.
    """

    def __init__(self, model: Any = "default", *, size: int | None = None, device: str = "auto",
                 backend: str = "auto", precision: str = "fp32", propagation: str = "soft",
                 mask_resolution: str = "full", appearance: str | None = None,
                 segmenter_factory: Callable[[], Segmenter] | None = None,
                 keep_alive: bool = False, stats_capacity: int = 512, poll_s: float = 0.05,
                 on_end: Callable[[StreamStatus], None] | None = None, workers: int | None = None,
                 threads: int | None = None, batch: bool = False) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InputError(f"workers must be an integer >= 1, got {workers!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise InputError(f"threads must be an integer >= 0 (0: leave the process's settings), got {threads!r}")
        if segmenter_factory is None:
            from .models import load_model

            net = load_model(model) if isinstance(model, (str, os.PathLike)) else model

            def segmenter_factory() -> Segmenter:  # a new Segmenter (stream state) around the one model object
                return cast(Segmenter, build_segmenter(net, size=size, device=device, backend=backend, precision=precision,
                                                  propagation=propagation, mask_resolution=mask_resolution,
                                                  appearance=appearance))

        self._factory = segmenter_factory
        self._workers, self._threads, self._batch = workers, threads, bool(batch)
        self.keep_alive = keep_alive
        self.stats_capacity = stats_capacity
        self.poll_s = poll_s
        self.on_end = on_end
        self._backends: dict[tuple[int, int], Any] = {}  # network input (h, w) → the one backend for that shape
        self._streams: dict[str, _Stream] = {}  # running and starting, in round-robin order
        self._ended: dict[str, _Stream] = {}  # finished streams, kept for status until removed or re-added
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._iterating = False
        self._model_thread: int | None = None
        self._pool: ThreadPoolExecutor | None = None  # built at the first step (its size depends on the device)

    # -- control (any thread) --------------------------------------------------------------------------------
    def add(self, stream_id: str, source: SourceLike, *, mask: MaskLike | None = None,
            boxes: Sequence[Sequence[int]] | None = None, points: Sequence[Sequence[int]] | None = None,
            sinks: Sequence[Sink] = (), palette: np.ndarray | None = None, max_frames: int | None = None,
            policy: str | None = None, transport: str | None = None, fps: float | None = None, bgr: bool = False,
            resume_after: int | None = None, pace: bool = False, state: tuple[int, bytes] | None = None) -> None:
        """Add a stream (starts at once, also while iterating). Prompt and source are `rtvos.track`'s; a bad one
        raises `InputError` here. ``resume_after=k`` (with ``mask`` = frame k's mask): the stream continues at
        frame k+1, re-anchored on frame k (files skip frames 0..k−1; live sources anchor their next frame).
        ``pace`` replays a file at its frame rate, as a camera would send it (demos, tests, load tests).
        ``state=(j, snapshot)`` with ``resume_after=k`` (j <= k; `snapshot` of frame j): a file stream restores the
        Segmenter's state of frame j and steps frames j+1..k again without emitting them, so it continues as if
        never stopped (live sources cannot replay: they re-anchor on ``mask``)."""
        sid = str(stream_id)
        if not sid or len(sid) > 64 or not all(c.isalnum() or c in "-_." for c in sid):
            raise InputError(f"stream id must be 1-64 characters of letters, digits, '-', '_' or '.', got {sid!r}")
        if max_frames is not None and max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {max_frames}")
        if resume_after is not None and (resume_after < 0 or mask is None):
            raise InputError("resume_after needs a frame number >= 0 and that frame's mask=")
        if state is not None and (resume_after is None or not 0 <= int(state[0]) <= resume_after):
            raise InputError(f"state=(j, snapshot) needs resume_after=k with 0 <= j <= k, got j={state[0]}, "
                             f"k={resume_after}")
        with self._lock:
            if sid in self._streams:
                raise InputError(f"stream {sid!r} already exists")
        first: FirstMask
        if resume_after is not None and isinstance(mask, np.ndarray) and not mask.any():
            first, own_palette = mask.astype(np.uint8), DAVIS_PALETTE.copy()  # every object lost by then: still a state
        else:
            first, own_palette = first_mask(mask, boxes, points)
        pal = own_palette if palette is None else np.asarray(palette, dtype=np.uint8)
        src = as_source(source, bgr=bgr, fps=fps, policy=policy, transport=transport)
        rec: _Stream | None = None
        try:
            if isinstance(first, np.ndarray) and src.size[0] > 0:
                check_mask_size(first, src.size, "mask", str(src.name))
            seg = self._factory()
            if self._batch and not seg.has_network:
                raise InputError(f"batch=True batches a network's forward; model {seg.describe()!r} has no network")
            rec = _Stream(sid, src, seg, sinks, first, pal, max_frames=max_frames,
                          resume_after=resume_after, stats_capacity=self.stats_capacity, on_frame=self._wake.set,
                          pace=pace, restore=state)
            rec.open_sinks()
        except BaseException:
            if rec is not None:
                rec.writer.finish()
                rec.segmenter.close()
            src.close()
            raise
        with self._lock:
            if sid in self._streams:
                rec.writer.finish()
                rec.segmenter.close()
                src.close()
                raise InputError(f"stream {sid!r} already exists")
            if not self._iterating and src.size[0] > 0:
                # Nobody runs the model yet: build the backend now (under the lock, so iteration waits for it),
                # before the reader starts, so an export is not counted in the first frames' latency.
                settings = _IntraOpThreads()
                try:
                    settings.apply(self._intra_threads(seg, len(self._streams) + 1))
                    self._share_backend(seg, tuple(src.size))  # type: ignore[arg-type]
                except BaseException:
                    rec.writer.finish()
                    src.close()
                    raise
                finally:
                    settings.restore()
            self._ended.pop(sid, None)
            self._streams[sid] = rec
        if rec.polled:
            cast(LiveSource, rec.source).add_listener(self._wake.set)
        else:
            rec.reader.start()
        self._wake.set()

    def remove(self, stream_id: str, timeout: float | None = 30.0) -> StreamStatus:
        """End a stream and forget it: its source closes and its sinks are flushed before this returns (called
        from the iterating thread itself, at its next pass). Unknown ids raise `KeyError`."""
        with self._lock:
            rec = self._streams.get(stream_id)
            if rec is None:
                ended = self._ended.pop(stream_id, None)
                if ended is None:
                    raise KeyError(f"no stream {stream_id!r}")
                return ended.status()
            rec.remove_requested = True
            iterating, own_thread = self._iterating, threading.get_ident() == self._model_thread
            if not iterating:
                self._streams.pop(stream_id, None)
        self._wake.set()
        if not iterating:
            rec.finish(None, "removed")
        elif not own_thread:
            rec.finished.wait(timeout)
        return rec.status()

    def reanchor(self, stream_id: str, *, mask: MaskLike | None = None, boxes: Sequence[Sequence[int]] | None = None,
                 points: Sequence[Sequence[int]] | None = None) -> None:
        """Replace the stream's propagated mask at its next frame (a mask array, or boxes/points drawn on it)."""
        first, _ = first_mask(mask, boxes, points)
        with self._lock:
            rec = self._streams.get(stream_id)
        if rec is None:
            raise KeyError(f"no running stream {stream_id!r}")
        with rec.lock:
            rec.reanchor = first

    def source(self, stream_id: str) -> FrameSource:
        """The stream's source (its name, fps, size, is_live); unknown ids raise KeyError."""
        with self._lock:
            rec = self._streams.get(stream_id) or self._ended.get(stream_id)
        if rec is None:
            raise KeyError(f"no stream {stream_id!r}")
        return rec.source

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._streams) + [k for k in self._ended if k not in self._streams]

    def status(self, stream_id: str | None = None) -> list[StreamStatus]:
        """Every stream's status (running first, then ended ones), or one stream's; unknown ids raise KeyError."""
        with self._lock:
            recs = list(self._streams.values()) + [r for k, r in self._ended.items() if k not in self._streams]
        if stream_id is not None:
            recs = [r for r in recs if r.id == stream_id]
            if not recs:
                raise KeyError(f"no stream {stream_id!r}")
        return [r.status() for r in recs]

    def stop(self) -> None:
        """End iteration at the next pass; every stream's source is closed and its sinks flushed."""
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        """End every stream now (when not iterating) or at the next pass (while iterating)."""
        self.stop()
        with self._lock:
            if self._iterating:
                return
            recs = list(self._streams.values())
            self._streams.clear()
        for rec in recs:
            rec.finish(None, "removed")

    def __enter__(self) -> MultiTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the model thread ------------------------------------------------------------------------------------
    def _pool_size(self, seg: Segmenter | None) -> int:
        if self._workers is not None:
            return self._workers
        if seg is not None and seg.device.type != "cpu":
            return 1  # one accelerator: CUDA graphs and compiled units are not re-entrant
        return usable_cores()

    def _intra_threads(self, seg: Segmenter | None, streams: int) -> int | None:
        """Threads per step: the cores shared by the steps that can run at once (min(workers, streams))."""
        if self._threads == 0:
            return None
        if self._threads is not None:
            return self._threads
        if seg is not None and seg.device.type != "cpu":
            return None
        return max(1, usable_cores() // max(1, min(self._pool_size(seg), streams)))

    def _share_backend(self, seg: Segmenter, frame_hw: tuple[int, int]) -> None:
        """One backend per network input shape for all streams (the export/session is the big allocation)."""
        hw = seg.input_size(frame_hw)
        shared = self._backends.get(hw)
        if shared is not None:
            seg.backend = shared
            return
        built = seg.prepare(frame_hw)
        if built is not None and self._batch:
            from .batching import BATCHABLE, BatchingBackend

            if built.name not in BATCHABLE:
                raise InputError(f"batch=True needs the eager or onnx backend, not {built.name!r}")
            built = BatchingBackend(built, max_batch=self._pool_size(seg))
            built.prepare()  # here, with no step in flight (see _submit)
            seg.backend = built
        if built is not None:
            self._backends[hw] = built

    def __iter__(self) -> Iterator[tuple[str, Result]]:
        with self._lock:
            if self._iterating:
                raise RuntimeError("a MultiTracker is iterated by one thread at a time")
            self._iterating = True
            self._model_thread = threading.get_ident()
        settings = _IntraOpThreads()  # set with the pool, changed with the number of streams, restored at the end
        self._pool = None
        try:
            yield from self._loop(settings)
        finally:
            with self._lock:
                recs = list(self._streams.values())
                self._streams.clear()
            for rec in recs:
                rec.finish(None, "removed" if rec.remove_requested else "stopped")
                self._ended_add(rec)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            settings.restore()
            with self._lock:
                self._iterating = False
                self._model_thread = None

    def _ended_add(self, rec: _Stream) -> None:
        if rec.state != "removed":
            with self._lock:
                self._ended[rec.id] = rec
                # Ended streams stay visible in status (done/failed), a bounded number of them.
                while len(self._ended) > 64:
                    self._ended.pop(next(iter(self._ended)))
        if self.on_end is not None:
            self.on_end(rec.status())

    def _end(self, rec: _Stream, error: BaseException | None, state: str) -> None:
        # Finished while still listed: a Ctrl-C or SIGTERM landing in the flush leaves the stream to the loop's
        # own clean-up (finish is idempotent), so its outputs are flushed and it stays in status, never lost.
        rec.finish(error, state)
        with self._lock:
            self._streams.pop(rec.id, None)
        self._ended_add(rec)

    def _loop(self, settings: _IntraOpThreads) -> Iterator[tuple[str, Result]]:
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                recs = list(self._streams.values())
            if not recs and not self.keep_alive:
                return
            progressed = False
            for rec in recs:  # round-robin: at most one step per stream in flight, handed out in stream order
                if self._stop.is_set():
                    return
                if rec.job is not None:
                    if not rec.job.done():
                        continue
                    progressed = True
                    out = self._collect(rec)
                    if out is not None:
                        rec.writer.put(out)
                        yield rec.id, Result(out)
                        if rec.max_frames is not None and rec.emitted >= rec.max_frames:
                            self._end(rec, None, "done")
                            continue
                    elif rec.finished.is_set():
                        continue
                if rec.remove_requested:
                    self._end(rec, None, "removed")
                    continue
                if rec.writer_error is not None or rec.writer_stop is not None:
                    self._end(rec, rec.writer_error, "done")
                    continue
                item = rec.take()
                if item is None:
                    continue
                progressed = True
                if isinstance(item, End):
                    self._end(rec, item.error, "done")
                    continue
                try:
                    self._submit(rec, item, settings)
                except Exception as err:  # a bad prompt, a frame of another size: this stream only
                    self._end(rec, err, "failed")
            if not progressed:
                self._wake.wait(self.poll_s)

    def _submit(self, rec: _Stream, item: Decoded, settings: _IntraOpThreads) -> None:
        """Resolve the frame's prompt here (prompts may be callables; backends are built here), then hand the
        stream's step to the pool."""
        frame = item.frame
        mask: np.ndarray | None
        if rec.first is not None:
            mask = self._resolve(rec, frame, rec.first)
            rec.first = None
            hw = frame.image.shape[:2]
            if rec.segmenter.has_network and rec.segmenter.input_size(hw) not in self._backends:  # type: ignore[arg-type]
                # An export traces the model the other streams' steps are running: let them finish first.
                self._drain()
            # Backends are built and shared on this thread only.
            self._share_backend(rec.segmenter, hw)  # type: ignore[arg-type]
            if rec.restore is not None:
                rec.segmenter.restore(rec.restore[1])
                mask, rec.restore = None, None
            rec.state = "running"
        else:
            with rec.lock:
                pending, rec.reanchor = rec.reanchor, None
            mask = None if pending is None else self._resolve(rec, frame, pending)
        with self._lock:
            streams = len(self._streams)
        want = self._intra_threads(rec.segmenter, streams)
        if want is not None and want != settings.current:
            self._drain()  # streams came or went: no step runs while the thread counts change
            settings.apply(want)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._pool_size(rec.segmenter), thread_name_prefix="rtvos-step")
        rec.job_item, rec.job_silent = item, rec.silent_left > 0  # frames up to k again: already emitted
        rec.silent_left = max(0, rec.silent_left - 1)
        rec.job = self._pool.submit(rec.segmenter.step, frame.image, mask)
        rec.job.add_done_callback(lambda _f: self._wake.set())

    def _drain(self) -> None:
        with self._lock:
            jobs = [r.job for r in self._streams.values() if r.job is not None]
        wait_all(jobs)

    def _collect(self, rec: _Stream) -> SegmentedFrame | None:
        """The stream's finished step as its next frame (None: a silent re-anchor, or the step failed and the
        stream ended)."""
        job, item, silent = cast("Future[StepResult]", rec.job), cast(Decoded, rec.job_item), rec.job_silent
        rec.ready_ns = time.perf_counter_ns()  # the model is free for this stream again
        rec.job = rec.job_item = None
        try:
            res = job.result()
        except Exception as err:  # a bad mask, a frame of another size: this stream only
            self._end(rec, err, "failed")
            return None
        if silent:
            return None
        frame = item.frame
        n = rec.next_n
        rec.next_n += 1
        rec.emitted += 1
        stages = {"wait" if rec.is_live else "decode": item.decode_ms, **res.timings_ms}
        return SegmentedFrame(frame_index=n, frame=frame, mask=res.mask, step=res, palette=rec.palette,
                              captured_s=item.captured_s, dropped=item.dropped, stages_ms=stages)

    def snapshot(self, stream_id: str) -> bytes:
        """The stream's `Segmenter.snapshot` (for ``add(state=...)``). Call it on the iterating thread, right after
        a result of that stream: the stream's next step has not started then."""
        with self._lock:
            rec = self._streams.get(stream_id)
        if rec is None:
            raise KeyError(f"no running stream {stream_id!r}")
        if rec.job is not None or threading.get_ident() != self._model_thread:
            raise RuntimeError("snapshot() runs on the iterating thread, between a stream's result and its next step")
        return rec.segmenter.snapshot()

    @staticmethod
    def _resolve(rec: _Stream, frame: Frame, given: FirstMask) -> np.ndarray:
        mask = np.asarray(given(frame) if callable(given) else given)
        check_mask_size(mask, frame.image.shape[:2], "first mask", str(rec.source.name))
        if mask.dtype != np.uint8:
            if mask.dtype.kind not in "biu" or (mask.size and (mask.min() < 0 or mask.max() > 255)):
                raise InputError(f"first mask must hold object ids 0..255, got dtype {mask.dtype}")
            mask = mask.astype(np.uint8)
        return mask

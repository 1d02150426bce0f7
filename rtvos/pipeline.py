"""Streaming pipeline: reader thread → bounded queue → ``Segmenter.step`` on the calling thread → bounded queue →
writer thread running the sinks.

The model stays on the caller's thread (CUDA contexts, Ctrl-C); decoding and encoding overlap with it. Both
queues are bounded, and every statistic lives in a fixed-size structure (a reservoir sample for percentiles,
running sums for stage means), so memory does not grow with the number of frames, whatever the stream length.

Endings: end of input, Ctrl-C (``KeyboardInterrupt`` in any stage), ``max_frames`` or a sink raising
:class:`StopPipeline` flush every sink and return a :class:`PipelineSummary`. Any other exception, in any stage,
stops the other stages, flushes what was already segmented, and is re-raised on the calling thread; frames
produced before it stay written (a truncated MP4: the frames before the damage, then the source's InputError).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .common import stage_order
from .io.base import Frame, FrameSource, InputError
from .io.masks import DAVIS_PALETTE, check_mask_size
from .io.sinks import SegmentedFrame, Sink, StopPipeline, StreamInfo, close_sinks
from .segmenter import Segmenter
from .stats import Reservoir, Timer

__all__ = [
    "FirstMask",
    "Pipeline",
    "PipelineConfig",
    "PipelineSummary",
    "Reservoir",
    "RunStats",
    "StopPipeline",
    "run_pipeline",
]

log = logging.getLogger("rtvos")

#: The first frame's mask: an array of object ids, or a function of the first frame (a box prompt, a browser
#: selection) called on the calling thread with the frame in hand.
FirstMask = np.ndarray | Callable[[Frame], np.ndarray]
Progress = Literal["auto", "bar", "status", "off"]


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline runs; the defaults suit files and live sources alike.

    ``drop_stale`` (None: on for live sources) makes the reader replace a frame the model has not taken yet
    instead of waiting, so a slow model sees the newest frame, not a backlog; the replaced frames count as
    dropped. Turn it off for a live source opened with policy "block". ``progress`` "auto" is a tqdm bar for
    files (hidden when stderr is not a terminal) and a one-line status every ``status_every_s`` for live sources.
    """

    max_frames: int | None = None
    read_queue: int = 4
    write_queue: int = 8
    drop_stale: bool | None = None
    progress: Progress = "auto"
    status_every_s: float = 5.0
    stats_capacity: int = 2048
    poll_s: float = 0.1
    threaded: bool = True  # False: decode, step and every sink on the calling thread, one frame at a time

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {self.max_frames}")
        for name in ("read_queue", "write_queue", "stats_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.progress not in ("auto", "bar", "status", "off"):
            raise ValueError(f"progress must be auto, bar, status or off, got {self.progress!r}")
        if self.status_every_s <= 0 or self.poll_s <= 0:
            raise ValueError("status_every_s and poll_s must be > 0")


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


@dataclass(frozen=True)
class PipelineSummary:
    """The outcome of a run. ``wall_s`` runs from the first frame entering the model to the last frame out,
    so neither model loading nor the time a user takes to draw the first box counts against ``fps``."""

    name: str
    frames: int  # frames every sink handled
    segmented: int  # frames the model processed (>= frames when a sink failed)
    dropped: int  # frames lost before the model during the run: by the source (live) + by drop_stale
    reconnects: int
    wall_s: float
    fps: float
    latency_p50_ms: float | None  # capture (or decode) → every sink done
    latency_p95_ms: float | None
    step_p50_ms: float | None
    step_p95_ms: float | None
    stages_ms: dict[str, float] = field(default_factory=dict)  # mean ms per frame: decode, model stages, sinks
    interrupted: bool = False  # Ctrl-C or a sink's StopPipeline ended the run early
    stop_reason: str | None = None

    def describe(self) -> str:
        """Two lines for the terminal."""

        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1f} ms"

        head = (f"{'stopped' if self.interrupted else 'done'}: {self.frames} frames of {self.name} in "
                f"{self.wall_s:.1f} s ({self.fps:.1f} fps end to end); latency p50 {ms(self.latency_p50_ms)}, "
                f"p95 {ms(self.latency_p95_ms)}; model step p50 {ms(self.step_p50_ms)}; dropped {self.dropped}; "
                f"reconnects {self.reconnects}")
        if self.stop_reason:
            head += f" ({self.stop_reason})"
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stages_ms.items())
        return head + (f"\nmean ms per frame: {stages}" if stages else "")


@dataclass
class _Decoded:
    frame: Frame
    captured_s: float
    decode_ms: float
    dropped: int  # source's cumulative count when this frame was read


@dataclass
class _End:
    error: BaseException | None = None
    interrupted: bool = False


class _WriterStopped(Exception):
    """The writer thread failed or a sink asked to stop; the main loop unwinds and looks at why."""


# Which Pipeline is stepping each Segmenter now. A Segmenter holds one stream's memory (its anchor and previous
# frame), so two runs stepping it at once would mix two streams into wrong masks without any error.
# Keyed by id(): the segmenter itself is held while its run lasts (so the id is not reused), and nothing is
# asked of the Segmenter class (hashable, weak-referenceable).
_RUNNING: dict[int, tuple[Any, Any]] = {}
_RUNNING_LOCK = threading.Lock()


def _claim(segmenter: Segmenter, run: Pipeline) -> None:
    with _RUNNING_LOCK:
        held = _RUNNING.get(id(segmenter))
        if held is not None and held[1] is not run:
            raise RuntimeError(
                "this Segmenter is already stepping another stream (an rtvos.track/Pipeline run in progress "
                f"on {held[1].source.name!r}); a Segmenter keeps one stream's memory, so use one Segmenter per "
                "concurrent stream, or finish (close) the other run first")
        _RUNNING[id(segmenter)] = (segmenter, run)


def _release(segmenter: Segmenter, run: Pipeline) -> None:
    with _RUNNING_LOCK:
        held = _RUNNING.get(id(segmenter))
        if held is not None and held[1] is run:
            del _RUNNING[id(segmenter)]


class Pipeline:
    """One run of ``source`` through ``segmenter`` into ``sinks``; call :meth:`run` once.

    The pipeline owns the source from :meth:`run` on and closes it at the end. ``palette`` colours overlays and
    PNGs (the input mask's palette, so ids and colours round-trip).
    """

    def __init__(
        self,
        source: FrameSource,
        segmenter: Segmenter,
        sinks: Sequence[Sink],
        first_mask: FirstMask,
        *,
        palette: np.ndarray | None = None,
        config: PipelineConfig | None = None,
    ) -> None:
        self.source = source
        self.segmenter = segmenter
        self.sinks = list(sinks)
        self.first_mask = first_mask
        self.palette = DAVIS_PALETTE.copy() if palette is None else np.asarray(palette, dtype=np.uint8)
        self.config = config or PipelineConfig()
        self.is_live = bool(source.is_live)
        self.drop_stale = self.is_live if self.config.drop_stale is None else self.config.drop_stale
        self.stats = RunStats(self.config.stats_capacity)
        read_size = 1 if self.drop_stale else self.config.read_queue
        self.inq: queue.Queue[_Decoded | _End] = queue.Queue(maxsize=read_size)
        self.outq: queue.Queue[SegmentedFrame | None] = queue.Queue(maxsize=self.config.write_queue)
        self.peak_inq = 0
        self.peak_outq = 0
        self.segmented = 0
        self.pipeline_dropped = 0
        self._stop_reader = threading.Event()
        self._stop_requested = threading.Event()
        self._writer_ready = threading.Event()
        self._writer_error: BaseException | None = None
        self._stop_reason: str | None = None
        self._t_first: float | None = None
        self._t_end: float | None = None
        self._interrupted = False
        self._ran = False
        self._base = {"dropped": 0, "reconnects": 0}
        self._inline_it: Iterator[Frame] | None = None
        self._inline_clock = Timer()  # decode runs on the host: no device sync
        self._opened: list[Sink] = []  # sinks opened so far (closed at the end, also after an error)
        self._active: list[Sink] = []  # written in order ...
        self._last: list[Sink] = []  # ... then these (runs_last: they see every other sink's time)
        self._reanchor: FirstMask | None = None
        self._reanchor_lock = threading.Lock()
        self._hurry = threading.Event()  # a second Ctrl-C/SIGTERM during the flush: skip the frames still queued
        self.skipped = 0  # segmented frames the sinks never got because of that

    # -- public ----------------------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Ask the run to end normally (thread-safe): what was segmented is flushed, run() returns a summary
        marked interrupted (also when the stop comes before the run started)."""
        if self._t_end is None:
            self._interrupted = True
        self._stop_reason = self._stop_reason or reason
        self._stop_requested.set()

    def summary(self) -> PipelineSummary:
        """The figures so far; valid during and after a run, also after a failure."""
        st = self.stats
        end = self._t_end if self._t_end is not None else time.perf_counter()
        wall = 0.0 if self._t_first is None else max(end - self._t_first, 1e-9)
        with st._lock:
            lat50, lat95 = st.latency_ms.percentile(50), st.latency_ms.percentile(95)
            step50, step95 = st.step_ms.percentile(50), st.step_ms.percentile(95)
            frames = st.frames
        src = self._source_stats()
        return PipelineSummary(
            name=str(self.source.name),
            frames=frames,
            segmented=self.segmented,
            dropped=src["dropped"] + self.pipeline_dropped,
            reconnects=src["reconnects"],
            wall_s=wall,
            fps=frames / wall if wall > 0 else 0.0,
            latency_p50_ms=lat50,
            latency_p95_ms=lat95,
            step_p50_ms=step50,
            step_p95_ms=step95,
            stages_ms=st.stage_means(),
            interrupted=self._interrupted,
            stop_reason=self._stop_reason,
        )

    def run(self) -> PipelineSummary:
        """Run to the end (or a stop) and return the summary."""
        for _ in self.frames():
            pass
        return self.summary()

    def frames(self) -> Iterator[SegmentedFrame]:
        """Run, yielding each segmented frame on the calling thread as soon as it is handed to the sinks.

        Closing the generator early (``break`` in a for loop) ends the run like :meth:`stop`: the source is
        closed and every sink flushed before ``close()`` returns. :meth:`summary` stays valid afterwards.
        """
        if self._ran:
            raise RuntimeError("a Pipeline runs once; build a new one for another run")
        self._ran = True
        _claim(self.segmenter, self)
        try:
            yield from self._frames()
        finally:
            _release(self.segmenter, self)

    def _frames(self) -> Iterator[SegmentedFrame]:
        # A live source decodes from the moment it is opened; frames it dropped while the model was loading
        # are not this run's drops.
        self._base = self._source_stats()
        info = StreamInfo(
            name=str(self.source.name),
            fps=float(self.source.fps or 25.0),
            size=tuple(self.source.size),  # type: ignore[arg-type]
            is_live=self.is_live,
            palette=self.palette,
        )
        threaded = self.config.threaded
        writer = threading.Thread(target=self._write_loop, args=(info,), name="rtvos-writer", daemon=True)
        reader = threading.Thread(target=self._read_loop, name="rtvos-reader", daemon=True)
        failure: BaseException | None = None
        progress = _Progress(self.config, self.source, self.is_live, self)
        try:
            if threaded:
                writer.start()
                # Sinks open first: a bad output path fails before anything is decoded or a user draws a box.
                while not self._writer_ready.wait(self.config.poll_s):
                    pass
                self._check_writer()
            else:
                self._open_sinks(info)
            if info.size[0] > 0 and info.size[1] > 0:  # build/export the backend for this input shape now,
                self.segmenter.prepare(info.size)  # not inside the first timed step
            if threaded:
                reader.start()
            yield from self._main_loop(progress)
        except GeneratorExit:  # the caller stopped iterating: a normal, early end
            self._interrupted = True
            self._stop_reason = self._stop_reason or "closed by the caller"
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM turned into one by the CLI (a subclass named so)
            self._interrupted = True
            self._stop_reason = self._stop_reason or ("SIGTERM" if type(e).__name__ == "_Terminated" else "Ctrl-C")
        except _WriterStopped:
            pass  # the writer's error (if any) is raised below, after the flush
        except BaseException as err:
            failure = err
        finally:
            with self._signals_deferred():  # a second Ctrl-C must not abandon the flush half-way
                progress.close()
                if threaded:
                    self._shutdown_reader(reader)
                    self._finish_writer(writer)
                else:
                    self._close_inline()
            self._t_end = time.perf_counter() if self._t_end is None else self._t_end
            if self._hurry.is_set():
                note = f"a second signal skipped {self.skipped} queued frame(s)" if self.skipped else "signalled again"
                self._stop_reason = f"{self._stop_reason or 'stopped'}; {note} during the flush"
        if failure is None and self._writer_error is not None:
            failure = self._writer_error
        if failure is not None:
            raise failure

    @contextlib.contextmanager
    def _signals_deferred(self) -> Iterator[None]:
        """While the sinks flush, SIGINT and SIGTERM only shorten the flush (the frames still queued are
        skipped) instead of raising in the middle of it: an exception there would leave the writer thread
        behind and the process would exit with the MP4 unfinished (a 48-byte file). Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}

        def hurry(signum: int, frame: object) -> None:
            self._hurry.set()

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old = signal.getsignal(sig)
                if old is None:  # installed outside Python: cannot be put back, leave it alone
                    continue
                signal.signal(sig, hurry)
                previous[sig] = old
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- main thread -----------------------------------------------------------------------------------------
    def _main_loop(self, progress: _Progress) -> Iterator[SegmentedFrame]:
        seg = self.segmenter
        limit = self.config.max_frames
        n = 0
        while limit is None or n < limit:
            item = self._next_input(progress)
            if isinstance(item, _End):
                if item.interrupted:
                    self._interrupted = True
                    self._stop_reason = self._stop_reason or "Ctrl-C"
                if item.error is not None:
                    raise item.error
                return
            frame = item.frame
            mask = self._resolve_first_mask(frame) if n == 0 else self._take_reanchor(frame)
            if n == 0:
                self._t_first = time.perf_counter()
            res = seg.step(frame.image, mask)
            self.segmented += 1
            # Files: the time to decode the frame; live sources: the wait for the next frame to arrive.
            stages = {"wait" if self.is_live else "decode": item.decode_ms, **res.timings_ms}
            out = SegmentedFrame(
                n=n,
                frame=frame,
                mask=res.mask,
                step=res,
                palette=self.palette,
                captured_s=item.captured_s,
                dropped=item.dropped + self.pipeline_dropped,
                stages_ms=stages,
            )
            if self.config.threaded:
                self._put_output(out)
            else:
                self._write_one(out)
            n += 1
            progress.update(n)
            yield out
        self._stop_reason = self._stop_reason or f"max_frames={limit}"

    def reanchor(self, mask: FirstMask) -> None:
        """Replace the propagated mask with ``mask`` (an id array or a function of the frame, e.g. boxes drawn
        on the live view) at the next frame; thread-safe. A mask that fails its checks ends the run like a bad
        first mask would."""
        with self._reanchor_lock:
            self._reanchor = mask

    def _take_reanchor(self, frame: Frame) -> np.ndarray | None:
        with self._reanchor_lock:
            pending, self._reanchor = self._reanchor, None
        if pending is None:
            return None
        return self._resolve_first_mask(frame, pending)

    def _resolve_first_mask(self, frame: Frame, given: FirstMask | None = None) -> np.ndarray:
        given = self.first_mask if given is None else given
        mask = given(frame) if callable(given) else given
        mask = np.asarray(mask)
        check_mask_size(mask, frame.image.shape[:2], "first mask", str(self.source.name))
        if mask.dtype != np.uint8:
            if mask.dtype.kind not in "biu" or (mask.size and (mask.min() < 0 or mask.max() > 255)):
                raise InputError(f"first mask must hold object ids 0..255, got dtype {mask.dtype}")
            mask = mask.astype(np.uint8)
        return mask

    def _check_writer(self, stop_requests: bool = True) -> None:
        if self._writer_error is not None:
            raise _WriterStopped()
        if stop_requests and self._stop_requested.is_set():
            self._interrupted = True
            raise _WriterStopped()

    def _next_input(self, progress: _Progress) -> _Decoded | _End:
        if not self.config.threaded:
            return self._read_inline()
        while True:
            self._check_writer()
            try:
                item = self.inq.get(timeout=self.config.poll_s)
            except queue.Empty:
                progress.update(None)
                continue
            return item

    def _decode_next(self, it: Iterator[Frame], clock: Timer) -> _Decoded | None:
        """Next frame of ``it`` with its decode time, capture stamp and the source's drop count; None at the end."""
        clock.start()
        try:
            frame = next(it)
        except StopIteration:
            return None
        decode_ms = clock.lap("decode")
        src = self._source_stats()
        self.stats.reconnects = src["reconnects"]
        captured = frame.captured_s
        return _Decoded(frame, time.time() if captured is None else float(captured), decode_ms, src["dropped"])

    def _read_inline(self) -> _Decoded | _End:
        """Sequential mode: decode on the calling thread (no overlap; what a latency measurement wants)."""
        self._check_writer()
        if self._inline_it is None:
            self._inline_it = iter(self.source)
        item = self._decode_next(self._inline_it, self._inline_clock)
        return _End() if item is None else item

    def _put_output(self, item: SegmentedFrame) -> None:
        while True:
            self._check_writer(stop_requests=False)  # a frame already segmented is still written on a stop
            try:
                self.outq.put(item, timeout=self.config.poll_s)
            except queue.Full:
                continue
            self.peak_outq = max(self.peak_outq, self.outq.qsize())
            return

    def _source_stats(self) -> dict[str, int]:
        try:
            s = self.source.stats()
        except Exception:  # a closed source may refuse; the last values are in RunStats
            return {"dropped": self.stats.dropped - self.pipeline_dropped, "reconnects": self.stats.reconnects}
        return {k: int(s.get(k, 0)) - self._base[k] for k in ("dropped", "reconnects")}

    # -- reader thread ---------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        end = _End()
        it: Iterator[Frame] | None = None
        try:
            it = iter(self.source)
            limit = None if self.drop_stale else self.config.max_frames
            read = 0
            clock = Timer()  # decode runs on the host: no device sync
            while not self._stop_reader.is_set() and (limit is None or read < limit):
                item = self._decode_next(it, clock)
                if item is None:
                    break
                if self.drop_stale:
                    self._offer_latest(item)
                else:
                    self._offer(item)
                read += 1
        except KeyboardInterrupt:
            end = _End(interrupted=True)
        except BaseException as err:  # handed to the main thread, which re-raises it after the flush
            end = _End(error=err)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as err:
                    log.debug("closing the source iterator: %s", err)
            self._offer(end)

    def _offer(self, item: _Decoded | _End) -> None:
        while not self._stop_reader.is_set():
            try:
                self.inq.put(item, timeout=self.config.poll_s)
            except queue.Full:
                continue
            self.peak_inq = max(self.peak_inq, self.inq.qsize())
            return

    def _offer_latest(self, item: _Decoded) -> None:
        """Put ``item``, replacing the queued frame if the model has not taken it yet (counted as dropped)."""
        while not self._stop_reader.is_set():
            try:
                self.inq.put_nowait(item)
            except queue.Full:
                try:
                    self.inq.get_nowait()
                    self.pipeline_dropped += 1
                except queue.Empty:
                    pass
                continue
            self.peak_inq = max(self.peak_inq, self.inq.qsize())
            return

    def _shutdown_reader(self, reader: threading.Thread) -> None:
        self._stop_reader.set()
        if self.is_live:
            # A live source decodes on its own thread and its iterator only waits for frames; close() is what
            # wakes that wait, so close first, then join.
            self._close_source()
            if reader.ident is not None:
                reader.join(timeout=15.0)
                if reader.is_alive():
                    log.warning("rtvos: the pipeline's reader thread did not stop; leaving it behind")
        elif reader.ident is not None:
            reader.join()  # files: next() returns within one frame's decode, and closing under it is unsafe
        self._close_source()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as err:
            log.warning("rtvos: closing %s: %s", self.source.name, err)

    # -- writer thread ---------------------------------------------------------------------------------------
    def _open_sinks(self, info: StreamInfo) -> None:
        for sink in self.sinks:
            sink.open(info)
            self._opened.append(sink)
        self._active = [s for s in self._opened if not s.runs_last]
        self._last = [s for s in self._opened if s.runs_last]

    def _write_one(self, item: SegmentedFrame) -> None:
        """Every sink in turn (viewers and encoders, then the ``runs_last`` ones such as the log)."""
        item.live = self.stats.live()
        for sink in list(self._active):
            try:
                sink.write(item)
            except StopPipeline as stop:
                # Keep flushing the frames already segmented into the other sinks, then end normally.
                self._active.remove(sink)
                self.stop(str(stop) or f"{sink.name} asked to stop")
        item.output_s = time.time()
        for sink in self._last:
            sink.write(item)
        self.stats.record(item)

    def _close_sinks(self) -> None:
        err = close_sinks(self._opened)
        if self._writer_error is None:
            self._writer_error = err

    def _write_loop(self, info: StreamInfo) -> None:
        try:
            self._open_sinks(info)
            self._writer_ready.set()
            while (item := self.outq.get()) is not None:
                if self._hurry.is_set():
                    self.skipped += 1
                    continue
                self._write_one(item)
        except BaseException as err:
            self._writer_error = err
        finally:
            self._writer_ready.set()
            self._close_sinks()

    def _close_inline(self) -> None:
        """Sequential mode's teardown: the source iterator, the source, then the sinks (same thread)."""
        close = getattr(self._inline_it, "close", None)
        if close is not None:
            try:
                close()
            except Exception as err:
                log.debug("closing the source iterator: %s", err)
        self._close_source()
        self._close_sinks()

    def _finish_writer(self, writer: threading.Thread) -> None:
        if writer.ident is None:
            return
        while writer.is_alive():
            try:
                self.outq.put(None, timeout=self.config.poll_s)
                break
            except queue.Full:
                continue
        writer.join()


class _Progress:
    """tqdm bar for files (hidden off a terminal), a periodic status line for live sources."""

    def __init__(self, config: PipelineConfig, source: FrameSource, is_live: bool, pipe: Pipeline) -> None:
        mode = config.progress
        if mode == "auto":
            mode = "status" if is_live else "bar"
        self.mode = mode
        self.pipe = pipe
        self.every = config.status_every_s
        self._next_status = time.perf_counter() + self.every
        self.bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            total = source.num_frames
            if config.max_frames is not None:
                total = config.max_frames if total is None else min(total, config.max_frames)
            # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs, pipes).
            self.bar = tqdm(total=total, unit="frame", disable=None, file=sys.stderr)

    def update(self, n: int | None) -> None:
        if self.bar is not None and n is not None:
            self.bar.update(n - self.bar.n)
        elif self.mode == "status" and time.perf_counter() >= self._next_status:
            self._next_status = time.perf_counter() + self.every
            live = self.pipe.stats.live(max_age_s=0.0)
            s = self.pipe.summary()

            def num(v: float | None, unit: str) -> str:
                return "n/a" if v is None else f"{v:.0f}{unit}" if unit == " ms" else f"{v:.1f}{unit}"

            print(f"rtvos: {s.frames} frames, {num(live['fps'], ' fps')}, latency "
                  f"{num(live['latency_ms'], ' ms')} (p50 {num(s.latency_p50_ms, ' ms')}, "
                  f"p95 {num(s.latency_p95_ms, ' ms')}), dropped {s.dropped}, reconnects {s.reconnects}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_pipeline(
    source: FrameSource,
    segmenter: Segmenter,
    sinks: Sequence[Sink],
    first_mask: FirstMask,
    *,
    palette: np.ndarray | None = None,
    config: PipelineConfig | None = None,
) -> PipelineSummary:
    """Run ``source`` through ``segmenter`` into ``sinks`` (see :class:`Pipeline`)."""
    return Pipeline(source, segmenter, sinks, first_mask, palette=palette, config=config).run()

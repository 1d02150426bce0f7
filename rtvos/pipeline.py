"""Streaming pipeline: `Reader` → ``Segmenter.step`` on the calling thread → `SinkWriter`, and nothing else.

The model stays on the caller's thread (CUDA contexts, Ctrl-C); a file decodes ahead on the reader's thread and
the sinks write on the writer's, both behind bounded queues, and every statistic is fixed-size (`RunStats`), so
memory does not grow with the stream. This module only orchestrates: the first mask and re-anchoring, stops,
the flush, the summary.

Endings: end of input, Ctrl-C or `rtvos.common.Stopped` (a ``KeyboardInterrupt`` in any stage), ``max_frames``
or a sink raising :class:`StopPipeline` flush every sink and return a :class:`PipelineSummary`. Any other
exception, in any stage, stops the run, flushes what was already segmented, and is re-raised on the calling
thread; frames produced before it stay written.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .common import stop_reason
from .io.base import Frame, FrameSource, InputError
from .io.masks import DAVIS_PALETTE, check_mask_size
from .io.sinks import SegmentedFrame, Sink, StopPipeline, StreamInfo
from .reader import End, Reader
from .segmenter import Segmenter
from .sinkwriter import RunStats, SinkWriter
from .stats import Reservoir

__all__ = ["FirstMask", "LATENCY", "Pipeline", "PipelineConfig", "PipelineSummary", "Reservoir", "RunStats",
           "StopPipeline"]

#: The first frame's mask: an array of object ids, or a function of the first frame (a box prompt, a browser
#: selection) called on the calling thread with the frame in hand.
FirstMask = np.ndarray | Callable[[Frame], np.ndarray]
Progress = Literal["auto", "bar", "status", "off"]

#: What a frame's latency counts (SegmentedFrame.latency_ms), as the summary prints it.
LATENCY = ("from when the model could take the frame (its capture or read; the first mask's arrival, e.g. a box "
           "drawn in the browser, for frames read before it) to every output written")
LATENCY_FILE = ("; on a file read flat out it includes the wait behind the frames read ahead of it, so it exceeds "
                "the model step")


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline runs; the defaults suit files and live sources alike.

    ``read_queue`` bounds a file's read-ahead (a live source is read as its frames arrive: its own policy keeps
    the newest frame or every one). ``progress`` "auto" is a tqdm bar for files (hidden when stderr is not a
    terminal) and a one-line status every ``status_every_s`` for live sources.
    """

    max_frames: int | None = None
    read_queue: int = 4
    write_queue: int = 8
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


@dataclass(frozen=True)
class PipelineSummary:
    """The outcome of a run. ``wall_s`` runs from the first frame entering the model to the last frame out,
    so neither model loading nor the time a user takes to draw the first box counts against ``fps``."""

    name: str
    frames: int  # frames every sink handled
    segmented: int  # frames the model processed (>= frames when a sink failed)
    dropped: int  # frames a live source replaced by newer ones during the run (its "drop" policy)
    reconnects: int
    wall_s: float
    fps: float
    latency_p50_ms: float | None  # see LATENCY: from when the model could take the frame to every sink done
    latency_p95_ms: float | None
    step_p50_ms: float | None
    step_p95_ms: float | None
    stages_ms: dict[str, float] = field(default_factory=dict)  # mean ms per frame: decode, model stages, sinks
    interrupted: bool = False  # Ctrl-C or a sink's StopPipeline ended the run early
    stop_reason: str | None = None
    is_live: bool = False

    def describe(self) -> str:
        """Two or three lines for the terminal, saying what the latency counts."""

        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1f} ms"

        head = (f"{'stopped' if self.interrupted else 'done'}: {self.frames} frames of {self.name} in "
                f"{self.wall_s:.1f} s ({self.fps:.1f} fps end to end); latency p50 {ms(self.latency_p50_ms)}, "
                f"p95 {ms(self.latency_p95_ms)}; model step p50 {ms(self.step_p50_ms)}; dropped {self.dropped}; "
                f"reconnects {self.reconnects}")
        if self.stop_reason:
            head += f" ({self.stop_reason})"
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stages_ms.items())
        counts = LATENCY + ("" if self.is_live else LATENCY_FILE)
        return head + (f"\nmean ms per frame: {stages}" if stages else "") + f"\nlatency counts {counts}"


class _Stop(Exception):
    """The writer failed or a stop was asked for; the loop unwinds and the teardown looks at why."""


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
    """One run of ``source`` through ``segmenter`` into ``sinks``; call :meth:`run` (or iterate
    :meth:`frames`) once. The pipeline owns the source from then on and closes it at the end. ``palette``
    colours overlays and PNGs (the input mask's palette, so ids and colours round-trip).
    """

    def __init__(self, source: FrameSource, segmenter: Segmenter, sinks: Sequence[Sink], first_mask: FirstMask, *,
                 palette: np.ndarray | None = None, config: PipelineConfig | None = None) -> None:
        self.source = source
        self.segmenter = segmenter
        self.first_mask = first_mask
        self.palette = DAVIS_PALETTE.copy() if palette is None else np.asarray(palette, dtype=np.uint8)
        self.config = cfg = config or PipelineConfig()
        self.is_live = bool(source.is_live)
        self.stats = RunStats(cfg.stats_capacity)
        self.reader = Reader(source, max_frames=cfg.max_frames, queue_size=cfg.read_queue, threaded=cfg.threaded,
                             poll_s=cfg.poll_s)
        self.writer = SinkWriter(sinks, self.stats, on_stop=self.stop, on_error=self.reader.wake,
                                 queue_size=cfg.write_queue, threaded=cfg.threaded, poll_s=cfg.poll_s)
        self.segmented = 0
        self._stop_requested = threading.Event()
        self._stop_reason: str | None = None
        self._interrupted = False
        self._t_first: float | None = None
        self._t_end: float | None = None
        self._ready_s: float | None = None  # wall time the first mask was in hand: latency starts no earlier
        self._ran = False
        self._reanchor: FirstMask | None = None
        self._reanchor_lock = threading.Lock()

    @property
    def skipped(self) -> int:
        """Segmented frames the sinks never got: a second Ctrl-C/SIGTERM during the flush skips the queue."""
        return self.writer.skipped

    def stop(self, reason: str = "stopped") -> None:
        """Ask the run to end normally (thread-safe): what was segmented is flushed, run() returns a summary
        marked interrupted (also when the stop comes before the run started)."""
        if self._t_end is None:
            self._interrupted = True
        self._stop_reason = self._stop_reason or reason
        self._stop_requested.set()
        self.reader.wake()

    def reanchor(self, mask: FirstMask) -> None:
        """Replace the propagated mask with ``mask`` (an id array or a function of the frame, e.g. boxes drawn
        on the live view) at the next frame; thread-safe. A mask that fails its checks ends the run like a bad
        first mask would."""
        with self._reanchor_lock:
            self._reanchor = mask

    def summary(self) -> PipelineSummary:
        """The figures so far; valid during and after a run, also after a failure."""
        end = self._t_end if self._t_end is not None else time.perf_counter()
        wall = 0.0 if self._t_first is None else max(end - self._t_first, 1e-9)
        fig = self.stats.figures()
        src = self.reader.stats()
        return PipelineSummary(name=str(self.source.name), segmented=self.segmented, dropped=src["dropped"],
                               reconnects=src["reconnects"], wall_s=wall,
                               fps=fig["frames"] / wall if wall > 0 else 0.0, stages_ms=self.stats.stage_means(),
                               interrupted=self._interrupted, stop_reason=self._stop_reason, is_live=self.is_live,
                               **fig)

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
            yield from self._run()
        finally:
            _release(self.segmenter, self)

    # -- internals ---------------------------------------------------------------------------------------------
    def _run(self) -> Iterator[SegmentedFrame]:
        info = StreamInfo(name=str(self.source.name), fps=float(self.source.fps or 25.0),
                          size=tuple(self.source.size), is_live=self.is_live,  # type: ignore[arg-type]
                          palette=self.palette)
        failure: BaseException | None = None
        progress = _Progress(self.config, self.source, self.is_live, self)
        try:
            self.writer.open(info)  # sinks first: a bad output path fails before a frame is read or a box drawn
            if info.size[0] > 0 and info.size[1] > 0:  # build/export the backend for this input shape now,
                self.segmenter.prepare(info.size)  # not inside the first timed step
            self.reader.start()
            yield from self._loop(progress)
        except GeneratorExit:  # the caller stopped iterating: a normal, early end
            self._interrupted = True
            self._stop_reason = self._stop_reason or "closed by the caller"
        except KeyboardInterrupt as e:  # Ctrl-C, or rtvos.common.Stopped (SIGTERM, ...) carrying its reason
            self._interrupted = True
            self._stop_reason = self._stop_reason or stop_reason(e)
        except _Stop:
            pass  # the writer's error (if any) is raised below, after the flush
        except BaseException as err:
            failure = err
        finally:
            with self._signals_deferred():  # a second Ctrl-C must not abandon the flush half-way
                progress.close()
                self.reader.close()
                self.writer.finish()
            self._t_end = time.perf_counter() if self._t_end is None else self._t_end
            if self.writer.hurry.is_set():
                note = f"a second signal skipped {self.skipped} queued frame(s)" if self.skipped else "signalled again"
                self._stop_reason = f"{self._stop_reason or 'stopped'}; {note} during the flush"
        failure = failure or self.writer.error
        if failure is not None:
            raise failure

    def _loop(self, progress: _Progress) -> Iterator[SegmentedFrame]:
        limit = self.config.max_frames
        n = 0

        def idle() -> None:
            self._check()
            progress.update(None)

        while limit is None or n < limit:
            self._check()
            item = self.reader.next(idle)
            if isinstance(item, End):
                if item.interrupted:
                    self._interrupted = True
                    self._stop_reason = self._stop_reason or "Ctrl-C"
                if item.error is not None:
                    raise item.error
                self._check()  # a live source woken by a stop ends like this: say why
                return
            frame = item.frame
            if n == 0:
                mask: np.ndarray | None = self._checked_mask(frame, self.first_mask)
                self._ready_s = time.time()
                self._t_first = time.perf_counter()
            else:
                mask = self._take_reanchor(frame)
            res = self.segmenter.step(frame.image, mask)
            self.segmented += 1
            # Files: the time to decode the frame; live sources: the wait for the next frame to arrive.
            stages = {"wait" if self.is_live else "decode": item.decode_ms, **res.timings_ms}
            out = SegmentedFrame(frame_index=n, frame=frame, mask=res.mask, step=res, palette=self.palette,
                                 captured_s=item.captured_s, dropped=item.dropped, stages_ms=stages,
                                 ready_s=self._ready_s)
            self.writer.put(out)
            n += 1
            progress.update(n)
            yield out
        self._stop_reason = self._stop_reason or f"max_frames={limit}"

    def _check(self) -> None:
        if self.writer.error is not None:
            raise _Stop()
        if self._stop_requested.is_set():
            self._interrupted = True
            raise _Stop()

    def _take_reanchor(self, frame: Frame) -> np.ndarray | None:
        with self._reanchor_lock:
            pending, self._reanchor = self._reanchor, None
        return None if pending is None else self._checked_mask(frame, pending)

    def _checked_mask(self, frame: Frame, given: FirstMask) -> np.ndarray:
        mask = np.asarray(given(frame) if callable(given) else given)
        check_mask_size(mask, frame.image.shape[:2], "first mask", str(self.source.name))
        if mask.dtype != np.uint8:
            if mask.dtype.kind not in "biu" or (mask.size and (mask.min() < 0 or mask.max() > 255)):
                raise InputError(f"first mask must hold object ids 0..255, got dtype {mask.dtype}")
            mask = mask.astype(np.uint8)
        return mask

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
            self.writer.hurry.set()

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
